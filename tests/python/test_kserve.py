"""The KServe v2 API with the reference client, tritonclient[http]: health, metadata, and
inference with JSON and with binary tensors (frames FP32 and encoded images BYTES), outputs
compared with ONNX Runtime's own run of the same file on the same frames.

Run: `cargo build && .venv/bin/python -m pytest tests/python/test_kserve.py`
(or scripts/test-kserve.sh).
"""

import base64
import io
import json

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
from PIL import Image
from tritonclient.utils import InferenceServerException

from conftest import MODEL, MODEL_FILE

TOL = 1e-5


@pytest.fixture(scope="module")
def client(server):
    c = httpclient.InferenceServerClient(url=server.url)
    yield c
    c.close()


@pytest.fixture(scope="module")
def session():
    return ort.InferenceSession(str(MODEL_FILE), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def meta(session):
    return json.loads(session.get_modelmeta().custom_metadata_map["convrnn"])


def reference(session, frames):
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"frames": frames})))


def random_frames(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 6, 3, 16, 16)).astype(np.float32)


def png_16x16(seed):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format="PNG")
    return pixels, buf.getvalue()


def default_movie(pixels, meta):
    """The server's preprocessing of a model-sized RGB image (no resize), in float32, shown
    with the default presentation: the image for image_on_steps, then blank frames."""
    mean = np.array(meta["input"]["mean"], np.float32)[:, None, None]
    std = np.array(meta["input"]["std"], np.float32)[:, None, None]
    chw = pixels.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)
    frame = (chw - mean) / std
    steps, on = meta["time"]["steps"], meta["time"]["image_on_steps"]
    movie = np.full((steps, 3, 16, 16), meta["time"]["blank_value"], np.float32)
    movie[:on] = frame
    return movie


def test_health(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert client.is_model_ready(MODEL, model_version="1")
    assert not client.is_model_ready("no_such_model")


def test_metadata(client, session):
    server = client.get_server_metadata()
    assert server["name"] == "convrnn-serve"
    assert "binary_tensor_data" in server["extensions"]
    m = client.get_model_metadata(MODEL)
    assert m["name"] == MODEL
    assert m["versions"] == ["1"]
    inputs = {i["name"]: i for i in m["inputs"]}
    assert inputs["frames"] == {"name": "frames", "datatype": "FP32", "shape": [-1, 6, 3, 16, 16]}
    assert inputs["images"] == {"name": "images", "datatype": "BYTES", "shape": [-1]}
    outputs = {o["name"]: o["shape"] for o in m["outputs"]}
    for o in session.get_outputs():
        assert outputs[o.name] == [-1, *o.shape[1:]], o.name
    assert client.get_model_metadata(MODEL, model_version="1") == m
    with pytest.raises(InferenceServerException):
        client.get_model_metadata(MODEL, model_version="2")
    with pytest.raises(InferenceServerException):
        client.get_model_metadata("no_such_model")


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_frames(client, session, binary):
    frames = random_frames(3, seed=1)
    want = reference(session, frames)
    inp = httpclient.InferInput("frames", list(frames.shape), "FP32")
    inp.set_data_from_numpy(frames, binary_data=binary)
    outputs = [
        httpclient.InferRequestedOutput("logits", binary_data=binary),
        httpclient.InferRequestedOutput("conv2", binary_data=binary),
    ]
    result = client.infer(MODEL, [inp], outputs=outputs, request_id="frames-1")
    assert result.get_response()["id"] == "frames-1"
    names = [o["name"] for o in result.get_response()["outputs"]]
    assert names == ["logits", "conv2"]
    for name in names:
        got = result.as_numpy(name)
        assert got.dtype == np.float32
        assert got.shape == want[name].shape, name
        assert np.abs(got - want[name]).max() <= TOL, name


def test_infer_frames_all_outputs_binary(client, session):
    """No outputs requested: the client asks for binary_data_output and gets every output."""
    frames = random_frames(2, seed=2)
    want = reference(session, frames)
    inp = httpclient.InferInput("frames", list(frames.shape), "FP32")
    inp.set_data_from_numpy(frames, binary_data=True)
    result = client.infer(MODEL, [inp], model_version="1")
    names = {o["name"] for o in result.get_response()["outputs"]}
    assert names == set(want)
    for name, value in want.items():
        got = result.as_numpy(name)
        assert got.shape == value.shape, name
        assert np.abs(got - value).max() <= TOL, name


@pytest.mark.parametrize("binary", [False, True], ids=["json-base64", "binary"])
def test_infer_images(client, session, meta, binary):
    images = [png_16x16(seed) for seed in (3, 4)]
    frames = np.stack([default_movie(pixels, meta) for pixels, _ in images])
    want = reference(session, frames)
    if binary:
        data = np.array([encoded for _, encoded in images], dtype=np.object_)
    else:
        # JSON cannot carry raw bytes: send base64 strings (documented in docs and OpenAPI).
        data = np.array(
            [base64.b64encode(encoded).decode() for _, encoded in images], dtype=np.object_
        )
    inp = httpclient.InferInput("images", [len(images)], "BYTES")
    inp.set_data_from_numpy(data, binary_data=binary)
    outputs = [
        httpclient.InferRequestedOutput("logits", binary_data=binary),
        httpclient.InferRequestedOutput("conv1", binary_data=not binary),
    ]
    result = client.infer(MODEL, [inp], outputs=outputs)
    for name in ("logits", "conv1"):
        got = result.as_numpy(name)
        assert got.shape == want[name].shape, name
        assert np.abs(got - want[name]).max() <= TOL, name


def test_errors_reach_the_client(client):
    bad = httpclient.InferInput("frames", [1, 5, 3, 16, 16], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 5, 3, 16, 16), np.float32))
    with pytest.raises(InferenceServerException) as e:
        client.infer(MODEL, [bad])
    assert "shape" in str(e.value)
    frames = random_frames(1)
    inp = httpclient.InferInput("frames", list(frames.shape), "FP32")
    inp.set_data_from_numpy(frames)
    with pytest.raises(InferenceServerException) as e:
        client.infer(MODEL, [inp], outputs=[httpclient.InferRequestedOutput("conv9")])
    assert "conv9" in str(e.value)
    with pytest.raises(InferenceServerException):
        client.infer("no_such_model", [inp])
