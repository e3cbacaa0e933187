#!/usr/bin/env bash
# Target 2 side by side: raw ONNX Runtime at batch 1 (`raw_ort`, one session on all cores, the
# logits on the pruned graph: what the report judges against) and the release server at
# concurrency 1 (one keep-alive connection, one request at a time), in alternating slices (raw
# then server, server then raw, ...), so that the machine's drift falls on both sides. Prints
# each round's p50s; the judged figure is the median of the per-round differences.
#
#   benches/pair_latency.sh MODEL IMAGE [SECONDS_PER_SLICE=15] [ROUNDS=8]
#   benches/pair_latency.sh models/build/rgc_intermediate.onnx bench-results/images/model-224.jpg
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:?usage: benches/pair_latency.sh MODEL IMAGE [SECONDS] [ROUNDS]}
IMG=${2:?usage: benches/pair_latency.sh MODEL IMAGE [SECONDS] [ROUNDS]}
SECS=${3:-15}
ROUNDS=${4:-8}
cargo build --release --quiet
cargo bench --no-run --quiet --bench raw_ort 2>/dev/null
TMP=$(mktemp -d)
ln -s "$(realpath "$MODEL")" "$TMP/"
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
target/release/convrnn-serve serve --model-dir "$TMP" --listen "127.0.0.1:$PORT" \
  --max-queue-delay-ms 0 --sessions-per-device 2 --max-batch-size 1 > "$TMP/server.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$TMP"' EXIT
until curl -sf "http://127.0.0.1:$PORT/health/ready" >/dev/null; do
  kill -0 $PID 2>/dev/null || { cat "$TMP/server.log" >&2; exit 1; }
  sleep 0.5
done
NAME=$(curl -s "http://127.0.0.1:$PORT/v1/models" \
  | python3 -c 'import json,sys; d=json.load(sys.stdin); print((d.get("models") or d.get("data"))[0]["name"])')
URL="http://127.0.0.1:$PORT/v1/models/$NAME/classify"
for _ in $(seq 1 5); do curl -s -o /dev/null -H 'content-type: image/jpeg' --data-binary "@$IMG" "$URL"; done

raw() {
  cargo bench --quiet --bench raw_ort -- --model "$MODEL" --batches 1 --seconds "$SECS" \
    --sessions 1 --pool shared --outputs logits --image "$IMG" --json "$TMP/raw.json" >/dev/null 2>&1
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["rows"][0]["p50_ms"])' "$TMP/raw.json"
}
server() {
  python3 - "$URL" "$IMG" "$SECS" <<'PY'
import http.client, statistics, sys, time, urllib.parse
url, img, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
body = open(img, "rb").read()
u = urllib.parse.urlparse(url)
conn = http.client.HTTPConnection(u.hostname, u.port)
times, end = [], time.time() + secs
while time.time() < end:
    t = time.perf_counter()
    conn.request("POST", u.path, body=body, headers={"content-type": "image/jpeg"})
    r = conn.getresponse()
    r.read()
    assert r.status == 200, r.status
    times.append((time.perf_counter() - t) * 1e3)
print(f"{statistics.median(times):.2f}")
PY
}
DIFFS=()
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then RAW=$(raw); SRV=$(server); else SRV=$(server); RAW=$(raw); fi
  D=$(python3 -c "print(f'{$SRV - $RAW:+.2f}')")
  DIFFS+=("$D")
  echo "round $r: raw batch-1 p50 $RAW ms, server c=1 p50 $SRV ms, difference $D ms"
done
python3 -c 'import statistics,sys; d=[float(x) for x in sys.argv[1:]]; print(f"median difference {statistics.median(d):+.2f} ms (rounds {min(d):+.2f} to {max(d):+.2f})")' "${DIFFS[@]}"
