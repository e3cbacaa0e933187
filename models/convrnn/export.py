"""Export a ConvRNN to the self-describing ONNX file of docs/model-format.md.

    python -m convrnn.export --arch rgc_intermediate --untrained --out build/rgc_intermediate.onnx
    python -m convrnn.export --arch rgc_fmnist --checkpoint runs/rgc_fmnist/best.pt --out rgc_fmnist.onnx
    python -m convrnn.export --arch rgc_fmnist --from-onnx rgc_fmnist.onnx --out rgc_fmnist.onnx

``--from-onnx`` re-exports an earlier export with this exporter: the weights come from its
initializers (named after the PyTorch parameters), the metadata is kept.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

import numpy as np
import torch

from .config import ArchConfig
from .model import ConvRNN, build_model
from .onnx_rewrites import declare_static_shapes, elu_as_elementwise

FORMAT_VERSION = 1


class _ExportWrapper(torch.nn.Module):
    def __init__(self, model: ConvRNN):
        super().__init__()
        self.model = model

    def forward(self, frames):
        logits, layers = self.model(frames)
        return (logits,) + tuple(layers[n] for n in self.model.layer_names)


def build_metadata(model: ConvRNN, name=None, description=None, trained_on=None) -> dict:
    cfg = model.cfg
    inp, tm = cfg.input, cfg.time
    meta_input = {
        "channels": inp.channels, "height": inp.height, "width": inp.width,
        "mean": list(inp.mean), "std": list(inp.std),
        "resize": inp.resize, "grayscale": inp.grayscale,
    }
    if inp.resize_shorter_side:
        meta_input["resize_shorter_side"] = inp.resize_shorter_side
    readout = {"rule": cfg.readout.rule}
    if readout["rule"] == "max_conf":
        readout["beta"] = float(model.head.softmax_beta.detach())
    if readout["rule"] == "threshold":
        readout["threshold"] = float(cfg.readout.threshold)
        readout["beta"] = 1.0
    readout["first_step"] = model.readout_start()
    meta = {
        "format_version": FORMAT_VERSION,
        "name": name or cfg.name,
        "architecture": cfg.architecture,
        "description": description or cfg.description,
        "trained_on": trained_on,
        "labels": cfg.label_names(),
        "input": meta_input,
        "time": {"steps": tm.steps, "step_ms": tm.step_ms, "image_on_steps": tm.image_on_steps,
                 "blank_value": tm.blank_value},
        "layers": model.layer_info(),
        "readout": readout,
        "params": model.num_params(),
    }
    return meta


def export_onnx(model: ConvRNN, out_path: str, metadata: dict, opset: int = 17,
                check: bool = True, compare: bool = True, atol: float = 1e-4) -> dict:
    import onnx

    model = model.eval()
    T, (C, H, W) = model.steps, model.input_shape
    wrapper = _ExportWrapper(model).eval()
    # N must not be 1: the unroll broadcasts its shared (batch-1) part where N differs
    dummy = torch.randn(2, T, C, H, W)
    out_names = ["logits"] + list(model.layer_names)
    dyn = {"frames": {0: "N"}}
    dyn.update({n: {0: "N"} for n in out_names})
    os.makedirs(os.path.dirname(os.path.abspath(out_path)) or ".", exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (dummy,), out_path, input_names=["frames"],
                          output_names=out_names, dynamic_axes=dyn, opset_version=opset,
                          do_constant_folding=True, dynamo=False)
    m = onnx.load(out_path)
    shapes = {"frames": [T, C, H, W], "logits": [T, model.num_classes]}
    for lay in model.layers:
        shapes[lay.name] = [T] + list(lay.out_shape)
    declare_static_shapes(m.graph, shapes)
    elu_as_elementwise(m.graph)
    del m.metadata_props[:]
    p = m.metadata_props.add()
    p.key = "convrnn"
    p.value = json.dumps(metadata)
    m.producer_name = "convrnn-serve/models"
    m.doc_string = metadata.get("description", "")
    onnx.save(m, out_path)
    report = {"path": out_path, "bytes": os.path.getsize(out_path)}
    if check:
        onnx.checker.check_model(out_path)
    if compare:
        report["max_abs_diff"] = compare_ort(model, out_path)
        if report["max_abs_diff"] > atol:
            raise RuntimeError("ONNX Runtime differs from PyTorch: %g" % report["max_abs_diff"])
    return report


def ort_session(path, threads=2):
    """CPU session that does not spin (the CPU is shared with other work)."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # ORT's memory-reuse planner is superlinear in the node count of these fully unrolled
    # graphs (10-50 s for the 8k nodes of rgc_intermediate_small; about 1 s without it)
    so.enable_mem_reuse = False
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def compare_ort(model: ConvRNN, path: str, batches=(1, 3), seed=0) -> float:
    import onnxruntime as ort

    sess = ort_session(path)
    T, (C, H, W) = model.steps, model.input_shape
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    names = [o.name for o in sess.get_outputs()]
    for n in batches:
        x = torch.randn(n, T, C, H, W, generator=g)
        with torch.no_grad():
            logits, layers = model(x)
        ref = {"logits": logits, **layers}
        res = sess.run(None, {"frames": x.numpy()})
        for name, arr in zip(names, res):
            worst = max(worst, float(np.abs(arr - ref[name].numpy()).max()))
    return worst


