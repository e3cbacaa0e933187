#!/usr/bin/env bash
# Install the ONNX Runtime shared libraries from the PyPI wheel into DEST/lib (no Python at run time).
#
#   scripts/install-onnxruntime.sh cpu DEST   # onnxruntime==1.31.1      -> DEST/lib/libonnxruntime.so.1.31.1
#   scripts/install-onnxruntime.sh gpu DEST   # onnxruntime-gpu==1.31.1  -> DEST/lib/libonnxruntime*.so*
#                                             #   + CUDA 13 / cuDNN 9 libs -> DEST/lib/cuda/*.so*
#
# Used by BOTH docker/Dockerfile* (a build stage runs it) and the host (scripts/deploy-smoke.sh, CI), so a
# broken install step is caught without a Docker engine. The layout matches docs/CONVENTIONS.md: the server
# finds `../lib/libonnxruntime.so*` relative to its executable; for CUDA, put DEST/lib/cuda on
# LD_LIBRARY_PATH (the image does). Every installed library is checked with ldd: all of its dependencies
# must resolve inside DEST or the base system, except the driver's libcuda.so.1 (the NVIDIA container
# toolkit / device plugin injects it at run time).
#
# Needs: python3 (>= 3.11, the wheels' Requires-Python) with pip, and ldd. Honours PIP_* env vars
# (PIP_CACHE_DIR, PIP_NO_CACHE_DIR, PIP_INDEX_URL, ...). Overrides: PYTHON, ORT_VERSION.
set -euo pipefail

usage() { echo "usage: $0 cpu|gpu DEST" >&2; exit 2; }
[ $# -eq 2 ] || usage
flavour=$1
dest=$2
case "$flavour" in cpu|gpu) ;; *) usage ;; esac

PYTHON=${PYTHON:-python3}
ORT_VERSION=${ORT_VERSION:-1.31.1}

log() { echo "install-onnxruntime: $*" >&2; }
die() { log "error: $*"; exit 1; }

"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || die "$PYTHON is older than 3.11 (the onnxruntime $ORT_VERSION wheels need >= 3.11); set PYTHON="
command -v ldd >/dev/null || die "ldd not found (libc-bin)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ort-wheel.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

pip_install() {
  "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --root-user-action=ignore --no-compile --only-binary=:all: --target "$tmp/site" "$@"
}

if [ "$flavour" = cpu ]; then
  log "fetching onnxruntime==$ORT_VERSION from PyPI"
  pip_install --no-deps "onnxruntime==$ORT_VERSION"
else
  # The CUDA provider of onnxruntime-gpu 1.31 links CUDA 13 (cudart, cublas, cublasLt, curand; cufft and
  # nvrtc at run time) and cuDNN 9. The wheel's extras [cuda,cudnn] bring exactly those from PyPI; the
  # versions below are pinned so an image rebuilt later gets the same libraries (bump them together).
  cat >"$tmp/constraints.txt" <<'EOF'
nvidia-cuda-runtime==13.5.37
nvidia-cuda-nvrtc==13.5.37
nvidia-cublas==13.10.0.20
nvidia-nvjitlink==13.5.37
nvidia-cufft==12.5.0.14
nvidia-curand==10.4.5.25
nvidia-cudnn-cu13==9.28.1.4
EOF
  log "fetching onnxruntime-gpu[cuda,cudnn]==$ORT_VERSION from PyPI (about 2.5 GB unpacked)"
  pip_install --constraint "$tmp/constraints.txt" "onnxruntime-gpu[cuda,cudnn]==$ORT_VERSION"
fi

capi="$tmp/site/onnxruntime/capi"
[ -f "$capi/libonnxruntime.so.$ORT_VERSION" ] || die "wheel has no onnxruntime/capi/libonnxruntime.so.$ORT_VERSION"

mkdir -p "$dest/lib"
install -m 0644 "$capi/libonnxruntime.so.$ORT_VERSION" "$dest/lib/"
if [ "$flavour" = gpu ]; then
  # libonnxruntime loads its providers from its own directory. The TensorRT provider is left out: it needs
  # TensorRT (libnvinfer), which is not shipped; the server uses the CUDA provider only.
  install -m 0644 "$capi/libonnxruntime_providers_shared.so" "$capi/libonnxruntime_providers_cuda.so" "$dest/lib/"
  mkdir -p "$dest/lib/cuda"
  n=0
  for f in "$tmp"/site/nvidia/*/lib/*.so*; do
    case "$(basename "$f")" in
      libnvblas.so*|libcufftw.so*) continue ;;  # BLAS/FFTW drop-in shims: nothing here links them
    esac
    install -m 0644 "$f" "$dest/lib/cuda/"
    n=$((n + 1))
  done
  [ "$n" -gt 0 ] || die "no CUDA/cuDNN libraries found under site-packages/nvidia/*/lib"
fi

# Every library must load: resolve each one's dependencies against DEST and the system, as the dynamic
# loader will in the image (LD_LIBRARY_PATH there = DEST/lib/cuda).
missing=0
for so in "$dest"/lib/*.so* "$dest"/lib/cuda/*.so*; do
  [ -f "$so" ] || continue
  out=$(LD_LIBRARY_PATH="$dest/lib/cuda:$dest/lib" ldd "$so" 2>&1) || { log "ldd failed on $so: $out"; missing=1; continue; }
  bad=$(printf '%s\n' "$out" | grep 'not found' | grep -v '^[[:space:]]*libcuda\.so\.1 ' || true)
  if [ -n "$bad" ]; then
    log "unresolved dependencies of $so:"; printf '%s\n' "$bad" >&2; missing=1
  fi
done
[ "$missing" -eq 0 ] || die "some libraries have unresolved dependencies (see above)"

log "installed $flavour ONNX Runtime $ORT_VERSION into $dest/lib ($(du -sh "$dest/lib" | cut -f1)); all dependencies resolve"
