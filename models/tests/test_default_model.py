"""The committed default model models/rgc_fmnist.onnx: contract, and its Fashion-MNIST test
accuracy recomputed from the ONNX file with ONNX Runtime equals the metadata's claim."""
import os

import numpy as np
import pytest

from convrnn.contract import validate
from convrnn.data import load_fashion_mnist, normalize
from convrnn.export import ort_session
from convrnn.config import FASHION_MNIST_LABELS
from convrnn.model import apply_readout, make_movie


@pytest.fixture(scope="module")
def default_path(models_dir):
    return os.path.join(models_dir, "rgc_fmnist.onnx")


def test_default_model_metadata(default_path):
    meta = validate(default_path)
    assert meta["name"] == "rgc_fmnist"
    assert meta["labels"] == list(FASHION_MNIST_LABELS)
    assert meta["input"]["channels"] == 3 and meta["input"]["grayscale"] == "replicate"
    assert meta["input"]["resize"] == "shorter-side-then-center-crop"
    assert meta["input"]["mean"] == [0.485, 0.456, 0.406] and meta["input"]["std"] == [0.229, 0.224, 0.225]
    assert any(l["cell"] == "rgc" for l in meta["layers"])
    assert os.path.getsize(default_path) < 10_000_000
    assert "untrained" not in meta["description"].lower(), "the committed default model must be the trained one"
    assert meta["trained_on"]["dataset"] == "fashion-mnist"
    assert meta["trained_on"]["test_top1"] >= 0.90


def test_default_model_accuracy_from_onnx(default_path):
    import torch
    meta = validate(default_path)
    claim = meta["trained_on"]["test_top1"]
    x_u8, y = load_fashion_mnist("test")
    sess = ort_session(default_path)
    tm = meta["time"]
    torch.set_num_threads(2)
    correct = 0
    for i in range(0, len(y), 1000):
        frames = make_movie(normalize(x_u8[i:i + 1000]), tm["steps"], tm["image_on_steps"], tm["blank_value"])
        logits = sess.run(["logits"], {"frames": frames.numpy()})[0]
        ro = meta["readout"]
        out = apply_readout(torch.from_numpy(logits), ro["rule"], ro.get("first_step", 0),
                            beta=ro.get("beta", 1.0), threshold=ro.get("threshold", 0.9))
        correct += int((out.argmax(1).numpy() == y[i:i + 1000]).sum())
    acc = correct / len(y)
    assert abs(acc - claim) <= 0.001, (acc, claim)
    assert acc >= 0.90
