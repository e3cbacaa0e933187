#!/usr/bin/env bash
# Get ONNX Runtime's CUDA provider and a `--features cuda` build onto a leased GPU machine (docs/gpu.md).
#
# The lease's machine reaches nothing, and each device call carries at most 64 MiB of working tree; the
# CUDA provider alone is 284 MB. Its other CUDA libraries (CUDA 13, cuDNN 9, cuBLAS ...) are already there
# as PyPI nvidia-* packages in the image's PyTorch environment, so only ONNX Runtime's own libraries travel:
# zstd-compressed, split into parts that each fit one call, and joined and checked on the machine. A
# carried path stays on the warm machine between calls, so the parts go in consecutive calls.
#
#   scripts/gpu-stage.sh pack [--no-build]  # here: fetch the onnxruntime-gpu wheel from PyPI, pack its ORT
#                                           # libraries into parts, build the release binaries with
#                                           # --features cuda; writes .gpu-stage/ and prints the plan
#   scripts/gpu-stage.sh plan               # here: the device calls (carry lists, commands) for .gpu-stage/
#   scripts/gpu-stage.sh remote             # there: check the parts that arrived; once all have, join,
#                                           # verify, unpack into .gpu-stage/ort and write .gpu-stage/env.sh
#   scripts/gpu-stage.sh selftest           # here: the whole round trip on a synthetic payload in a temp
#                                           # dir, one call at a time, and a corrupted part must be refused
#
# Environment: ORT_VERSION (1.31.1, as scripts/install-onnxruntime.sh), GPU_STAGE_DIR (.gpu-stage),
# GPU_STAGE_PART_MIB (54: a part plus the ~6 MiB tree stays under the 64 MiB a call carries),
# GPU_STAGE_ZSTD_LEVEL (9: -19 saves 1% on the CUDA provider for 45x the time), GPU_STAGE_CALL_MIB (what one call may carry besides the tree; default 64 minus
# the tree's size minus 2).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

ORT_VERSION=${ORT_VERSION:-1.31.1}
stage=${GPU_STAGE_DIR:-.gpu-stage}
part_mib=${GPU_STAGE_PART_MIB:-54}
level=${GPU_STAGE_ZSTD_LEVEL:-9}
# The only piece of the zstd format the device may lack a decoder for: the image has no zstd CLI for sure,
# so a Python decoder travels with the first call (about 5 MB) and is used if `zstd` is not on the PATH.
ZSTANDARD_PIN=zstandard==0.25.0

