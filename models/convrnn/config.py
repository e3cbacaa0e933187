"""Architecture configs: the typed form of ``convrnn/configs/*.json`` and the registry of
those files.

A file is parsed once into frozen dataclasses; every default is applied here and nowhere
else, and an unknown key or a bad value is refused with the file and the field named. A file
may extend another: ``base`` names it, top-level objects are merged into the base's,
``layer_overrides`` maps a layer name to an object merged into that layer, and
``channel_scale`` scales every channel count."""
from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

from .cells import CELLS
from .reference_weights import ARCHS as _REFERENCE_ARCHS

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "configs")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FASHION_MNIST_LABELS = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                        "Shirt", "Sneaker", "Bag", "Ankle boot")
LABEL_SETS = ("fashion-mnist", "imagenet")
RESIZE_POLICIES = ("shorter-side-then-center-crop", "stretch")  # as the server accepts
GRAYSCALE_POLICIES = ("replicate",)
ACTIVATIONS = (None, "none", "elu", "relu")
READOUT_RULES = ("last", "max_conf", "threshold")
HEAD_TYPES = ("conv_gap", "gap_fc")
# the architectures the authors released checkpoints of; listed in reference_weights because
# the TensorFlow reference script loads that file alone, without this package
RELEASED_ARCHS = tuple(_REFERENCE_ARCHS)
# cell constructor arguments the model fills in from the graph, never from a config
_CELL_STRUCTURAL = {"self", "in_channels", "res_channels", "fb_channels", "spatial"}
# keys only a file has: they are resolved before the config is parsed
_FILE_ONLY = ("base", "layer_overrides", "channel_scale")


class ConfigError(ValueError):
    """A config that cannot be built; the message names the file and the field."""


# ----------------------------------------------------------------------------- types
@dataclass(frozen=True)
class InputConfig:
    channels: int
    height: int
    width: int
    mean: Tuple[float, ...] = IMAGENET_MEAN
    std: Tuple[float, ...] = IMAGENET_STD
    resize: str = RESIZE_POLICIES[0]
    grayscale: str = GRAYSCALE_POLICIES[0]
    resize_shorter_side: Optional[int] = None


@dataclass(frozen=True)
class TimeConfig:
    steps: int
    image_on_steps: int
    step_ms: Union[int, float] = 10
    blank_value: float = 0.5


@dataclass(frozen=True)
class ReadoutConfig:
    rule: str = "last"
    beta: float = 1.0  # max_conf: the initial value of the learned softmax beta
    threshold: float = 0.9
    first_step: Optional[int] = None  # None: the step the logits are first image-driven


@dataclass(frozen=True)
class ConvConfig:
    """The pre-conv of a layer (k x k, TF SAME padding, then the activation)."""
    out: int
    k: int
    stride: int = 1
    bias: bool = True
    act: Optional[str] = None


@dataclass(frozen=True)
class PostConfig:
    """The post-conv of a layer, optionally with a residual from the layer's input."""
    out: int
    k: int
    act: Optional[str] = None
    residual: bool = False


@dataclass(frozen=True)
class CellConfig:
    """A cell type of ``cells.CELLS`` and the constructor arguments the file sets (the
    cell's own defaults stand for the rest)."""
    type: str = "feedforward"
    params: Tuple[Tuple[str, Any], ...] = ()

    def kwargs(self) -> Dict[str, Any]:
        return dict(self.params)


@dataclass(frozen=True)
class LayerConfig:
    name: str
    pre: Optional[ConvConfig] = None
    cell: CellConfig = field(default_factory=CellConfig)
    post: Optional[PostConfig] = None
    pool: bool = False
    region: Optional[str] = None


@dataclass(frozen=True)
class HeadConfig:
    type: str
    k: int = 2  # conv_gap only


@dataclass(frozen=True)
class ArchConfig:
    name: str
    architecture: str
    description: str
    input: InputConfig
    num_classes: int
    time: TimeConfig
    layers: Tuple[LayerConfig, ...]
    head: HeadConfig
    labels: Union[str, Tuple[str, ...]] = "fashion-mnist"
    readout: ReadoutConfig = field(default_factory=ReadoutConfig)
    feedback: Tuple[Tuple[str, str], ...] = ()  # (source, target): target reads source at t-1

    @property
    def layer_names(self) -> List[str]:
        return [l.name for l in self.layers]

    def label_names(self) -> List[str]:
        if isinstance(self.labels, tuple):
            return list(self.labels)
        if self.labels == "fashion-mnist":
            return list(FASHION_MNIST_LABELS)
        # class names are not bundled; the server may override labels with a sidecar
        return ["imagenet_class_%d" % i for i in range(self.num_classes)]

    def to_dict(self) -> dict:
        """The config as JSON-shaped data with every default filled in;
        ``ArchConfig.from_dict(c.to_dict()) == c``."""
        def plain(v):
            if dataclasses.is_dataclass(v):
                if isinstance(v, CellConfig):
                    return {"type": v.type, **{k: plain(x) for k, x in v.params}}
                return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
            if isinstance(v, (tuple, list)):
                return [plain(x) for x in v]
            return v
        out = plain(self)
        # the keys a file may not set for this rule or head type
        if self.readout.rule != "max_conf":
            del out["readout"]["beta"]
        if self.readout.rule != "threshold":
            del out["readout"]["threshold"]
        if self.head.type != "conv_gap":
            del out["head"]["k"]
        return out

    @classmethod
    def from_dict(cls, data: dict, source: str = "<config>") -> "ArchConfig":
        return _parse_arch(data, source)


