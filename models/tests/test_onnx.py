"""Every architecture exported to ONNX: the contract holds and ONNX Runtime equals PyTorch
(batch 1 and 3, max abs diff <= 1e-4). Published architectures are checked through their
small-input variants (same cells, unroll, feedback, readout, T)."""
import json
import os
import subprocess
import sys

import pytest
import torch

from convrnn import build_model, list_archs
from convrnn.contract import validate
from convrnn.export import build_metadata, compare_ort, export_onnx, read_metadata
from convrnn.onnx_rewrites import elu_as_elementwise, input_driven

EXPORTED = [a for a in list_archs() if a.endswith("_small") or a.endswith("_fmnist") or a == "tiny_fixture"]


def test_every_published_arch_has_a_small_variant():
    archs = set(list_archs())
    published = [a for a in archs if ("shallow" in a or "intermediate" in a) and not a.endswith("_small")]
    assert len(published) == 20
    for a in published:
        assert a + "_small" in archs, a


@pytest.mark.parametrize("arch", EXPORTED)
def test_export_ort_matches_pytorch(arch, tmp_path):
    m = build_model(arch).eval()
    # non-default values for the scalars initialised to 0/1, so that they are exercised
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("memory_decay"):
                p.fill_(0.6)
            elif name.endswith("softmax_beta"):
                p.fill_(1.7)
    meta = build_metadata(m, description="UNTRAINED test export of " + arch)
    path = str(tmp_path / (arch + ".onnx"))
    rep = export_onnx(m, path, meta, compare=False)
    got = validate(path)
    assert got["layers"] == m.layer_info()
    assert got["readout"]["rule"] == m.cfg.readout.rule
    if got["readout"]["rule"] == "max_conf":
        assert abs(got["readout"]["beta"] - 1.7) < 1e-6
    if got["readout"]["rule"] == "threshold":
        assert got["readout"]["threshold"] == 0.9
    assert compare_ort(m, path, batches=(1, 3)) <= 1e-4


def test_export_cli_untrained(tmp_path, models_dir):
    out = tmp_path / "tiny.onnx"
    r = subprocess.run([sys.executable, "-m", "convrnn.export", "--arch", "tiny_fixture", "--untrained",
                        "--out", str(out)], cwd=models_dir, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout.strip().splitlines()[-1])
    assert rep["max_abs_diff"] <= 1e-4
    meta = validate(str(out))
    assert "untrained" in meta["description"].lower()


def test_committed_fixture(models_dir):
    path = os.path.join(models_dir, "..", "tests", "fixtures", "tiny_convrnn.onnx")
    meta = validate(path)
    assert "untrained" in meta["description"].lower()
    assert os.path.getsize(path) < 500_000
    assert meta["input"]["height"] == 16 and meta["time"]["steps"] == 6
    assert any(l["cell"] == "rgc" for l in meta["layers"])
    assert meta["readout"]["rule"] == "last" and len(meta["labels"]) == 10
    # the file is what the config + seed 0 produce
    m = build_model("tiny_fixture", seed=0).eval()
    assert compare_ort(m, path, batches=(1, 3)) <= 1e-4


def test_committed_feedback_fixture(models_dir):
    path = os.path.join(models_dir, "..", "tests", "fixtures", "feedback", "tiny_feedback.onnx")
    meta = validate(path)
    assert "untrained" in meta["description"].lower()
    assert os.path.getsize(path) < 500_000
    by_name = {l["name"]: l for l in meta["layers"]}
    assert by_name["conv2"]["feedback_from"] == ["conv3"]
    assert "feedback_from" not in by_name["conv1"] and "feedback_from" not in by_name["conv3"]
    m = build_model("tiny_feedback", seed=0).eval()
    assert compare_ort(m, path, batches=(1, 3)) <= 1e-4


@pytest.mark.parametrize("name", ["ff_fmnist", "simplernn_fmnist"])
def test_committed_baselines(models_dir, name):
    path = os.path.join(models_dir, "baselines", name + ".onnx")
    if not os.path.exists(path):
        pytest.skip("baseline not trained yet")
    meta = validate(path)
    assert meta["name"] == name and meta["trained_on"]["dataset"] == "fashion-mnist"


def test_full_size_rgc_intermediate(tmp_path):
    """The one full-size check: rgc_intermediate at 224 px, 1000 classes, T=17 (about 35 s)."""
    m = build_model("rgc_intermediate").eval()
    meta = build_metadata(m, description="UNTRAINED full-size test export")
    path = str(tmp_path / "rgc_intermediate.onnx")
    export_onnx(m, path, meta, compare=False)
    got = validate(path)
    assert got["time"]["steps"] == 17 and len(got["labels"]) == 1000
    assert [l["first_driven_step"] for l in got["layers"]] == list(range(10))
    assert compare_ort(m, path, batches=(1, 3)) <= 1e-4


