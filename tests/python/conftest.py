"""Shared fixtures for the Python tests: a convrnn-serve process on a free port with the test
fixture model, using the ONNX Runtime library of the Python environment that runs the tests.

The binary is $CONVRNN_SERVE_BIN, else target/release/convrnn-serve, else
target/debug/convrnn-serve (build it first: `cargo build`).
"""

import json
import os
import pathlib
import socket
import subprocess
import time
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
MODEL = "tiny_convrnn"
MODEL_FILE = FIXTURES / "tiny_convrnn.onnx"


def server_binary() -> pathlib.Path:
    explicit = os.environ.get("CONVRNN_SERVE_BIN")
    if explicit:
        return pathlib.Path(explicit)
    # The newest build: a release binary left from an earlier benchmark may predate the code.
    built = [p for p in (ROOT / "target" / profile / "convrnn-serve" for profile in ("release", "debug"))
             if p.exists()]
    if built:
        return max(built, key=lambda p: p.stat().st_mtime)
    pytest.fail("no convrnn-serve binary: run `cargo build` or set CONVRNN_SERVE_BIN")


def ort_library() -> str:
    import onnxruntime

    capi = pathlib.Path(onnxruntime.__file__).parent / "capi"
    libs = sorted(capi.glob("libonnxruntime.so*"))
    if not libs:
        pytest.fail(f"no libonnxruntime.so in {capi}")
    return str(libs[0])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, *extra_args: str, model_dir: pathlib.Path = FIXTURES):
        self.port = free_port()
        self.url = f"127.0.0.1:{self.port}"
        self.base = f"http://{self.url}"
        self.log = open(ROOT / "target" / f"pytest-server-{self.port}.log", "wb")
        self.proc = subprocess.Popen(
            [
                str(server_binary()),
                "serve",
                "--model-dir",
                str(model_dir),
                "--listen",
                self.url,
                "--devices",
                "cpu",
                "--ort-library",
                ort_library(),
                *extra_args,
            ],
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log.name}")
            try:
                with urllib.request.urlopen(self.base + "/v2/health/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready in {timeout} s; see {self.log.name}")

    def get_json(self, path: str, api_key: str | None = None):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        req = urllib.request.Request(self.base + path, headers=headers)
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="session")
def server():
    s = Server()
    yield s
    s.stop()
