"""Property-based API test: schemathesis generates requests from the served /openapi.json and
checks every response (no 5xx, status codes, content types, headers and bodies as documented,
invalid input rejected, undeclared methods 405).

`positive_data_acceptance` is left out: it expects every schema-valid request to succeed, but
whether a base64 string is a decodable image, or a layer name exists in the served model, is
not something JSON Schema can state, so schema-valid requests are rightly answered 400.

Run: `cargo build && .venv/bin/python -m pytest tests/python/test_schemathesis.py`
Tune with SCHEMATHESIS_MAX_EXAMPLES (default 60) and SCHEMATHESIS_SEED (default 1).
"""

import os
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent


def schemathesis_cli() -> list[str]:
    exe = pathlib.Path(sys.executable).parent / "schemathesis"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "schemathesis.cli"]


def test_schemathesis_finds_nothing(server, tmp_path):
    cmd = [
        *schemathesis_cli(),
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "run",
        f"{server.base}/openapi.json",
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance",
        "--max-examples",
        os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "60"),
        "--seed",
        os.environ.get("SCHEMATHESIS_SEED", "1"),
        # One worker: with two threads CPython 3.11's compile() can fail with "AST constructor
        # recursion depth mismatch" inside schemathesis (a thread-safety bug of the interpreter,
        # seen here as a flaky Runtime Error, not a server fault).
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
    ]
    result = subprocess.run(
        cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-20000:]
    assert " passed" in output, output[-5000:]
