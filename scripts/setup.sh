#!/usr/bin/env bash
# Idempotent set-up of what the server needs to run, and with --test what its tests need:
#   .venv/ (light: the onnxruntime wheel whose libonnxruntime.so the server loads, numpy, test
#   clients; with --test also the Python client of clients/python), Debian packages (the
#   Fashion-MNIST data set; with --test also chromium for the docs page test, and chromium-driver
#   for Selenium's page test). Reruns are fast: pip is skipped when every pin is already installed.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
log() { printf '[setup] %s\n' "$*" >&2; }

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then sudo=sudo; fi
  log "apt-get install ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

if [ "$want_test" = 1 ]; then
  apt_install dataset-fashion-mnist chromium chromium-driver curl
fi

if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  if ! python3 -m venv .venv; then
    # Debian's python3 ships venv separately.
    rm -rf .venv
    apt_install python3-venv
    python3 -m venv .venv
  fi
fi
if ! .venv/bin/python - requirements-test.txt <<'PYEOF' 2>/dev/null
import sys
from importlib.metadata import version
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, pin = line.split("==")
    name = name.split("[")[0]
    if version(name).split("+")[0] != pin:
        sys.exit(1)
PYEOF
then
  log "installing requirements-test.txt into .venv"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-test.txt
fi
if [ "$want_test" = 1 ]; then
  # The Python client, editable so the tests run this checkout's code (its dependencies are
  # pinned in requirements-test.txt); reinstalled when .venv points at another checkout.
  if ! .venv/bin/python - "$root/clients/python/src" <<'PYEOF' 2>/dev/null
import pathlib, sys
import convrnn_client
here = pathlib.Path(convrnn_client.__file__).resolve().parent.parent
sys.exit(0 if here == pathlib.Path(sys.argv[1]).resolve() else 1)
PYEOF
  then
    log "installing clients/python into .venv (editable)"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e clients/python
  fi
fi
lib=$(ls .venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so* 2>/dev/null | head -n 1)
[ -n "$lib" ] || { log "libonnxruntime.so missing from .venv"; exit 1; }
log "ONNX Runtime library: $lib"