# ----------------------------------------------------------------------------- parsing
class _Fields:
    """Reads one JSON object: every key must be known, required ones present."""

    def __init__(self, data, where: str, source: str):
        self.source, self.where = source, where
        if not isinstance(data, dict):
            self.fail("", "must be an object, not %s" % json.dumps(data))
        self.data = data

    def fail(self, key, problem):
        path = "%s.%s" % (self.where, key) if self.where and key else (self.where or key)
        raise ConfigError("%s: %s: %s" % (self.source, path or "(top level)", problem))

    def check_keys(self, allowed, required=()):
        for k in self.data:
            if k not in allowed:
                self.fail(k, "unknown key (known: %s)" % ", ".join(sorted(allowed)))
        for k in required:
            if k not in self.data:
                self.fail(k, "missing")

    def get(self, key, default, check=None, problem="bad value"):
        v = self.data.get(key, default)
        if check is not None and key in self.data and not check(v):
            self.fail(key, "%s: %s" % (problem, json.dumps(v)))
        return v

    def sub(self, key):
        return "%s.%s" % (self.where, key) if self.where else key


def _int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _pos_int(v):
    return _int(v) and v > 0


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _str(v):
    return isinstance(v, str) and bool(v)


def _bool(v):
    return isinstance(v, bool)


def _one_of(options):
    options = tuple(options)
    return lambda v: any(v == o and type(v) is type(o) for o in options)


def _parse_input(data, source) -> InputConfig:
    f = _Fields(data, "input", source)
    names = [x.name for x in dataclasses.fields(InputConfig)]
    f.check_keys(names, required=("channels", "height", "width"))
    channels = f.get("channels", None, _pos_int, "a positive integer")
    numbers = (lambda v: isinstance(v, list) and len(v) == channels and all(_number(x) for x in v))
    return InputConfig(
        channels=channels,
        height=f.get("height", None, _pos_int, "a positive integer"),
        width=f.get("width", None, _pos_int, "a positive integer"),
        mean=tuple(f.get("mean", IMAGENET_MEAN, numbers, "one number per channel")),
        std=tuple(f.get("std", IMAGENET_STD, numbers, "one number per channel")),
        resize=f.get("resize", InputConfig.resize, _one_of(RESIZE_POLICIES),
                     "one of %s" % ", ".join(RESIZE_POLICIES)),
        grayscale=f.get("grayscale", InputConfig.grayscale, _one_of(GRAYSCALE_POLICIES),
                        "one of %s" % ", ".join(GRAYSCALE_POLICIES)),
        resize_shorter_side=f.get("resize_shorter_side", None,
                                  lambda v: v is None or _pos_int(v), "a positive integer or null"))


def _parse_time(data, source) -> TimeConfig:
    f = _Fields(data, "time", source)
    f.check_keys([x.name for x in dataclasses.fields(TimeConfig)],
                 required=("steps", "image_on_steps"))
    steps = f.get("steps", None, _pos_int, "a positive integer")
    return TimeConfig(
        steps=steps,
        image_on_steps=f.get("image_on_steps", None, lambda v: _pos_int(v) and v <= steps,
                             "an integer in [1, steps]"),
        step_ms=f.get("step_ms", TimeConfig.step_ms, lambda v: _number(v) and v > 0,
                      "a positive number"),
        blank_value=f.get("blank_value", TimeConfig.blank_value, _number, "a number"))


def _parse_readout(data, source) -> ReadoutConfig:
    f = _Fields(data, "readout", source)
    f.check_keys([x.name for x in dataclasses.fields(ReadoutConfig)])
    rule = f.get("rule", ReadoutConfig.rule, _one_of(READOUT_RULES),
                 "one of %s" % ", ".join(READOUT_RULES))
    if "beta" in f.data and rule != "max_conf":
        f.fail("beta", "only the max_conf rule has a learned beta")
    if "threshold" in f.data and rule != "threshold":
        f.fail("threshold", "only the threshold rule has a threshold")
    return ReadoutConfig(
        rule=rule,
        beta=f.get("beta", ReadoutConfig.beta, _number, "a number"),
        threshold=f.get("threshold", ReadoutConfig.threshold,
                        lambda v: _number(v) and 0 < v <= 1, "a number in (0, 1]"),
        first_step=f.get("first_step", None, lambda v: v is None or (_int(v) and v >= 0),
                         "a non-negative integer or null"))


