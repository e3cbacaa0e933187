#!/usr/bin/env bash
# Every test of the project, from a clean clone: set-up, lint, the Rust tests (real server, real
# ONNX Runtime), the models' tests (PyTorch vs ONNX Runtime, unroll semantics, cells, accuracy of
# the committed model), the Python client tests, and the deploy checks.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
step() { printf '\n===== %s (%ss)\n' "$*" "$SECONDS" >&2; }

step "set-up"
scripts/setup.sh --test

step "rust: fmt, clippy"
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings

step "rust: the CUDA path compiles"
cargo check --locked --features cuda

step "rust: tests"
cargo test --locked

step "rust: fuzz the input parsers (short run; FUZZ_SECONDS=0 skips it)"
# The corpus replay runs in `cargo test` either way (tests/fuzz_corpus.rs).
if [ "${FUZZ_SECONDS:-60}" != 0 ]; then
  FUZZ_BUILD=dev scripts/fuzz.sh "${FUZZ_SECONDS:-60}"
fi

if [ -d tests/python ]; then
  step "python: client tests against the server"
  # The binary `cargo test` just built, not a possibly stale release build.
  CONVRNN_SERVE_BIN=target/debug/convrnn-serve .venv/bin/python -m pytest -q tests/python
fi

step "models: set-up and tests"
models/run_tests.sh

step "deploy: static checks"
scripts/check-deploy.sh

step "dependencies: cargo deny (licenses, bans, sources, advisories; offline snapshot)"
scripts/check-deps.sh

step "gpu staging: split, join and verify round trip (no GPU needed)"
scripts/gpu-stage.sh selftest

step "deploy: host equivalent of the Docker build and run"
scripts/deploy-smoke.sh

step "all tests passed"
