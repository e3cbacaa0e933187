"""The committed default model served end to end: real Fashion-MNIST test images sent as PNGs
over HTTP are classified as ONNX Runtime classifies the same pixels directly, and accurately."""

import gzip
import io
import json
import pathlib
import urllib.request

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from conftest import ROOT, Server

DATA = pathlib.Path("/usr/share/datasets/fashion-mnist")
N = 400


def load_test_set(n):
    images = np.frombuffer(gzip.open(DATA / "t10k-images-idx3-ubyte.gz").read(), np.uint8, offset=16)
    labels = np.frombuffer(gzip.open(DATA / "t10k-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)
    return images.reshape(-1, 28, 28)[:n], labels[:n]


def multipart(pngs):
    boundary = "convrnn-test-boundary"
    body = io.BytesIO()
    for i, data in enumerate(pngs):
        body.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{i}.png\"\r\n"
                   "Content-Type: image/png\r\n\r\n".encode())
        body.write(data)
        body.write(b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    return body.getvalue(), f"multipart/form-data; boundary={boundary}"


@pytest.fixture(scope="module")
def default_server():
    s = Server(model_dir=ROOT / "models")
    yield s
    s.stop()


def test_default_model_over_http_matches_onnxruntime(default_server):
    if not (DATA / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("Debian package dataset-fashion-mnist is not installed")
    images, labels = load_test_set(N)
    meta = default_server.get_json("/v1/models/rgc_fmnist")
    t, on = meta["time"]["steps"], meta["time"]["image_on_steps"]
    mean = np.array(meta["input"]["mean"], np.float32)[:, None, None]
    std = np.array(meta["input"]["std"], np.float32)[:, None, None]

    # Reference: the same pixels through ONNX Runtime directly (grayscale replicated, normalised,
    # shown for image_on_steps then blank), the readout rule `last`.
    x = np.repeat(images[:, None].astype(np.float32) / 255.0, 3, axis=1)
    x = (x - mean) / std
    frames = np.full((N, t, 3, 28, 28), meta["time"]["blank_value"], np.float32)
    frames[:, :on] = x[:, None]
    session = ort.InferenceSession(str(ROOT / "models" / "rgc_fmnist.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"frames": frames})[0]
    reference = logits[:, -1].argmax(1)

    served = []
    for start in range(0, N, 50):
        pngs = []
        for img in images[start:start + 50]:
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, "PNG")
            pngs.append(buf.getvalue())
        body, ctype = multipart(pngs)
        req = urllib.request.Request(default_server.base + "/v1/models/rgc_fmnist/classify?top_k=1",
                                     data=body, headers={"Content-Type": ctype})
        with urllib.request.urlopen(req, timeout=60) as r:
            results = json.load(r)["results"]
        served.extend(res["top_k"][0]["index"] for res in results)
    served = np.array(served)
    assert len(served) == N
    agreement = (served == reference).mean()
    accuracy = (served == labels).mean()
    assert agreement == 1.0, f"server and ONNX Runtime disagree on {(served != reference).sum()} images"
    assert accuracy >= 0.88, f"accuracy over HTTP {accuracy:.3f}"