def _parse_conv(data, where, source, cls):
    f = _Fields(data, where, source)
    f.check_keys([x.name for x in dataclasses.fields(cls)], required=("out", "k"))
    kw = dict(out=f.get("out", None, _pos_int, "a positive integer"),
              k=f.get("k", None, _pos_int, "a positive integer"),
              act=f.get("act", None, _one_of(ACTIVATIONS),
                        "one of %s" % ", ".join(json.dumps(a) for a in ACTIVATIONS)))
    if cls is ConvConfig:
        kw.update(stride=f.get("stride", 1, _pos_int, "a positive integer"),
                  bias=f.get("bias", True, _bool, "true or false"))
    else:
        kw.update(residual=f.get("residual", False, _bool, "true or false"))
    return cls(**kw)


@functools.lru_cache(maxsize=None)
def cell_parameters(kind: str) -> Dict[str, Any]:
    """The arguments a config may set for cell ``kind``, with the cell's defaults."""
    sig = inspect.signature(CELLS[kind].__init__)
    return {n: p.default for n, p in sig.parameters.items()
            if n not in _CELL_STRUCTURAL and p.kind is p.POSITIONAL_OR_KEYWORD}


def _like(default):
    """A value check with the type of a cell argument's default."""
    if isinstance(default, bool):
        return _bool
    if isinstance(default, int) or default is None:  # None: "out", a channel count
        return _pos_int
    if isinstance(default, float):
        return _number
    return lambda v: True


def _parse_cell(data, where, source) -> CellConfig:
    f = _Fields(data, where, source)
    kind = f.get("type", "feedforward", _one_of(CELLS), "one of %s" % ", ".join(sorted(CELLS)))
    allowed = cell_parameters(kind)
    for k in f.data:
        if k != "type" and k not in allowed:
            f.fail(k, "unknown key for cell type %r (known: %s)"
                   % (kind, ", ".join(["type"] + sorted(allowed))))
    params = tuple((k, f.get(k, None, _like(allowed[k]), "a value like %r" % (allowed[k],)))
                   for k in f.data if k != "type")
    return CellConfig(type=kind, params=params)


def _parse_layer(data, i, source) -> LayerConfig:
    f = _Fields(data, "layers[%d]" % i, source)
    f.check_keys([x.name for x in dataclasses.fields(LayerConfig)], required=("name",))
    pre, post = f.data.get("pre"), f.data.get("post")
    return LayerConfig(
        name=f.get("name", None, _str, "a non-empty string"),
        pre=None if pre is None else _parse_conv(pre, f.sub("pre"), source, ConvConfig),
        cell=_parse_cell(f.data.get("cell", {}), f.sub("cell"), source),
        post=None if post is None else _parse_conv(post, f.sub("post"), source, PostConfig),
        pool=f.get("pool", False, _bool, "true or false"),
        region=f.get("region", None, lambda v: v is None or _str(v), "a non-empty string or null"))


def _parse_head(data, source) -> HeadConfig:
    f = _Fields(data, "head", source)
    f.check_keys(["type", "k"], required=("type",))
    kind = f.get("type", None, _one_of(HEAD_TYPES), "one of %s" % ", ".join(HEAD_TYPES))
    if "k" in f.data and kind != "conv_gap":
        f.fail("k", "only a conv_gap head has a kernel size")
    return HeadConfig(type=kind, k=f.get("k", HeadConfig.k, _pos_int, "a positive integer"))


