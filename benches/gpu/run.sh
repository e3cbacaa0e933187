#!/usr/bin/env bash
# Every GPU measurement of issue 23 as ONE prepared command, sized for one device call (~8 min on an H200;
# docs/gpu.md has the lease step by step). Results: one JSON line per measurement in OUT/results.jsonl,
# a table in OUT/summary.txt, the servers' logs in OUT/servers.log, the machine in OUT/info.txt.
#
#   benches/gpu/run.sh --out "$OUT"                       # on the lease, after `. .gpu-stage/env.sh`
#   benches/gpu/run.sh --device cpu --quick --out /tmp/g  # the dry run here: same steps, tiny sizes
#
# Steps (each under its own timeout; once BUDGET_S has passed the remaining steps are skipped, so the
# call ends inside its limit with what it has):
#   1. the model: MODEL, or rgc_intermediate exported untrained into models/build/ (PyTorch on the machine)
#   2. compare: classify, activations and v2 infer on the device equal the CPU answers (TF32 on)
#   3. raw ORT (benches/suite/raw_ort.rs) at batch 1..64, 1 and 2 sessions, GPU memory after each batch size;
#      TF32 off at a few batch sizes
#   4. PyTorch eager, cudnn.benchmark, same weights, batch 1..64
#   5. HTTP saturated: 1 and 2 sessions x --max-queue-delay-ms 0, 2, 5 at the raw best batch, and one
#      request at a time
# Environment: PY (python3; numpy, Pillow, aiohttp, onnx), TORCH_PY (PY; PyTorch), MODEL, BUDGET_S (450).
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root" || exit 1

out="" device=cuda:0 quick=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    *) sed -n '2,20p' "$0" >&2; exit 2 ;;
  esac
done
[ -n "$out" ] || { echo "--out DIR is required" >&2; exit 2; }
mkdir -p "$out"
PY=${PY:-python3}
TORCH_PY=${TORCH_PY:-$PY}
BUDGET_S=${BUDGET_S:-450}
results=$out/results.jsonl
bench=(benches/gpu/gpu_bench.py --device "$device" --out "$results" --log "$out/servers.log")
t0=$(date +%s)
failed=()

log() { printf '[gpu-run %4ss] %s\n' "$(( $(date +%s) - t0 ))" "$*" >&2; }
step() {  # step NAME TIMEOUT_S CMD...: skipped past the budget; a failure is recorded, the run goes on
  local name=$1 limit=$2 rc=0; shift 2
  if [ $(( $(date +%s) - t0 )) -ge "$BUDGET_S" ]; then
    log "SKIP $name (budget of ${BUDGET_S}s spent)"; failed+=("$name:skipped"); return 0
  fi
  log "run  $name"
  PYTHONUNBUFFERED=1 timeout -k 10 "$limit" "$@" || rc=$?
  if [ "$rc" -ne 0 ]; then log "FAIL $name (exit $rc)"; failed+=("$name:$rc"); fi
}

{
  date -u; uname -a; nproc
  if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "no nvidia-smi: a CPU run"; fi
  "$PY" --version; "$TORCH_PY" -c 'import torch; print("torch", torch.__version__, torch.version.cuda, torch.cuda.is_available())' 2>&1
  echo "CONVRNN_ORT_LIBRARY=${CONVRNN_ORT_LIBRARY:-}"; echo "CONVRNN_SERVE_BIN=${CONVRNN_SERVE_BIN:-}"
} >"$out/info.txt" 2>&1

if [ "$quick" = 1 ]; then
  model=${MODEL:-models/rgc_fmnist.onnx}
  # Sized to prove the steps work, on a loaded 2-core machine (importing PyTorch alone can take 40 s there).
  batches=1,2,4; secs=0.5; sessions_http=1; delays=0; http_secs=2; conns=8; procs=2; single=1; tf32_off=1,4
  torch_batches=1,2; torch_limit=400
else
  model=${MODEL:-models/build/rgc_intermediate.onnx}
  batches=1,2,4,8,16,32,64; secs=2; sessions_http=1,2; delays=0,2,5; http_secs=8; conns=256; procs=6; single=5
  tf32_off=1,8,32; torch_batches=$batches; torch_limit=150
fi

# 1. The model, in a folder of its own (the server serves every *.onnx in its --model-dir).
if [ ! -f "$model" ]; then
  step "export rgc_intermediate" 240 bash -c "cd models && '$TORCH_PY' -m convrnn.export --arch rgc_intermediate \
    --untrained --no-compare --out build/rgc_intermediate.onnx"
