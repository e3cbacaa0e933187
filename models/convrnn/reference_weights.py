"""Seeded weights, inputs and output reductions shared by the authors'-code reference script
(models/reference/authors_reference.py, under TensorFlow) and the equality tests (numpy and
PyTorch only), so the tests regenerate the exact weights the reference outputs came from
and only small files are committed.

Weights are random but scaled so that activations stay O(1) through every step (a
reference where everything saturates or vanishes would prove little)."""
from __future__ import annotations

import zlib
from typing import Tuple

import numpy as np

# the 20 released checkpoints (the authors' get_checkpoints.sh)
ARCHS = [
    "rgc_intermediate", "rgc_intermediate_tmaxconf", "rgc_intermediate_t22_tmaxconf",
    "rgc_intermediate_dthresh", "ugrnn_intermediate", "intersectionrnn_intermediate",
    "lstm_intermediate", "gru_intermediate", "simplernn_intermediate", "timedecay_intermediate",
    "ugrnn_intermediate_t30", "ugrnn_intermediate_t30_tmaxconf", "ugrnn_intermediate_t30_dthresh",
    "ugrnn_shallow", "rgc_shallow", "intersectionrnn_shallow", "lstm_shallow", "gru_shallow",
    "simplernn_shallow", "timedecay_shallow",
]
WEIGHT_SEED = 2018
INPUT_SEED = 7
BATCH = 2  # the authors' model_func asserts batch >= 2
POOL = 2   # reduced outputs: spatial average over at most POOL x POOL blocks
CHANNELS = 8  # ... of at most this many channels (evenly spaced)
PROJECTIONS = 4  # ... plus this many seeded random projections of the full [H, W, C]
LOGIT_STRIDE = 25  # reduced logits: every 25th class


def input_size(arch: str) -> int:
    """Small inputs keep the tests cheap. The shallow head is a 2x2 VALID conv on conv5's
    output, which needs 2x2 at least: 96 px is the smallest size (multiple of 32) that gives
    it. The rgc_intermediate family also uses 96 px, so its feedback resizes non-trivially
    (3x3 -> 12x12, 2x2 -> 6x6, 2x2 -> 3x3); the other intermediate models use 64 px
    (2x2 at conv8-10, 1x1 after conv10's pool)."""
    return 96 if ("shallow" in arch or arch.startswith("rgc_intermediate")) else 64


def _rng(*parts) -> np.random.Generator:
    key = [WEIGHT_SEED] + [zlib.crc32(p.encode()) if isinstance(p, str) else int(p) for p in parts]
    return np.random.default_rng(key)


def weight(arch: str, name: str, shape: Tuple[int, ...]) -> np.ndarray:
    """The value of variable ``name`` (TF layout) in the reference checkpoint of ``arch``."""
    shape = tuple(int(s) for s in shape)
    g = _rng(arch, name)
    leaf = name.rsplit("/", 1)[-1]
    if leaf == "memory_decay":
        if "timedecay" in arch and any("conv%d/" % l in name for l in range(4, 11)) or (
                arch == "timedecay_shallow" and any("conv%d/" % l in name for l in (3, 4, 5))):
            return g.uniform(0.2, 0.8, shape).astype(np.float32)  # learned decay
        return np.zeros(shape, np.float32)  # fixed at 0 in the released configs
    if leaf == "softmax_beta":
        if "/normalize/" in name and "tmaxconf" in arch:
            return g.uniform(0.5, 2.0, shape).astype(np.float32)  # the learned beta
        return np.ones(shape, np.float32)
    if leaf == "decoder_threshold":
        return np.full(shape, 0.01, np.float32)  # random weights are not confident
    if leaf in ("gamma",):
        return (1.0 + 0.1 * g.standard_normal(shape)).astype(np.float32)
    if leaf in ("beta",) or "bias" in leaf:
        return (0.1 * g.standard_normal(shape)).astype(np.float32)
    if leaf.startswith("w_") and len(shape) == 3:  # LSTM peepholes [H, W, C]
        return (0.1 * g.standard_normal(shape)).astype(np.float32)
    if len(shape) == 4:
        kh, kw, cin, cout = shape
        if leaf.startswith("depthwise"):
            return (g.standard_normal(shape) / np.sqrt(kh * kw)).astype(np.float32)
        # rgc_intermediate's residuals and feedback loops grow activations ~1000x by the last
        # step at gain 1 (float32 rounding grows with them); 0.5 keeps them O(1)
        gain = 0.5 if arch.startswith("rgc_intermediate") else 1.0
        return (gain * g.standard_normal(shape) / np.sqrt(kh * kw * cin)).astype(np.float32)
    if len(shape) == 2:
        return (3.0 * g.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)
    return (0.1 * g.standard_normal(shape)).astype(np.float32)


def inputs(arch: str, size: int = 0) -> np.ndarray:
    """[BATCH, S, S, 3] normalised NHWC images: smooth random blobs plus noise (S: ``size``,
    by default the architecture's small test input)."""
    s = size or input_size(arch)
    g = np.random.default_rng(INPUT_SEED)
    coarse = g.standard_normal((BATCH, s // 8, s // 8, 3))
    x = np.repeat(np.repeat(coarse, 8, 1), 8, 2) + 0.3 * g.standard_normal((BATCH, s, s, 3))
    return x.astype(np.float32)


def reduce_output(arr: np.ndarray) -> dict:
    """A layer's outputs [B, T, H, W, C] (NHWC, every step) -> small arrays that any error
    anywhere in the tensor moves: block-averaged evenly spaced channels, seeded random
    projections of the whole map, and the max |value| of each step."""
    arr = np.asarray(arr, np.float64)
    b, t, h, w, c = arr.shape
    ch = np.unique(np.linspace(0, c - 1, min(c, CHANNELS)).round().astype(int))
    ph, pw = min(POOL, h), min(POOL, w)
    hb = np.array_split(np.arange(h), ph)
    wb = np.array_split(np.arange(w), pw)
    pooled = np.stack([np.stack([arr[:, :, hi][:, :, :, wi][..., ch].mean((2, 3)) for wi in wb], 2)
                       for hi in hb], 2)  # [B, T, ph, pw, len(ch)]
    proj = _rng("projection", h, w, c).standard_normal((PROJECTIONS, h * w * c)) / np.sqrt(h * w * c)
    flat = arr.reshape(b, t, -1)
    return {"pooled": pooled.astype(np.float32),
            "proj": np.einsum("btk,pk->btp", flat, proj).astype(np.float32),
            "maxabs": np.abs(flat).max(-1).astype(np.float32)}


def reduce_logits(logits: np.ndarray) -> dict:
    """Logits [B, T, K] -> every LOGIT_STRIDE-th class, projections, top-5 per step."""
    logits = np.asarray(logits, np.float64)
    proj = _rng("logits", logits.shape[-1]).standard_normal((PROJECTIONS, logits.shape[-1]))
    return {"strided": logits[..., ::LOGIT_STRIDE].astype(np.float32),
            "proj": np.einsum("btk,pk->btp", logits, proj / np.sqrt(logits.shape[-1])).astype(np.float32),
            "top5": np.argsort(-logits, -1, kind="stable")[..., :5].astype(np.int16),
            "maxabs": np.abs(logits).max(-1).astype(np.float32)}
