"""ConvRNN built from a declarative config, unrolled the "biological" way
(docs/convrnn-spec.md section 3): every edge, feedforward or feedback, costs one step;
frame t feeds the first layer at step t; initial outputs and states are zeros."""
from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn as nn
import torch.nn.functional as F

from .cells import CELLS, SameConv2d
from .config import ArchConfig, LayerConfig, get_config

ACTS = {None: lambda x: x, "none": lambda x: x, "elu": F.elu, "relu": F.relu}


# ----------------------------------------------------------------------------- modules
def pool_size(s):
    return -(-s // 2)  # 2x2 stride-2 max-pool, TF SAME (ceil)


class Layer(nn.Module):
    """One node: pre-conv (+act) -> cell -> optional post-conv (+residual, act) -> pool."""

    def __init__(self, spec: LayerConfig, in_channels: int, in_size, fb_channels: int = 0):
        super().__init__()
        self.name = spec.name
        self.spec = spec
        h, w = in_size
        self.in_channels, self.in_size = in_channels, (h, w)
        c = in_channels
        pre = spec.pre
        self.pre = None
        if pre:
            self.pre = SameConv2d(c, pre.out, pre.k, stride=pre.stride, bias=pre.bias,
                                  in_size=(h, w))
            self.pre_act = pre.act
            c = pre.out
            h, w = -(-h // pre.stride), -(-w // pre.stride)
        self.cell_type = spec.cell.type
        self.cell = CELLS[spec.cell.type](in_channels=c, res_channels=in_channels,
                                          fb_channels=fb_channels, spatial=(h, w),
                                          **spec.cell.kwargs())
        self.cell_size = (h, w)
        c = self.cell.out_channels
        post = spec.post
        self.post = None
        self.post_residual = None
        if post:
            self.post = SameConv2d(c, post.out, post.k)
            self.post_act = post.act
            self.post_has_residual = post.residual
            if self.post_has_residual and post.out != in_channels:
                self.post_residual = nn.Conv2d(in_channels, post.out, 1, bias=False)
            c = post.out
        self.pool = spec.pool
        if self.pool:
            h, w = pool_size(h), pool_size(w)
        self.out_shape = (c, h, w)

    def forward(self, x_in, state, fb=None):
        x = x_in
        if self.pre is not None:
            x = ACTS[self.pre_act](self.pre(x))
        y, state = self.cell(x, state, x_res=x_in, fb=fb)
        if self.post is not None:
            z = self.post(y)
            if self.post_has_residual:
                z = z + (x_in if self.post_residual is None else self.post_residual(x_in))
            y = ACTS[self.post_act](z)
        if self.pool:
            y = F.max_pool2d(y, 2, 2, ceil_mode=True)
        return y, state

    def zero_state(self, n, like):
        h, w = self.cell_size
        return tuple(like.new_zeros((n, c, h, w)) for c in self.cell.state_channels)


class Head(nn.Module):
    """The readout node ("imnetds"): conv_gap (k x k VALID conv + bias, then global average
    pool; shallow family) or gap_fc (global average pool, then FC; intermediate family)."""

    def __init__(self, cfg: ArchConfig, in_shape):
        super().__init__()
        c, h, w = in_shape
        num_classes = cfg.num_classes
        self.type = cfg.head.type
        if self.type == "conv_gap":
            k = cfg.head.k
            assert h >= k and w >= k, "conv_gap head needs input >= k"
            self.conv = nn.Conv2d(c, num_classes, k)
        elif self.type == "gap_fc":
            self.fc = nn.Linear(c, num_classes)
        else:
            raise ValueError(self.type)
        if cfg.readout.rule == "max_conf":
            self.softmax_beta = nn.Parameter(torch.tensor(float(cfg.readout.beta)))

    def forward(self, x):
        if self.type == "conv_gap":
            return self.conv(x).mean(dim=(2, 3))
        return self.fc(x.mean(dim=(2, 3)))


class ConvRNN(nn.Module):
    def __init__(self, cfg: ArchConfig):
        super().__init__()
        self.cfg = cfg
        c, h, w = cfg.input.channels, cfg.input.height, cfg.input.width
        self.num_classes = cfg.num_classes
        self.steps = cfg.time.steps
        self.input_shape = (c, h, w)
        names = cfg.layer_names
        self.layer_names = names
        # feedback edges: source -> target (target receives source's output from t-1)
        self.fb_sources: Dict[str, List[str]] = {n: [] for n in names}
        for src, dst in cfg.feedback:
            self.fb_sources[dst].append(src)
        for n in names:  # Python sorted() of node names, as the authors' harbor does
            self.fb_sources[n] = sorted(self.fb_sources[n])
        # feedback channels need the output shapes of later layers: two passes
        shapes = {}
        cc, hh, ww = c, h, w
        for spec in cfg.layers:
            lay = Layer(spec, cc, (hh, ww), 0)
            shapes[spec.name] = lay.out_shape
            cc, hh, ww = lay.out_shape
        self.layers = nn.ModuleList()
        cc, hh, ww = c, h, w
        for spec in cfg.layers:
            fbc = sum(shapes[s][0] for s in self.fb_sources[spec.name])
            lay = Layer(spec, cc, (hh, ww), fbc)
            self.layers.append(lay)
            cc, hh, ww = lay.out_shape
        self.head = Head(cfg, (cc, hh, ww))

    # ---------------------------------------------------------------- structure info
    def first_driven_steps(self) -> Dict[str, int]:
        """Shortest path (in edges) from the image to each node; conv1 sees frame t at t."""
        driven = {}
        for i, n in enumerate(self.layer_names):
            cands = [0] if i == 0 else [driven[self.layer_names[i - 1]] + 1]
            driven[n] = min(cands)  # feedback comes from later layers: never shorter
        driven["logits"] = driven[self.layer_names[-1]] + 1
        return driven

    def layer_info(self) -> List[dict]:
        driven = self.first_driven_steps()
        info = []
        for lay in self.layers:
            c, h, w = lay.out_shape
            d = {"name": lay.name, "channels": c, "height": h, "width": w,
                 "first_driven_step": driven[lay.name], "cell": lay.cell_type}
            if lay.spec.region:
                d["region"] = lay.spec.region
            if self.fb_sources[lay.name]:
                d["feedback_from"] = list(self.fb_sources[lay.name])
            info.append(d)
        return info

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ---------------------------------------------------------------- unroll
    def forward(self, frames: torch.Tensor, return_layers: bool = True):
        """frames: [N, T, C, H, W] (normalised). Returns (logits [N,T,K],
        {layer: [N,T,C_l,H_l,W_l]}).

        Before a node is image-driven (step < first_driven_step) its input, state and
        feedback are the same for every image, so it runs once at batch 1 and is broadcast
        (exact: no cell mixes samples). In an ONNX export that part depends on weights
        only, and ONNX Runtime folds it into constants when it builds a session: a
        classification then costs only the image-driven steps."""
        n = frames.shape[0]
        T = frames.shape[1]
        driven = self.first_driven_steps()
        prev = {lay.name: frames.new_zeros((1,) + lay.out_shape) for lay in self.layers}
        states = {lay.name: lay.zero_state(1, frames) for lay in self.layers}
        outs = {lay.name: [] for lay in self.layers}
        logits = []
        last = self.layers[-1].name

        def batch(x):
            return x if x.shape[0] == n else x.expand((n,) + tuple(x.shape[1:]))

        for t in range(T):
            new = {}
            for i, lay in enumerate(self.layers):
                image_driven = t >= driven[lay.name]
                x_in = frames[:, t] if i == 0 else prev[self.layers[i - 1].name]
                state = states[lay.name]
                if image_driven:  # from here on per image: broadcast what was shared
                    x_in = batch(x_in)
                    state = tuple(batch(s) for s in state)
                fb = None
                srcs = self.fb_sources[lay.name]
                if srcs:
                    size = x_in.shape[-2:]
                    parts = []
                    for s in srcs:
                        p = prev[s]
                        if image_driven:
                            p = batch(p)
                        if tuple(p.shape[-2:]) != tuple(size):
                            p = F.interpolate(p, size=tuple(int(v) for v in size),
                                              mode="bilinear", align_corners=True)
                        parts.append(p)
                    fb = torch.cat(parts, 1) if len(parts) > 1 else parts[0]
                y, states[lay.name] = lay(x_in, state, fb)
                new[lay.name] = y
                if return_layers:
                    outs[lay.name].append(batch(y))
            logits.append(batch(self.head(prev[last])))
            prev = new
        logits = torch.stack(logits, 1)
        if not return_layers:
            return logits, {}
        return logits, {k: torch.stack(v, 1) for k, v in outs.items()}

    def forward_last(self, frames: torch.Tensor) -> torch.Tensor:
        """Training fast path: the logits at step T-1 only, numerically the same as
        ``forward(frames)[0][:, -1]`` (tested). Two savings, both exact:
        (1) a node is evaluated at step t only if its output can still reach the logits at
        T-1; (2) before a node is image-driven its output is the same for every image, so
        it is computed once (batch 1) and broadcast. Only for configs without feedback and
        with cells that broadcast over the batch (no channel concat of input and state)."""
        assert not any(self.fb_sources.values()), "forward_last: no feedback support"
        T = frames.shape[1]
        L = len(self.layers)
        prev = {lay.name: frames.new_zeros((1,) + lay.out_shape) for lay in self.layers}
        states = {lay.name: lay.zero_state(1, frames) for lay in self.layers}
        for t in range(T - 1):
            new = {}
            for i, lay in enumerate(self.layers):
                if t > T - 2 - (L - 1 - i):
                    continue  # cannot reach logits[T-1] any more
                x_in = frames[:, t] if i == 0 else prev[self.layers[i - 1].name]
                y, states[lay.name] = lay(x_in, states[lay.name], None)
                new[lay.name] = y
            prev.update(new)
        return self.head(prev[self.layers[-1].name]).expand(frames.shape[0], -1)

    def readout_start(self) -> int:
        """First step the max_conf/threshold readouts consider: the config's ``first_step``
        (the authors' decoders start at num_layers, one step after the logits are first
        image-driven), else the logits' first driven step."""
        first = self.cfg.readout.first_step
        return int(self.first_driven_steps()["logits"] if first is None else first)

    def readout(self, logits: torch.Tensor) -> torch.Tensor:
        """Apply the config's readout rule to logits [N,T,K] -> [N,K]."""
        return apply_readout(logits, self.cfg.readout.rule, self.readout_start(),
                             beta=float(self.head.softmax_beta) if hasattr(self.head, "softmax_beta") else 1.0,
                             threshold=self.cfg.readout.threshold)


def readout_steps(logits, rule, start, beta=1.0, threshold=0.9):
    """The step each sample's readout picks, [N] (see apply_readout)."""
    n, T = logits.shape[:2]
    if rule == "last":
        return torch.full((n,), T - 1, dtype=torch.long)
    window = logits[:, start:]
    if rule == "max_conf":
        idx = torch.softmax(beta * window, -1).amax(-1).argmax(1)
    elif rule == "threshold":
        conf = torch.softmax(window, -1).amax(-1)
        hit = conf >= threshold
        idx = torch.where(hit.any(1), hit.float().argmax(1), conf.argmax(1))
    else:
        raise ValueError(rule)
    return idx + start


def apply_readout(logits, rule, start, beta=1.0, threshold=0.9):
    """last: logits[T-1]; max_conf: t* = argmax_t max_c softmax(beta*logits_t) over
    t in [start, T); threshold: first t >= start with max_c softmax(logits_t) >= threshold,
    otherwise the max_conf time (beta = 1)."""
    steps = readout_steps(logits, rule, start, beta, threshold)
    return logits[torch.arange(logits.shape[0]), steps]


def make_movie(images: torch.Tensor, steps: int, image_on_steps: int, blank_value: float = 0.5):
    """[N,C,H,W] normalised images -> [N,T,C,H,W] frames: the image for image_on_steps
    steps, then the constant blank_value (in normalised space, as the authors do)."""
    frames = images.unsqueeze(1).expand(-1, steps, -1, -1, -1).clone()
    if image_on_steps < steps:
        frames[:, image_on_steps:] = blank_value
    return frames


def build_model(arch: str, seed: int | None = 0) -> ConvRNN:
    cfg = get_config(arch)
    if seed is not None:
        torch.manual_seed(seed)
    return ConvRNN(cfg)
