#!/usr/bin/env bash
# Host equivalent of docker/Dockerfile (cpu) or docker/Dockerfile.cuda (cuda): no Docker engine runs on our
# machines, so CI runs this instead. It performs the image's steps and then runs the result the way the
# container would:
#
#   1. cargo build --release --locked [--features cuda]             (the builder stage)
#   2. scripts/install-onnxruntime.sh cpu|gpu LAYOUT                (the ort stage, same script)
#   3. assemble LAYOUT = <tmp>/opt/convrnn-serve/{bin,lib,models}   (the runtime stage's COPY lines)
#   4. start bin/convrnn-serve serve with the image's environment only (env -i), from an empty directory,
#      as uid 10001 when run as root (the image's USER), CONVRNN_LISTEN on a free loopback port
#   5. check: /health/ready turns 200; `convrnn-serve healthcheck` (the image's HEALTHCHECK) passes; libonnxruntime was
#      loaded from LAYOUT/lib (found via ../lib, nothing else); a PNG classify request works; /metrics has
#      convrnn_queue_depth (the HPA's metric); KServe v2 readiness answers 200
#   6. SIGTERM; the server must exit 0 within the drain bound (CONVRNN_DRAIN_TIMEOUT_MS + 5 s)
#
# usage: scripts/deploy-smoke.sh [cpu|cuda]        (default cpu)
# env:   DEPLOY_SMOKE_BIN=path        skip step 1 and use this binary (must match the flavour's features)
#        DEPLOY_SMOKE_CHEF=1          build exactly as the Dockerfile does: cargo-chef prepare, cook in an empty
#                                     directory, copy the sources over, build (cargo-chef 0.1.78 and a target
#                                     dir under target/deploy-tools; slow the first time: a full extra build)
#        DEPLOY_SMOKE_DEVICES=...     CONVRNN_DEVICES for the run (default: as in the image: unset for cpu,
#                                     auto for cuda)
#        DEPLOY_SMOKE_READY_TIMEOUT=s seconds to wait for /health/ready (default 180)
#        DEPLOY_SMOKE_REQUIRE_V2=0    only warn (not fail) when the KServe v2 routes answer 404
#        DEPLOY_SMOKE_KEEP=1          keep the temporary layout and log
set -euo pipefail

flavour=${1:-cpu}
case "$flavour" in cpu) ort_flavour=cpu ;; cuda) ort_flavour=gpu ;; *) echo "usage: $0 [cpu|cuda]" >&2; exit 2 ;; esac

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

CARGO_CHEF_VERSION=0.1.78                 # keep equal to ARG CARGO_CHEF_VERSION in docker/Dockerfile*
IMAGE_UID=10001                           # the image's USER
drain_ms=5000                             # shorter than production (20 s) to keep CI quick; same code path
ready_timeout=${DEPLOY_SMOKE_READY_TIMEOUT:-180}

