#!/usr/bin/env bash
# The Brain-Score adapter of the Python client against brainscore-vision itself (its
# StimulusSet, BrainModel, NeuroidAssembly and temporal alignment). Not part of scripts/test.sh:
# brainscore-vision pins numpy<2 and xarray<2022.6 (so it cannot share .venv) and depends on
# torch, torchvision and jupyter; this installs it without those (--no-deps plus what its model
# interface imports) into $BRAINSCORE_VENV, outside the repository, and runs
# clients/python/checks/brainscore_check.py against a server on the test fixture model.
#   scripts/check-brainscore.sh            (needs `cargo build` and scripts/setup.sh first)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
venv=${BRAINSCORE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/convrnn-serve/brainscore-venv}
log() { printf '[check-brainscore] %s\n' "$*" >&2; }

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import brainscore_vision.model_interface' 2>/dev/null; then
  log "creating $venv"
  python3 -m venv "$venv"
  pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
  "${pip[@]}" --no-deps brainscore-vision==2.4.2 brainscore-core==2.5.0
  "${pip[@]}" "numpy<2" "xarray<2022.6" "pandas<2" scipy "scikit-learn<1.6" tqdm pyyaml pillow \
    netCDF4 h5py psutil fire pybtex peewee result-caching "importlib-metadata<5" networkx gitpython \
    boto3 requests "opencv-python-headless<4.11" "httpx>=0.23"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e clients/python

bin=${CONVRNN_SERVE_BIN:-target/debug/convrnn-serve}
[ -x "$bin" ] || { log "no $bin: run cargo build"; exit 1; }
lib=$(ls .venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so* 2>/dev/null | head -n 1)
[ -n "$lib" ] || { log "no libonnxruntime.so in .venv: run scripts/setup.sh"; exit 1; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin" serve --model-dir tests/fixtures --listen "127.0.0.1:$port" --devices cpu --ort-library "$lib" \
  >"target/check-brainscore-server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null && break
  kill -0 "$server" 2>/dev/null || { log "server exited; see target/check-brainscore-server.log"; exit 1; }
  sleep 0.2
done
CONVRNN_URL="http://127.0.0.1:$port" "$venv/bin/python" clients/python/checks/brainscore_check.py
