"""The OpenAPI document works with a standard generator: `openapi-python-client` (pinned in
requirements-test.txt) generates a client from the served /openapi.json, offline, without
warnings, and its `classify` answers a PNG sent as a raw body, as multipart and as JSON exactly
as a plain HTTP request does."""

import base64
import importlib
import io
import json
import os
import pathlib
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
from PIL import Image

from conftest import MODEL

PACKAGE = "convrnn_generated_client"


def generator() -> list[str]:
    exe = pathlib.Path(sys.executable).parent / "openapi-python-client"
    if not exe.exists():
        pytest.fail("openapi-python-client is not installed: scripts/setup.sh --test")
    return [str(exe)]


@pytest.fixture(scope="module")
def generated(server, tmp_path_factory):
    root = tmp_path_factory.mktemp("generated")
    spec = root / "openapi.json"
    with urllib.request.urlopen(server.base + "/openapi.json", timeout=10) as r:
        spec.write_bytes(r.read())
    out = root / PACKAGE
    # The one non-JSON answer, preprocess's PNG, is bytes to the client, as the generator's
    # documented override says.
    config = root / "config.yaml"
    config.write_text('content_type_overrides:\n  "image/png": "application/octet-stream"\n')
    # The generator formats its output with ruff, installed next to it in the environment.
    env = {**os.environ, "PATH": f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(
        [*generator(), "generate", "--path", str(spec), "--output-path", str(out), "--meta", "none",
         "--config", str(config)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Warning" not in output and "Unsupported" not in output, output
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


@pytest.fixture(scope="module")
def png() -> bytes:
    rng = np.random.default_rng(3)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (18, 22, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def plain_http(server, png: bytes) -> dict:
    req = urllib.request.Request(
        f"{server.base}/v1/models/{MODEL}/classify?top_k=3&per_timestep=true",
        data=png,
        headers={"Content-Type": "image/png"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def assert_same(got: dict, want: dict, kind: str) -> None:
    """Same model, labels, classes and readout step; probabilities equal to float32 rounding."""
    assert got["model"] == want["model"], kind
    assert len(got["results"]) == len(want["results"]) == 1, kind
    g, w = got["results"][0], want["results"][0]
    assert [(c["index"], c["label"]) for c in g["top_k"]] == [(c["index"], c["label"]) for c in w["top_k"]], kind
    assert g["readout_step"] == w["readout_step"], kind
    np.testing.assert_allclose([c["probability"] for c in g["top_k"]], [c["probability"] for c in w["top_k"]], rtol=1e-6)
    np.testing.assert_allclose(g["per_timestep"], w["per_timestep"], rtol=1e-6, atol=1e-9)


def test_generated_client_classifies_raw_multipart_and_json(server, generated, png):
    classify = importlib.import_module(f"{PACKAGE}.api.inference.classify")
    models = importlib.import_module(f"{PACKAGE}.models")
    types = importlib.import_module(f"{PACKAGE}.types")
    expected = plain_http(server, png)
    client = generated.Client(base_url=server.base, raise_on_unexpected_status=True)
    bodies = {
        "raw": types.File(payload=io.BytesIO(png), file_name="x.png", mime_type="image/png"),
        "multipart": models.MultipartImages(
            images=[types.File(payload=io.BytesIO(png), file_name="x.png", mime_type="image/png")]
        ),
        "json": models.JsonImages(images=[base64.b64encode(png).decode()]),
    }
    for kind, body in bodies.items():
        response = classify.sync_detailed(MODEL, client=client, body=body, top_k=3, per_timestep=True)
        assert response.status_code == 200, (kind, response.content)
        assert isinstance(response.parsed, models.ClassifyResponse), kind
        assert_same(response.parsed.to_dict(), expected, kind)
    # The typed error answer comes through as well.
    bad = classify.sync_detailed(MODEL, client=client, body=models.JsonImages(images=["bm90IGFuIGltYWdl"]))
    assert bad.status_code == 400 and isinstance(bad.parsed, models.ErrorBody)
    assert bad.parsed.code == "invalid_image"


def test_generated_client_lists_models(server, generated):
    list_models = importlib.import_module(f"{PACKAGE}.api.models.list_models")
    client = generated.Client(base_url=server.base, raise_on_unexpected_status=True)
    listed = list_models.sync(client=client)
    assert [m.name for m in listed.models] == [MODEL]
    assert listed.models[0].visual_degrees == 8.0