def load_onnx_weights(model: ConvRNN, path: str) -> None:
    """Copy the weights of an earlier export (initializers ``model.<parameter>``) into
    ``model``; every parameter and buffer must be found."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(path).graph
    inits = {i.name: i for i in graph.initializer}
    nodes = {n.name: n for n in graph.node}
    state = model.state_dict()
    values = {}
    for k, v in state.items():
        if "model." + k in inits:
            values[k] = numpy_helper.to_array(inits["model." + k])
        else:
            folded = _folded_layer_norm_param(nodes, inits, k)
            if folded is not None and folded.size == v.numel():
                values[k] = folded.reshape(tuple(v.shape))
    missing = [k for k in state if k not in values]
    if missing:
        raise KeyError("%s lacks weights for %s" % (path, ", ".join(missing)))
    model.load_state_dict({k: torch.from_numpy(a.copy()) for k, a in values.items()})


def _folded_layer_norm_param(nodes, inits, key):
    """The exporter folds a layer norm's ``gamma.view(1, -1, 1, 1)`` (and beta's) into a constant
    of another name; it is the constant operand of the module's first call's scale (``Mul``) or
    shift (``Add_1``) node, whose scope is the module path (``layers.2/cell/ln.0``)."""
    from onnx import numpy_helper

    module, _, param = key.rpartition(".")
    op = {"gamma": "Mul", "beta": "Add_1"}.get(param)
    if op is None or not module:
        return None
    scope = ""
    for part in module.split("."):
        scope += ("." if part.isdigit() else "/") + part
    node = nodes.get("/model%s/%s" % (scope, op))
    if node is None:
        return None
    for name in node.input:
        if name in inits:
            return numpy_helper.to_array(inits[name])
    return None


def read_metadata(path: str) -> dict:
    import onnx
    m = onnx.load(path, load_external_data=False)
    for p in m.metadata_props:
        if p.key == "convrnn":
            return json.loads(p.value)
    raise KeyError("no convrnn metadata in %s" % path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", required=True, help="config name (convrnn/configs/<arch>.json) or path")
    ap.add_argument("--out", required=True)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--untrained", action="store_true", help="export freshly initialised weights")
    g.add_argument("--checkpoint", help="checkpoint written by train.py")
    g.add_argument("--from-onnx", help="an earlier export of the same config: its weights and metadata")
    ap.add_argument("--name", help="metadata name (default: the config name)")
    ap.add_argument("--description")
    ap.add_argument("--trained-on", help="JSON object for metadata trained_on")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--no-compare", action="store_true", help="skip the ORT-vs-PyTorch check")
    a = ap.parse_args(argv)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    if a.checkpoint:
        ck = torch.load(a.checkpoint, map_location="cpu", weights_only=False)
        # older checkpoints also hold the resolver's base_architecture, which nothing reads
        saved = {k: v for k, v in ck["config"].items() if k != "base_architecture"}
        model = ConvRNN(ArchConfig.from_dict(saved, source=a.checkpoint))
        model.load_state_dict(ck["model"])
        trained_on = ck.get("trained_on")
        desc = a.description or ck.get("description") or model.cfg.description
    elif a.from_onnx:
        model = build_model(a.arch, seed=None)
        load_onnx_weights(model, a.from_onnx)
        old = read_metadata(a.from_onnx)
        trained_on = old.get("trained_on")
        desc = a.description or old.get("description", "")
        a.name = a.name or old.get("name")
    else:
        model = build_model(a.arch, seed=a.seed)
        trained_on = {"dataset": None, "test_top1": None}
        desc = a.description or ("UNTRAINED (random initial weights, seed %d): %s"
                                 % (a.seed, model.cfg.description))
    if a.trained_on:
        trained_on = json.loads(a.trained_on)
    meta = build_metadata(model, name=a.name, description=desc, trained_on=trained_on)
    rep = export_onnx(model, a.out, meta, opset=a.opset, compare=not a.no_compare)
    rep["params"] = model.num_params()
    print(json.dumps(rep))


if __name__ == "__main__":
    sys.exit(main())