def _parse_arch(data, source) -> ArchConfig:
    f = _Fields(data, "", source)
    f.check_keys([x.name for x in dataclasses.fields(ArchConfig)],
                 required=("name", "description", "input", "num_classes", "time", "layers",
                           "head"))
    name = f.get("name", None, _str, "a non-empty string")
    num_classes = f.get("num_classes", None, _pos_int, "a positive integer")
    labels = f.get("labels", ArchConfig.labels,
                   lambda v: v in LABEL_SETS or (isinstance(v, list) and all(_str(x) for x in v)),
                   "one of %s or a list of class names" % ", ".join(LABEL_SETS))
    if isinstance(labels, list):
        if len(labels) != num_classes:
            f.fail("labels", "%d names for %d classes" % (len(labels), num_classes))
        labels = tuple(labels)
    elif labels == "fashion-mnist" and num_classes != len(FASHION_MNIST_LABELS):
        f.fail("labels", "fashion-mnist has %d classes, num_classes is %d"
               % (len(FASHION_MNIST_LABELS), num_classes))
    raw_layers = f.get("layers", None, lambda v: isinstance(v, list) and v, "a non-empty list")
    layers = tuple(_parse_layer(l, i, source) for i, l in enumerate(raw_layers))
    names = [l.name for l in layers]
    for i, n in enumerate(names):
        if n in names[:i]:
            f.fail("layers[%d].name" % i, "%r names two layers" % n)
    feedback = []
    for i, edge in enumerate(f.get("feedback", [], lambda v: isinstance(v, list), "a list")):
        if not (isinstance(edge, list) and len(edge) == 2 and all(e in names for e in edge)):
            f.fail("feedback[%d]" % i, "must be [source, target] layer names: %s" % json.dumps(edge))
        if names.index(edge[0]) <= names.index(edge[1]):
            f.fail("feedback[%d]" % i, "feedback must go backwards: %s" % json.dumps(edge))
        kind = layers[names.index(edge[1])].cell.type
        if not CELLS[kind].accepts_feedback:
            f.fail("feedback[%d]" % i, "a %s cell has no feedback input, but %s feeds back to %s"
                   % (kind, edge[0], edge[1]))
        feedback.append(tuple(edge))
    return ArchConfig(
        name=name,
        architecture=f.get("architecture", name, _str, "a non-empty string"),
        description=f.get("description", None, _str, "a non-empty string"),
        input=_parse_input(f.data["input"], source),
        num_classes=num_classes,
        labels=labels,
        time=_parse_time(f.data["time"], source),
        readout=_parse_readout(f.data.get("readout", {}), source),
        layers=layers,
        head=_parse_head(f.data["head"], source),
        feedback=tuple(feedback))


# ----------------------------------------------------------------------------- files
def _merge(base, over):
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _scale_channels(layers, scale, min_channels=4):
    def sc(c):
        return max(min_channels, int(round(c * scale)))
    for layer in layers:
        for part in ("pre", "post"):
            if isinstance(layer.get(part), dict) and "out" in layer[part]:
                layer[part]["out"] = sc(layer[part]["out"])
        cell = layer.get("cell") or {}
        for key in ("out", "cell_depth"):
            if key in cell:
                cell[key] = sc(cell[key])


def config_path(arch: str) -> str:
    """configs/<arch>.json, or ``arch`` itself when it is a path to a .json file."""
    return arch if arch.endswith(".json") else os.path.join(CONFIG_DIR, arch + ".json")


_LOADING: set = set()  # the files whose bases are being resolved, to refuse a cycle


@functools.lru_cache(maxsize=None)
def _load(path: str) -> Tuple[ArchConfig, dict]:
    """The parsed config of a file and the resolved JSON it was parsed from (bases applied)."""
    if path in _LOADING:
        raise ConfigError("%s: base: the chain of bases comes back to this file" % path)
    try:
        with open(path) as fh:
            raw = json.load(fh)
    except (OSError, ValueError) as e:
        raise ConfigError("%s: %s" % (path, e)) from None
    f = _Fields(raw, "", path)
    if "base" not in raw:
        for k in _FILE_ONLY:
            if k in raw:
                f.fail(k, "only a file with a base may set it")
        resolved = copy.deepcopy(raw)
    else:
        base_name = f.get("base", None, _str, "a config name")
        _LOADING.add(path)
        try:
            base_cfg, base = _load(config_path(base_name))
        finally:
            _LOADING.discard(path)
        # a derived config keeps its base's architecture unless it names its own
        base = dict(base, architecture=base_cfg.architecture)
        resolved = _merge(base, {k: v for k, v in raw.items() if k not in _FILE_ONLY})
        if "channel_scale" in raw:
            _scale_channels(resolved["layers"], f.get("channel_scale", None,
                                                      lambda v: _number(v) and v > 0,
                                                      "a positive number"))
        overrides = f.get("layer_overrides", {}, lambda v: isinstance(v, dict), "an object")
        by_name = {l.get("name"): l for l in resolved["layers"]}
        for lname, over in overrides.items():
            if lname not in by_name:
                f.fail("layer_overrides." + lname, "no such layer in %s" % base_name)
            by_name[lname].update(_merge(by_name[lname], over))
    return _parse_arch(resolved, path), resolved


def get_config(arch: str) -> ArchConfig:
    """The config of ``arch``: a name from ``list_archs()`` or a path to a .json file."""
    return _load(config_path(arch))[0]


def list_archs() -> List[str]:
    return sorted(f[:-5] for f in os.listdir(CONFIG_DIR) if f.endswith(".json"))
