#!/usr/bin/env bash
# Profiles the release server under wrk load with perf (cpu-clock: this VM has no hardware
# counters) and prints the hottest symbols, by shared object and by function.
#
#   scripts/bench-profile.sh [MODEL] [IMAGE] [CONNS] [SECONDS] [QUERY] [ACCEPT] [SERVER FLAGS...]
#   scripts/bench-profile.sh models/rgc_fmnist.onnx bench-results/images/camera.jpg 32 15
#
# Writes bench-results/profile/perf.data; `perf report -i` it for more.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-models/rgc_fmnist.onnx}
IMAGE=${2:-bench-results/images/model-28.jpg}
CONNS=${3:-32}
SECS=${4:-15}
QUERY=${5:-}
ACCEPT=${6:-}
shift $(( $# < 6 ? $# : 6 ))
OUT=bench-results/profile
mkdir -p "$OUT"
[ -f "$IMAGE" ] || benches/.venv/bin/python benches/suite/make_images.py bench-results/images 28 224 >/dev/null
cargo build --release --quiet
MDIR=$(mktemp -d)
ln -s "$(realpath "$MODEL")" "$MDIR/"
PORT=$(benches/.venv/bin/python -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
RUST_LOG=warn target/release/convrnn-serve serve --model-dir "$MDIR" --listen 127.0.0.1:$PORT \
  --devices cpu "$@" > "$OUT/server.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$MDIR"' EXIT
for _ in $(seq 600); do curl -sf "http://127.0.0.1:$PORT/health/ready" >/dev/null && break; sleep 0.2; done
NAME=$(curl -s "http://127.0.0.1:$PORT/v1/models" | benches/.venv/bin/python -c 'import json,sys; d=json.load(sys.stdin); print((d.get("models") or d)[0]["name"])')
case "$IMAGE" in *.png) CT=image/png;; *) CT=image/jpeg;; esac
URL="http://127.0.0.1:$PORT/v1/models/$NAME/${QUERY:-classify}"
echo "profiling $URL with $IMAGE, c=$CONNS, ${SECS}s"
perf record -e cpu-clock -F 999 -g -p $PID -o "$OUT/perf.data" -- sleep "$SECS" 2>/dev/null &
PERF=$!
BODY_FILE=$IMAGE CONTENT_TYPE=$CT ACCEPT=$ACCEPT wrk -t1 -c"$CONNS" -d"${SECS}s" --timeout 60s \
  -s benches/suite/post.lua "$URL" | grep WRKJSON
wait $PERF || true
perf report -i "$OUT/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -12
perf report -i "$OUT/perf.data" --no-children --sort sym --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -40
