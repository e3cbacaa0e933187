#!/usr/bin/env bash
# Idempotent set-up for models/: creates models/.venv (reused when present), installs the
# pinned requirements, and installs the Fashion-MNIST Debian package if it is missing.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
apt_install() {
  local SUDO=""
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y "$@"
}
if [ ! -x .venv/bin/python ]; then
  rm -rf .venv
  if ! "$PY" -m venv .venv; then
    rm -rf .venv
    apt_install python3-venv
    "$PY" -m venv .venv
  fi
fi
# skip pip when every pin is already satisfied (fast reruns)
if ! .venv/bin/python - <<'PYEOF' 2>/dev/null
import sys
from importlib.metadata import version
for line in open("requirements.txt"):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, pin = line.split("==")
    v = version(name)
    if v.split("+")[0] != pin:
        sys.exit(1)
PYEOF
then
  .venv/bin/python -m pip install --upgrade pip >/dev/null
  .venv/bin/python -m pip install -r requirements.txt
fi
DATA=/usr/share/datasets/fashion-mnist
if [ ! -f "$DATA/t10k-images-idx3-ubyte.gz" ] || [ ! -f "$DATA/train-images-idx3-ubyte.gz" ]; then
  apt_install dataset-fashion-mnist
fi
echo "models/setup.sh: ok ($(.venv/bin/python -c 'import torch,onnxruntime;print("torch",torch.__version__,"onnxruntime",onnxruntime.__version__)'))"
