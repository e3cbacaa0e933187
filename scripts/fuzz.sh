#!/usr/bin/env bash
# Fuzzes the input parsers (fuzz/fuzz_targets: image, options, multipart, v2_body) for SECONDS in
# all, split evenly between the targets, with cargo-fuzz on the stable toolchain (no sanitizer;
# FUZZ_ASAN=1 adds AddressSanitizer through RUSTC_BOOTSTRAP=1, for long runs). New interesting
# inputs go to a scratch corpus; crashes to fuzz/artifacts/<target>/ (then: add the input to
# fuzz/corpus/<target>/, which tests/fuzz_corpus.rs replays on every `cargo test`, and fix).
#   FUZZ_BUILD=dev scripts/fuzz.sh 60   # the short run scripts/test.sh does (unoptimised build:
#                                       # minutes less to compile from nothing, fewer executions)
#   scripts/fuzz.sh 1200 image          # a long run of one target (optimised)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root/fuzz"
seconds=${1:-120}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(image options multipart v2_body)

if ! cargo fuzz --version >/dev/null 2>&1; then
  # About a minute on two cores; --locked pins what crates.io resolved when it was added.
  cargo install --locked cargo-fuzz --version 0.13.2
fi

sanitizer=(-s none)
if [ "${FUZZ_ASAN:-0}" = 1 ]; then
  export RUSTC_BOOTSTRAP=1
  sanitizer=(-s address)
fi
profile=(-O)
[ "${FUZZ_BUILD:-release}" = dev ] && profile=(--dev)
cargo fuzz build "${profile[@]}" "${sanitizer[@]}"

per_target=$(( seconds / ${#targets[@]} ))
[ "$per_target" -ge 1 ] || per_target=1
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t"
  echo "fuzz: $t for ${per_target}s" >&2
  # -rss_limit_mb: an input that makes the parser hold 2 GB is a finding, not a slow run;
  # -malloc_limit_mb: so is a single allocation over 256 MB; -timeout: so is a 10 s input.
  log="$scratch/$t.log"
  if ! cargo fuzz run "${profile[@]}" "${sanitizer[@]}" "$t" "$scratch/$t" "corpus/$t" -- \
    -max_total_time="$per_target" -rss_limit_mb=2048 -malloc_limit_mb=256 -timeout=10 \
    -max_len=1048576 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz: $t FAILED; the input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  grep -E "^stat::(number_of_executed_units|peak_rss_mb|new_units_added)" "$log" >&2 || true
done