fi
[ -f "$model" ] || { log "no model $model"; exit 1; }
mdir=$(mktemp -d "${TMPDIR:-/tmp}/gpu-run-model.XXXXXX")
trap 'rm -rf "$mdir"' EXIT
ln -s "$(cd "$(dirname "$model")" && pwd)/$(basename "$model")" "$mdir/"
model=$mdir/$(basename "$model")
log "model $model ($(stat -L -c %s "$model") bytes), device $device"

# 2-5.
step compare 240 "$PY" "${bench[@]}" compare --model "$model" --images "$([ $quick = 1 ] && echo 2 || echo 3)"
step "raw s1" 150 "$PY" "${bench[@]}" raw --model "$model" --sessions 1 --batches "$batches" --seconds "$secs"
step "raw s2" 150 "$PY" "${bench[@]}" raw --model "$model" --sessions 2 --batches "$batches" --seconds "$secs"
step "raw s1 tf32 off" 90 "$PY" "${bench[@]}" raw --model "$model" --sessions 1 --batches "$tf32_off" --seconds "$secs" --tf32 false
step torch "$torch_limit" "$TORCH_PY" "${bench[@]}" torch --model "$model" --batches "$torch_batches" --seconds "$secs"
best=$("$PY" -c 'import json,sys
rows=[json.loads(l) for l in open(sys.argv[1]) if "\"step\": \"raw\"" in l]
rows=[r for r in rows if r.get("sessions")==1 and r.get("tf32", True) and "best_batch" in r]
print(rows[-1]["best_batch"] if rows else 32)' "$results" 2>/dev/null || echo 32)
log "raw best batch (1 session): $best"
step http 300 "$PY" "${bench[@]}" http --model "$model" --sessions "$sessions_http" --delay-ms "$delays" \
  --max-batch "$best" --connections "$conns" --procs "$procs" --seconds "$http_secs" --single-seconds "$single"

# The table: the ratios the issue asks for, side by side from this one run.
"$PY" - "$results" >"$out/summary.txt" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
by = lambda s: [r for r in recs if r.get("step") == s]
for r in by("compare"):
    print(f"compare {r['device']} vs cpu (tf32={r['tf32']}): max rel diff {r['max_rel_diff']:.2e} ok={r['ok']}")
raw = {}
for r in by("raw"):
    if "rows" not in r:
        continue
    key = f"raw s{r['sessions']}{'' if r.get('tf32', True) else ' tf32-off'}"
    raw[key] = r
    print(f"{key:18s} " + "  ".join(f"b{x['batch']}:{x['images_per_s']:.0f}/s,{x['p50_ms']:.1f}ms,{x.get('memory_mib_after')}MiB" for x in r["rows"]))
for r in by("torch"):
    print("torch eager       " + "  ".join(f"b{x['batch']}:{x.get('images_per_s', 'oom')}/s" for x in r["rows"]))
best_raw = max((r["best_images_per_s"] for k, r in raw.items() if "tf32-off" not in k), default=None)
torch_best = max((r["best_images_per_s"] or 0 for r in by("torch")), default=None)
b1 = raw.get("raw s1", {}).get("rows", [{}])[0].get("p50_ms")
for r in by("http"):
    s = r["saturated"]
    line = (f"http s{r['sessions']} delay {r['max_queue_delay_ms']}ms batch {r['max_batch']}: {s['images_per_s']}/s "
            f"p50 {s['p50_ms']}ms p99 {s['p99_ms']}ms errors {s['errors']} util {r['gpu_util_mean']}% mem {r['memory_mib']}MiB")
    if best_raw:
        line += f"  vs raw best {s['images_per_s'] / best_raw:.2f}x"
    if torch_best:
        line += f"  vs torch {s['images_per_s'] / torch_best:.2f}x"
    if r.get("single") and b1:
        line += f"  single p50 {r['single']['p50_ms']}ms vs raw b1 {b1:.2f}ms"
    print(line)
PY
cat "$out/summary.txt" >&2
# What comes back from a lease is limited (16 MiB a file): keep the servers' log's end.
if [ -f "$out/servers.log" ] && [ "$(stat -c %s "$out/servers.log")" -gt 4000000 ]; then
  tail -c 4000000 "$out/servers.log" >"$out/servers.log.tmp" && mv "$out/servers.log.tmp" "$out/servers.log"
fi
log "done in $(( $(date +%s) - t0 ))s; failed: ${failed[*]:-none}"
[ ${#failed[@]} -eq 0 ]
