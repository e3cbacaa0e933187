#!/usr/bin/env bash
# Start-up cost of the release server on one model: seconds from launch to /health/ready = 200,
# the resident memory (VmRSS, VmHWM) 2 s after that, and the batch each worker chose
# (convrnn_worker_max_batch_size). The numbers a Kubernetes startup probe and memory limit need.
#
#   scripts/bench-startup.sh MODEL [SERVER FLAGS...]
#   scripts/bench-startup.sh models/build/rgc_intermediate.onnx
#   scripts/bench-startup.sh models/build/rgc_intermediate.onnx --cpu-batch-budget-ms 0
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:?usage: scripts/bench-startup.sh MODEL [SERVER FLAGS...]}
shift
cargo build --release --quiet
MDIR=$(mktemp -d)
ln -s "$(realpath "$MODEL")" "$MDIR/"
LOG=$(mktemp)
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
START=$(date +%s.%N)
target/release/convrnn-serve serve --model-dir "$MDIR" --listen 127.0.0.1:$PORT "$@" > "$LOG" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$MDIR" "$LOG"' EXIT
until curl -sf "http://127.0.0.1:$PORT/health/ready" >/dev/null; do
  if ! kill -0 $PID 2>/dev/null; then cat "$LOG" >&2; echo "the server exited" >&2; exit 1; fi
  sleep 0.2
done
READY=$(date +%s.%N)
sleep 2
mib() { awk -v k="$1:" '$1 == k { printf "%.0f", $2 / 1024 }' /proc/$PID/status; }
printf 'model %s flags [%s]\n' "$MODEL" "$*"
printf 'ready after %.1f s, VmRSS %s MiB, VmHWM %s MiB\n' "$(awk -v a="$START" -v b="$READY" 'BEGIN { print b - a }')" "$(mib VmRSS)" "$(mib VmHWM)"
curl -s "http://127.0.0.1:$PORT/metrics" | grep '^convrnn_worker_max_batch_size' || true
