#!/usr/bin/env bash
# CI entry point for models/: set up (idempotent), then run the pytest suite.
set -euo pipefail
cd "$(dirname "$0")"
./setup.sh
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
exec .venv/bin/python -m pytest -q tests "$@"
