"""Checks an ONNX file against the model contract of docs/model-format.md."""
from __future__ import annotations

import json

REQUIRED = ["format_version", "name", "architecture", "description", "trained_on", "labels",
            "input", "time", "layers", "readout"]


def _static_dims(vi):
    dims = vi.type.tensor_type.shape.dim
    return [d.dim_param if d.HasField("dim_param") else (d.dim_value if d.HasField("dim_value") else None)
            for d in dims]


def validate(path_or_model) -> dict:
    """Raise AssertionError on any violation; return the metadata."""
    import onnx
    m = onnx.load(path_or_model) if isinstance(path_or_model, str) else path_or_model
    onnx.checker.check_model(m)
    assert any(o.domain in ("", "ai.onnx") and o.version >= 17 for o in m.opset_import), "opset >= 17"
    props = {p.key: p.value for p in m.metadata_props}
    assert "convrnn" in props, "metadata_props has no 'convrnn' key"
    meta = json.loads(props["convrnn"])
    for k in REQUIRED:
        assert k in meta, "metadata lacks %r" % k
    assert meta["format_version"] == 1
    assert isinstance(meta["name"], str) and meta["name"]
    assert isinstance(meta["description"], str) and meta["description"]
    assert meta["trained_on"] is None or isinstance(meta["trained_on"], dict)
    # Optional: degrees of visual angle the input spans (the server reports 8 when absent).
    vd = meta.get("visual_degrees")
    assert vd is None or (isinstance(vd, (int, float)) and vd > 0), "visual_degrees must be positive"
    inp, tm, ro = meta["input"], meta["time"], meta["readout"]
    for k in ("channels", "height", "width", "mean", "std", "resize", "grayscale"):
        assert k in inp, "input lacks %r" % k
    assert len(inp["mean"]) == inp["channels"] == len(inp["std"])
    for k in ("steps", "step_ms", "image_on_steps", "blank_value"):
        assert k in tm, "time lacks %r" % k
    assert tm["step_ms"] > 0 and 0 < tm["image_on_steps"] <= tm["steps"]
    assert ro["rule"] in ("last", "max_conf", "threshold")
    if ro["rule"] == "max_conf":
        assert isinstance(ro.get("beta"), (int, float))
    if ro["rule"] == "threshold":
        assert isinstance(ro.get("threshold"), (int, float))
    labels = meta["labels"]
    assert isinstance(labels, list) and all(isinstance(s, str) for s in labels)

    N, T, C, H, W = "N", tm["steps"], inp["channels"], inp["height"], inp["width"]
    ins = {i.name: i for i in m.graph.input}
    init = {i.name for i in m.graph.initializer}
    real_inputs = [n for n in ins if n not in init]
    assert real_inputs == ["frames"], real_inputs
    assert ins["frames"].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert _static_dims(ins["frames"]) == [N, T, C, H, W], _static_dims(ins["frames"])
    outs = {o.name: o for o in m.graph.output}
    assert m.graph.output[0].name == "logits"
    assert _static_dims(outs["logits"]) == [N, T, len(labels)], _static_dims(outs["logits"])
    names = []
    prev_driven = -1
    for layer in meta["layers"]:
        for k in ("name", "channels", "height", "width", "first_driven_step", "cell"):
            assert k in layer, "layer lacks %r" % k
        n = layer["name"]
        names.append(n)
        assert n in outs, "no output for layer %s" % n
        assert outs[n].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert _static_dims(outs[n]) == [N, T, layer["channels"], layer["height"], layer["width"]], n
        assert layer["first_driven_step"] == prev_driven + 1, "first_driven_step of %s" % n
        prev_driven = layer["first_driven_step"]
    assert set(outs) == {"logits", *names}, set(outs)
    return meta
