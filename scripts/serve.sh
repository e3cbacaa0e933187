#!/usr/bin/env bash
# Fetch what is missing, build, and serve the committed default model.
#   scripts/serve.sh [extra convrnn-serve serve flags, e.g. --listen 0.0.0.0:8080]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
scripts/setup.sh
cargo build --release --locked
exec target/release/convrnn-serve serve --model-dir models "$@"