log() { printf '[deploy-smoke %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }
for tool in cargo curl python3; do command -v "$tool" >/dev/null || die "$tool not found"; done

t0=$(date +%s)
work=$(mktemp -d "${TMPDIR:-/tmp}/deploy-smoke.XXXXXX")
chmod 0755 "$work"  # the unprivileged server user must reach its layout
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then kill -KILL "$server_pid" 2>/dev/null || true; fi
  if [ "${DEPLOY_SMOKE_KEEP:-0}" = 1 ]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

features=()
[ "$flavour" = cuda ] && features=(--features cuda)

# ---- 1. build (Dockerfile: chef/planner/builder stages) -----------------------------------------------------
if [ -n "${DEPLOY_SMOKE_BIN:-}" ]; then
  bin=$DEPLOY_SMOKE_BIN
  log "using prebuilt $bin"
elif [ "${DEPLOY_SMOKE_CHEF:-0}" = 1 ]; then
  # The Dockerfile's sequence exactly: prepare a recipe, cook the dependencies in an empty directory, then
  # copy the sources over the skeleton and build there (own target dir, kept for the next run).
  chef_root=$root/target/deploy-tools/cargo-chef-$CARGO_CHEF_VERSION
  if [ ! -x "$chef_root/bin/cargo-chef" ]; then
    log "installing cargo-chef $CARGO_CHEF_VERSION (chef stage)"
    cargo install cargo-chef --locked --version "$CARGO_CHEF_VERSION" --root "$chef_root"
  fi
  export PATH="$chef_root/bin:$PATH"
  export CARGO_TARGET_DIR=$root/target/deploy-tools/chef-target-$flavour
  log "cargo chef prepare (planner stage)"
  cargo chef prepare --recipe-path "$work/recipe.json"
  mkdir -p "$work/src"
  log "cargo chef cook --release --locked ${features[*]} (builder stage: dependency layer)"
  (cd "$work/src" && cargo chef cook --release --locked "${features[@]}" --recipe-path "$work/recipe.json")
  # COPY . . : the files of a clean clone (tracked + untracked-not-ignored); -m: fresh mtimes, as after COPY.
  git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -C "$work/src" -m -xf -
  log "cargo build --release --locked ${features[*]} (builder stage: the crate)"
  (cd "$work/src" && cargo build --release --locked "${features[@]}")
  bin=$CARGO_TARGET_DIR/release/convrnn-serve
else
  log "cargo build --release --locked ${features[*]} (builder stage)"
  cargo build --release --locked "${features[@]}"
  bin=${CARGO_TARGET_DIR:-$root/target}/release/convrnn-serve
fi
[ -x "$bin" ] || die "no executable at $bin"

# ---- 2./3. layout (Dockerfile: ort stage + runtime COPY lines) ----------------------------------------------
opt=$work/opt/convrnn-serve
scripts/install-onnxruntime.sh "$ort_flavour" "$opt"
install -D -m 0755 "$bin" "$opt/bin/convrnn-serve"
[ -f models/rgc_fmnist.onnx ] || die "models/rgc_fmnist.onnx (the default model the image bakes in) is missing"
install -D -m 0644 models/rgc_fmnist.onnx "$opt/models/rgc_fmnist.onnx"
chmod -R a+rX,go-w "$work/opt"
log "layout: $(cd "$opt" && find . -path ./lib/cuda -prune -o -type f -print | sort | tr '\n' ' ')"

# ---- 4. start it as the container would ------------------------------------------------------------------
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
base=http://127.0.0.1:$port
# Exactly the image's environment (docker/Dockerfile ENV), except the loopback listen address and the
# shorter drain; nothing from this shell (no ORT_DYLIB_PATH, no CONVRNN_ORT_LIBRARY) leaks in. The server
# must find ONNX Runtime in ../lib relative to its executable, as in the image.
envs=(PATH="$opt/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" HOME=/nonexistent
      CONVRNN_LISTEN="127.0.0.1:$port" CONVRNN_MODEL_DIR="$opt/models" CONVRNN_DRAIN_TIMEOUT_MS="$drain_ms")
if [ "$flavour" = cuda ]; then
  envs+=(LD_LIBRARY_PATH="$opt/lib/cuda" CONVRNN_DEVICES="${DEPLOY_SMOKE_DEVICES:-auto}")
elif [ -n "${DEPLOY_SMOKE_DEVICES:-}" ]; then
  envs+=(CONVRNN_DEVICES="$DEPLOY_SMOKE_DEVICES")
fi
as_user=()
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
  as_user=(setpriv --reuid="$IMAGE_UID" --regid="$IMAGE_UID" --clear-groups)
fi
mkdir -p "$work/cwd"  # an empty working directory: no .venv fallback next to it
logf=$work/server.log
log "starting $opt/bin/convrnn-serve serve on $base ${as_user:+as uid $IMAGE_UID}"
(cd "$work/cwd" && exec env -i "${envs[@]}" "${as_user[@]}" "$opt/bin/convrnn-serve" serve) >"$logf" 2>&1 &
server_pid=$!

fail() { log "server log (last 60 lines):"; tail -n 60 "$logf" >&2 || true; die "$*"; }
status_of() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" || true; }

# ---- 5. checks -----------------------------------------------------------------------------------------------
deadline=$(( $(date +%s) + ready_timeout ))
until [ "$(status_of "$base/health/ready")" = 200 ]; do
  kill -0 "$server_pid" 2>/dev/null || fail "server exited before it was ready"
  [ "$(date +%s)" -lt "$deadline" ] || fail "/health/ready not 200 within ${ready_timeout}s"
  sleep 0.5
done
log "ready after $(( $(date +%s) - t0 ))s since start of script"

[ "$(status_of "$base/health/live")" = 200 ] || fail "/health/live is not 200"
# The image's HEALTHCHECK: `convrnn-serve healthcheck` with CONVRNN_HEALTHCHECK_URL (here on our port).
hc() { env -i CONVRNN_HEALTHCHECK_URL="$base$1" "$opt/bin/convrnn-serve" healthcheck; }
hc /health/ready || fail "convrnn-serve healthcheck (the image's HEALTHCHECK) failed"
if hc /no/such/route 2>/dev/null; then fail "convrnn-serve healthcheck accepted a 404"; fi

ort_maps=$(grep -o '/[^ ]*libonnxruntime[^ ]*' "/proc/$server_pid/maps" | sort -u || true)
[ -n "$ort_maps" ] || fail "libonnxruntime is not mapped into the server process"
while IFS= read -r lib; do
  case "$lib" in "$opt/lib/"*) ;; *) fail "ONNX Runtime loaded from $lib, not from the layout's lib/" ;; esac
