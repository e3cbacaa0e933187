#!/usr/bin/env bash
# The KServe v2, OpenAPI and metrics checks on their own: Rust tests (real server, real ONNX
# Runtime, headless chromium for /docs if installed), then the Python clients (tritonclient[http]
# compared with onnxruntime, schemathesis against /openapi.json) on the built binary.
# Needs .venv with requirements-test.txt installed (scripts/setup.sh --test).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
py=${PYTHON:-.venv/bin/python}
cargo test --test kserve --test openapi --test metrics
cargo test --lib -- api::v2 api::openapi
cargo build
"$py" -m pytest -q tests/python/test_kserve.py tests/python/test_schemathesis.py "$@"