def convs_per_image(model, frames):
    """Per Conv2d module: its calls on the whole batch in one eager forward (image-driven
    steps), and all its calls (the others run once at batch 1)."""
    driven, total = {}, {}

    def count(name):
        def hook(mod, inp, out):
            total[name] = total.get(name, 0) + 1
            if inp[0].shape[0] == frames.shape[0]:
                driven[name] = driven.get(name, 0) + 1
        return hook
    hooks = [mod.register_forward_hook(count(name)) for name, mod in model.named_modules()
             if isinstance(mod, torch.nn.Conv2d)]
    with torch.no_grad():
        model(frames)
    for h in hooks:
        h.remove()
    return driven, total


@pytest.mark.parametrize("arch", ["tiny_fixture", "rgc_intermediate_small"])
def test_ort_folds_the_image_independent_part(arch, tmp_path):
    """After ONNX Runtime's constant folding (basic level, at session creation) no weight is
    applied more often than at the image-driven steps: the steps before a layer is
    image-driven cost nothing per request. (Fewer is fine: the last step's cell state feeds
    nothing and is dropped.)"""
    import onnx
    import onnxruntime as ort

    m = build_model(arch).eval()
    driven, total = convs_per_image(m, torch.zeros(2, m.steps, *m.input_shape))
    assert sum(driven.values()) < sum(total.values())
    path = str(tmp_path / "m.onnx")
    export_onnx(m, path, build_metadata(m), compare=False)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    applied = {}
    for node in onnx.load(so.optimized_model_filepath).graph.node:
        if node.op_type == "Conv":
            applied[node.input[1]] = applied.get(node.input[1], 0) + 1
    for name, calls in total.items():
        weight = "model.%s.weight" % name
        assert applied.get(weight, 0) <= driven.get(name, 0), (weight, applied.get(weight), driven.get(name))
    assert sum(applied.values()) > 0.8 * sum(driven.values())


# simplernn_fmnist and lstm_shallow_small have layer norms, whose parameters the exporter folds
# into constants of other names.
@pytest.mark.parametrize("arch", ["tiny_fixture", "simplernn_fmnist", "lstm_shallow_small"])
def test_export_from_onnx_keeps_weights_and_metadata(tmp_path, models_dir, arch):
    first, second = tmp_path / "a.onnx", tmp_path / "b.onnx"
    m = build_model(arch, seed=3).eval()
    with torch.no_grad():  # layer norms initialised to 1 and 0 would not tell gamma from beta
        for name, p in m.named_parameters():
            if name.endswith((".gamma", ".beta")):
                p.uniform_(0.5, 1.5)
    export_onnx(m, str(first), build_metadata(m, description="seed 3", trained_on={"dataset": "x"}),
                compare=False)
    r = subprocess.run([sys.executable, "-m", "convrnn.export", "--arch", arch,
                        "--from-onnx", str(first), "--out", str(second)],
                       cwd=models_dir, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert read_metadata(str(second)) == read_metadata(str(first))
    assert compare_ort(m, str(second)) <= 1e-5   # seed 3's weights, not the CLI's seed 0


def test_elu_rewrite_computes_elu():
    """The elementwise form that replaces ONNX Runtime's slow Elu kernel, alone on values from
    far below the exponent's underflow to large positives, against PyTorch's ELU."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    x = np.concatenate([np.linspace(-120, 120, 20001), [0.0, -0.0, 1e-30, -1e-30, 1e-7, -1e-7, -1e-3],
                        np.geomspace(1e-6, 10, 2000) * -1]).astype(np.float32)
    g = helper.make_graph([helper.make_node("Elu", ["x"], ["y"], alpha=1.0)], "elu",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [len(x)])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [len(x)])])
    assert elu_as_elementwise(g) == 1
    assert [n.op_type for n in g.node] == ["Min", "Exp", "Sub", "Max"]
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(["y"], {"x": x})[0]
    want = torch.nn.functional.elu(torch.from_numpy(x)).numpy()
    assert np.array_equal(got[x > 0], x[x > 0])
    assert np.abs(got - want).max() <= 2 ** -23


def test_export_rewrites_the_image_driven_elus(tmp_path):
    """Every Elu that depends on the frames becomes the elementwise form; those that depend on
    weights alone (the steps before a layer is image-driven, folded by ONNX Runtime) stay."""
    import onnx

    m = build_model("tiny_fixture", seed=1).eval()
    path = str(tmp_path / "m.onnx")
    export_onnx(m, path, build_metadata(m), compare=False)
    graph = onnx.load(path).graph
    driven = input_driven(graph)
    assert "frames" in driven and "logits" in driven
    elus = [n for n in graph.node if n.op_type == "Elu"]
    assert elus and not any(n.input[0] in driven for n in elus)
    assert any(n.op_type == "Exp" and n.input[0] in driven for n in graph.node)
    assert compare_ort(m, path, batches=(1, 3)) <= 1e-5