done <<<"$ort_maps"
log "ONNX Runtime loaded from the layout: $(tr '\n' ' ' <<<"$ort_maps")"

img=$work/img.png
python3 - "$img" <<'EOF'
# A 28x28 grayscale PNG (a bright square on dark), written with the standard library only.
import struct, sys, zlib
w = h = 28
rows = b"".join(b"\x00" + bytes(230 if 7 <= x < 21 and 5 <= y < 23 else 20 for x in range(w)) for y in range(h))
chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) \
      + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
open(sys.argv[1], "wb").write(png)
EOF
resp=$(curl -sf --max-time 30 -X POST --data-binary "@$img" -H 'content-type: image/png' \
         "$base/v1/models/rgc_fmnist/classify") || fail "classify request failed"
python3 -c 'import json, sys; json.loads(sys.argv[1])' "$resp" || fail "classify answer is not JSON: $resp"
log "classify: ${resp:0:300}"

# KServe v2 (the InferenceService example relies on it). A 404 means the server has no /v2 routes yet: a
# warning unless DEPLOY_SMOKE_REQUIRE_V2=1; any other answer but 200 fails.
for route in /v2/health/ready /v2/models/rgc_fmnist/ready; do
  code=$(status_of "$base$route")
  if [ "$code" = 404 ] && [ "${DEPLOY_SMOKE_REQUIRE_V2:-1}" != 1 ]; then
    log "WARNING: $route answers 404: no KServe v2 routes yet (set DEPLOY_SMOKE_REQUIRE_V2=1 once they exist)"
  elif [ "$code" != 200 ]; then
    fail "$route answers $code, expected 200 (KServe v2)"
  fi
done
metrics=$(curl -sf --max-time 5 "$base/metrics") || fail "/metrics failed"
grep -q '^convrnn_queue_depth{' <<<"$metrics" || fail "/metrics has no convrnn_queue_depth{...} gauge (the HPA scales on it)"

# ---- 6. graceful stop ------------------------------------------------------------------------------------------
bound=$(( drain_ms / 1000 + 5 ))
log "SIGTERM; expecting exit 0 within ${bound}s"
ts=$(date +%s)
kill -TERM "$server_pid"
while kill -0 "$server_pid" 2>/dev/null; do
  [ $(( $(date +%s) - ts )) -lt "$bound" ] || fail "still running ${bound}s after SIGTERM"
  sleep 0.2
done
rc=0; wait "$server_pid" || rc=$?
server_pid=""
[ "$rc" = 0 ] || fail "exit status $rc after SIGTERM (expected 0)"
log "exited 0 after $(( $(date +%s) - ts ))s"

log "PASS ($flavour) in $(( $(date +%s) - t0 ))s"