log() { printf '[gpu-stage] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
size() { stat -L -c %s "$1"; }

# ---- here ----------------------------------------------------------------------------------------------------

# pack_dir SRC_DIR NAME: SRC_DIR's files -> $stage/NAME.tar.zst.partNN + lines in $stage/SHA256SUMS.
pack_dir() {
  local src=$1 name=$2 archive
  archive="$stage/$name.tar.zst"
  tar -C "$src" -cf - . | zstd -q -"$level" -T0 -o "$archive"
  log "$name: $(du -sb "$src" | cut -f1) bytes -> $(size "$archive") bytes zstd -$level"
  (cd "$stage" && sha256sum "$name.tar.zst" >>SHA256SUMS)
  split -b "${part_mib}M" -d -a 2 "$archive" "$archive.part"
  rm "$archive"
  (cd "$stage" && sha256sum "$name".tar.zst.part* >>SHA256SUMS)
}

fetch_ort() {  # the wheel's ORT libraries -> DIR
  local out=$1 wheel
  mkdir -p "$stage/dl"
  wheel=$(find "$stage/dl" -maxdepth 1 -name "onnxruntime_gpu-$ORT_VERSION-*.whl" | head -1)
  if [ -z "$wheel" ]; then
    log "downloading onnxruntime-gpu==$ORT_VERSION from PyPI"
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
      --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
      -d "$stage/dl" "onnxruntime-gpu==$ORT_VERSION"
    wheel=$(find "$stage/dl" -maxdepth 1 -name "onnxruntime_gpu-$ORT_VERSION-*.whl" | head -1)
  fi
  log "wheel $(basename "$wheel"): $(size "$wheel") bytes"
  python3 - "$wheel" "$out" "$ORT_VERSION" <<'PY'
import os, sys, zipfile
wheel, out, version = sys.argv[1:]
want = {f"libonnxruntime.so.{version}", "libonnxruntime_providers_shared.so", "libonnxruntime_providers_cuda.so"}
os.makedirs(out, exist_ok=True)
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        base = os.path.basename(info.filename)
        if info.filename.startswith("onnxruntime/capi/") and base in want:
            with z.open(info) as src, open(os.path.join(out, base), "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            want.discard(base)
            print(f"  {base}: {info.file_size} bytes", file=sys.stderr)
if want:
    sys.exit(f"the wheel lacks {sorted(want)}")
PY
}

build_bins() {  # the server and the raw ORT bench, release, --features cuda -> DIR
  local out=$1 bench
  log "cargo build --release --locked --features cuda (the server and benches/suite/raw_ort.rs)"
  cargo build --release --locked --features cuda --bin convrnn-serve
  bench=$(cargo bench --locked --features cuda --bench raw_ort --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "raw_ort" and m.get("executable"):
        print(m["executable"])' | tail -1)
  [ -n "$bench" ] || die "cargo bench --no-run gave no raw_ort executable"
  mkdir -p "$out"
  install -m 0755 target/release/convrnn-serve "$out/convrnn-serve"
  install -m 0755 "$bench" "$out/raw_ort"
  strip "$out/convrnn-serve" "$out/raw_ort"
  ls -l "$out" >&2
}

cmd_pack() {
  local build=1
  [ "${1:-}" = "--no-build" ] && build=0
  command -v zstd >/dev/null || die "zstd not found (apt-get install zstd)"
  local tmp
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/gpu-stage.XXXXXX")
  # shellcheck disable=SC2064  # expand now: $tmp is local
  trap "rm -rf '$tmp'" EXIT
  mkdir -p "$stage"
  rm -f "$stage"/*.part?? "$stage"/SHA256SUMS "$stage"/whl/*.whl
  printf 'ORT_VERSION=%s\n' "$ORT_VERSION" >"$stage/VERSION"
  fetch_ort "$tmp/ort"
  pack_dir "$tmp/ort" ort
  if [ "$build" = 1 ]; then
    build_bins "$tmp/bin"
    pack_dir "$tmp/bin" bin
  fi
  mkdir -p "$stage/whl"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$stage/whl" "$ZSTANDARD_PIN"
  (cd "$stage" && sha256sum whl/*.whl >>SHA256SUMS)
  cmd_plan
}

# The staged files: the checksums, the decoder wheel and every part.
stage_files() {
  printf '%s\n' "$stage/SHA256SUMS" "$stage/VERSION"
  awk '{print $2}' "$stage/SHA256SUMS" | grep -E '^whl/|\.part[0-9][0-9]$' | sed "s|^|$stage/|"
}

cmd_plan() {
  [ -f "$stage/SHA256SUMS" ] || die "no $stage/SHA256SUMS: run '$0 pack' first"
  local tree budget
  # What travels anyway with every call: tracked files and untracked ones git does not ignore.
  tree=$( { git ls-files -z; git ls-files -z --others --exclude-standard; } | xargs -0 -r du -cb 2>/dev/null | tail -1 | cut -f1)
  budget=${GPU_STAGE_CALL_MIB:-$(awk -v t="$tree" 'BEGIN { printf "%d", 64 - t / 1048576 - 2 }')}
  log "working tree $(mib "$tree") MiB travels with every call; $budget MiB left per call for staged files"
  # First-fit decreasing: as few calls as the sizes allow, at most 8 carried paths each; the call with the
  # checksums goes first (the device side needs them to check what arrives).
  local list
  list=$(mktemp)
  stage_files | while read -r f; do printf '%s %s\n' "$(size "$f")" "$f"; done >"$list"
  python3 - "$budget" "$list" <<'PY'
import sys
budget = int(sys.argv[1]) * 1048576
rows = [l.split(" ", 1) for l in open(sys.argv[2]).read().splitlines()]
calls = []
for size, path in sorted(rows, key=lambda x: -int(x[0])):
    size = int(size)
    if size > budget:
        sys.exit(f"{path} ({size} bytes) does not fit one call: lower GPU_STAGE_PART_MIB")
    for c in calls:
        if c["used"] + size <= budget and len(c["files"]) < 8:
            break
    else:
        c = {"used": 0, "files": []}
        calls.append(c)
    c["used"] += size
    c["files"].append(path)
calls.sort(key=lambda c: not any(p.endswith("/SHA256SUMS") for p in c["files"]))
print("# Device calls, one after the other, each within the machine's 30 s warm window (docs/gpu.md).")
for i, c in enumerate(calls, 1):
    carry = ",".join('"%s"' % p for p in c["files"])
    print("call %d: carry=[%s] (%.1f MiB)" % (i, carry, c["used"] / 1048576))
    if i == len(calls):
        cmd = "scripts/gpu-stage.sh remote && . .gpu-stage/env.sh && benches/gpu/run.sh --out $OUT"
    else:
        cmd = "scripts/gpu-stage.sh remote; test $? -eq 3  # 3: parts still to come"
    print("        command: " + cmd)
PY
  rm -f "$list"
}

# ---- there ---------------------------------------------------------------------------------------------------

python_zstd_decoder() {  # make `import zstandard` work from the carried wheel, if it is not installed
  python3 -c 'import zstandard' 2>/dev/null && return 0
  local whl
  whl=$(find "$stage/whl" -maxdepth 1 -name 'zstandard-*.whl' 2>/dev/null | head -1)
  [ -n "$whl" ] || return 1
  python3 -m pip install --quiet --no-index --no-deps --no-compile --target "$stage/pylib" "$whl" >&2 || return 1
  export PYTHONPATH="$root/$stage/pylib${PYTHONPATH:+:$PYTHONPATH}"
}

decompress() {  # stdin zstd -> stdout
  if command -v zstd >/dev/null; then
    zstd -q -d -c
  else
    python_zstd_decoder || die "no zstd on the PATH and no zstandard wheel in $stage/whl"
    python3 -c 'import sys, zstandard; zstandard.ZstdDecompressor().copy_stream(sys.stdin.buffer, sys.stdout.buffer)'
  fi
}

# join NAME DEST: verify and unpack NAME's parts into DEST. Returns 3 while parts are missing.
join_archive() {
  local name=$1 dest=$2 missing=() have=0 total=0 p want got
  while read -r want p; do
    total=$((total + 1))
    if [ ! -f "$stage/$p" ]; then missing+=("$p"); continue; fi
    # A part is checked once, when it arrives; a bad transfer is named at once, not after the last call.
    if [ ! -f "$stage/.ok/$p" ] || [ "$(cat "$stage/.ok/$p")" != "$want" ]; then
      got=$(sha256sum "$stage/$p" | cut -d' ' -f1)
      [ "$got" = "$want" ] || die "$p: sha256 $got, expected $want (carry it again)"
      mkdir -p "$stage/.ok"; printf '%s' "$want" >"$stage/.ok/$p"
    fi
    have=$((have + 1))
  done < <(grep " $name\.tar\.zst\.part[0-9][0-9]$" "$stage/SHA256SUMS")
  [ "$total" -gt 0 ] || return 0  # not packed (pack --no-build)
  if [ ${#missing[@]} -gt 0 ]; then
    log "$name: $have of $total parts here and checked; still to carry: ${missing[*]}"
    return 3
  fi
  if [ -f "$dest/.sha256" ] && [ "$(cat "$dest/.sha256")" = "$(grep " $name\.tar\.zst$" "$stage/SHA256SUMS" | cut -d' ' -f1)" ]; then
    log "$name: already unpacked in $dest"; return 0
  fi
  want=$(grep " $name\.tar\.zst$" "$stage/SHA256SUMS" | cut -d' ' -f1)
  got=$(cat "$stage/$name".tar.zst.part?? | sha256sum | cut -d' ' -f1)
  [ "$got" = "$want" ] || die "$name.tar.zst joined: sha256 $got, expected $want"
  rm -rf "$dest.tmp"; mkdir -p "$dest.tmp"
  cat "$stage/$name".tar.zst.part?? | decompress | tar -C "$dest.tmp" -xf -
  rm -rf "$dest"; mv "$dest.tmp" "$dest"
  printf '%s' "$want" >"$dest/.sha256"
  log "$name: $total parts joined, sha256 checked, unpacked into $dest ($(du -sb "$dest" | cut -f1) bytes)"
}

# The CUDA, cuBLAS and cuDNN libraries of the image's Python environment (PyPI nvidia-* packages).
nvidia_lib_dirs() {
  python3 - <<'PY'
import glob, os, site, sys
roots = list(site.getsitepackages()) + [site.getusersitepackages()] + sys.path
seen = []
for r in roots:
    for d in sorted(glob.glob(os.path.join(r, "nvidia", "*", "lib")) + glob.glob(os.path.join(r, "nvidia", "*", "*", "lib"))):
        if glob.glob(os.path.join(d, "lib*.so*")) and d not in seen:
            seen.append(d)
print(":".join(seen))
PY
}

cmd_remote() {
  if [ ! -f "$stage/SHA256SUMS" ]; then
    log "no $stage/SHA256SUMS yet: it comes with one of the calls; nothing checked"
    return 3
  fi
  [ -f "$stage/VERSION" ] || { log "no $stage/VERSION yet"; return 3; }
  # shellcheck disable=SC1090,SC1091
  . "$stage/VERSION"
  local rc=0
  join_archive ort "$stage/ort" || rc=$?
  [ "$rc" -eq 0 ] || [ "$rc" -eq 3 ] || exit "$rc"
  local rc2=0
  join_archive bin "$stage/bin" || rc2=$?
  [ "$rc2" -eq 0 ] || [ "$rc2" -eq 3 ] || exit "$rc2"
  if [ "$rc" -eq 3 ] || [ "$rc2" -eq 3 ]; then
    log "not complete yet: carry the next call's files"
    return 3
  fi
  local nv lib="$root/$stage/ort/libonnxruntime.so.$ORT_VERSION"
  [ -f "$lib" ] || die "no $lib in the unpacked archive"
  nv=$(nvidia_lib_dirs)
  [ -n "$nv" ] || log "warning: no nvidia/*/lib under python3's site-packages: the CUDA provider will not load"
  cat >"$stage/env.sh" <<EOF
# Written by scripts/gpu-stage.sh remote: the staged ONNX Runtime and the image's CUDA libraries.
export CONVRNN_ORT_LIBRARY="$lib"
export ORT_DYLIB_PATH="$lib"
export LD_LIBRARY_PATH="$root/$stage/ort:$nv\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export PATH="$root/$stage/bin:\$PATH"
export CONVRNN_SERVE_BIN="$root/$stage/bin/convrnn-serve"
export RAW_ORT_BIN="$root/$stage/bin/raw_ort"
EOF
  # Every dependency of the CUDA provider must resolve now (libcuda.so.1 comes from the driver).
  local out
  out=$(LD_LIBRARY_PATH="$root/$stage/ort:$nv" ldd "$stage/ort/libonnxruntime_providers_cuda.so" 2>&1 || true)
  if printf '%s\n' "$out" | grep -q '^[[:space:]]*libcuda\.so\.1 => not found'; then
    log "warning: the driver's libcuda.so.1 is not on the loader's path (ldconfig -p, LD_LIBRARY_PATH)"
  fi
  if printf '%s\n' "$out" | grep 'not found' | grep -qv '^[[:space:]]*libcuda\.so\.1 '; then
    printf '%s\n' "$out" | grep 'not found' >&2
    die "the CUDA provider has unresolved libraries (above)"
  fi
  # The binaries were linked here: one that needs a newer glibc than the machine's says so now.
  if [ -x "$stage/bin/convrnn-serve" ]; then
    "$stage/bin/convrnn-serve" --version >&2 || die "$stage/bin/convrnn-serve does not run here (glibc? see above)"
  fi
  log "ready: . $stage/env.sh (CONVRNN_ORT_LIBRARY=$lib; CUDA libraries from $(printf '%s' "$nv" | tr ':' '\n' | wc -l) nvidia-* folders)"
}

# ---- selftest ------------------------------------------------------------------------------------------------

cmd_selftest() {
  command -v zstd >/dev/null || die "zstd not found"
  local t here there f n i
  t=$(mktemp -d "${TMPDIR:-/tmp}/gpu-stage-selftest.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$t'" EXIT
  here=$t/here; there=$t/there
  mkdir -p "$here/payload/ort" "$here/payload/bin" "$there/scripts"
  # Incompressible libraries larger than several parts, plus a compressible one.
  head -c $((5 * 1048576 + 12345)) /dev/urandom >"$here/payload/ort/libonnxruntime_providers_cuda.so"
  { yes 'onnxruntime' || true; } | head -c 3000000 >"$here/payload/ort/libonnxruntime.so.$ORT_VERSION"
  head -c 1000 /dev/urandom >"$here/payload/ort/libonnxruntime_providers_shared.so"
  head -c 700000 /dev/urandom >"$here/payload/bin/convrnn-serve"
  (
    cd "$here"
    stage=stage part_mib=2 level=3
    mkdir -p "$stage/whl"
    printf 'ORT_VERSION=%s\n' "$ORT_VERSION" >"$stage/VERSION"
    pack_dir payload/ort ort
    pack_dir payload/bin bin
  )
  n=$(grep -c '\.part[0-9][0-9]$' "$here/stage/SHA256SUMS")
  [ "$n" -ge 4 ] || die "selftest: expected at least 4 parts, got $n"
  for f in "$here"/stage/*.part??; do
    [ "$(size "$f")" -le $((2 * 1048576)) ] || die "selftest: $f is larger than a part"
  done
  # The device side, one call at a time: the checksums and VERSION, then one part per call.
  cp "$0" "$there/scripts/gpu-stage.sh"
  mkdir -p "$there/stage"
  cp "$here/stage/SHA256SUMS" "$here/stage/VERSION" "$there/stage/"
  i=0
  while read -r f; do
    cp "$here/stage/$f" "$there/stage/$f"
    i=$((i + 1))
    local rc=0
    (cd "$there" && GPU_STAGE_DIR=stage bash scripts/gpu-stage.sh remote >/dev/null 2>"$t/log") || rc=$?
    if [ "$i" -lt "$n" ]; then
      [ "$rc" -eq 3 ] || { cat "$t/log" >&2; die "selftest: call $i of $n: remote exited $rc, expected 3 (incomplete)"; }
      grep -q 'still to carry' "$t/log" || die "selftest: call $i did not name the missing parts"
    else
      # The last call may fail only on the CUDA check (no GPU libraries here); the payload must be unpacked.
      grep -q 'unpacked into' "$t/log" || { cat "$t/log" >&2; die "selftest: the last call did not unpack"; }
    fi
  done < <(awk '{print $2}' "$here/stage/SHA256SUMS" | grep '\.part[0-9][0-9]$')
  for f in "$here"/payload/ort/* "$here"/payload/bin/*; do
    cmp -s "$f" "$there/stage/$(basename "$(dirname "$f")")/$(basename "$f")" || die "selftest: $(basename "$f") differs after the round trip"
  done
  grep -q "CONVRNN_ORT_LIBRARY=.*libonnxruntime.so.$ORT_VERSION" "$there/stage/env.sh" || die "selftest: env.sh"
  # A part corrupted in transit is refused, naming it, and nothing is unpacked from it.
  rm -rf "$there/stage/ort" "$there/stage/.ok"
  printf 'X' | dd of="$there/stage/ort.tar.zst.part01" bs=1 seek=100 conv=notrunc status=none
  if (cd "$there" && GPU_STAGE_DIR=stage bash scripts/gpu-stage.sh remote >/dev/null 2>"$t/log"); then
    die "selftest: a corrupted part was accepted"
  fi
  grep -q 'ort.tar.zst.part01: sha256' "$t/log" || { cat "$t/log" >&2; die "selftest: the corrupted part was not named"; }
  [ ! -d "$there/stage/ort" ] || die "selftest: unpacked despite a corrupted part"
  log "selftest ok: $n parts of <= 2 MiB, joined one call at a time, byte-identical; a corrupted part refused"
}

case "${1:-}" in
  pack) shift; cmd_pack "$@" ;;
  plan) cmd_plan ;;
  remote) cmd_remote ;;
  selftest) cmd_selftest ;;
  *) sed -n '2,25p' "$0" >&2; exit 2 ;;
esac
