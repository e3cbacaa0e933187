"""Lets the authors' TF 1.13 code (github neuroailab/convrnns, unmodified) import and run
under TensorFlow 2.x's ``compat.v1`` with networkx 3.

``install(authors_root)`` must run before anything of theirs is imported. It binds the name
``tensorflow`` to ``tf.compat.v1`` (plus the contrib functions their models call), stubs the
contrib modules they import but the released configs never use, gives networkx 3 the 1.x
``DiGraph`` calls they make, and puts their repository first on ``sys.path``.
"""
from __future__ import annotations

import os
import sys
import types


def _contrib_layers(v1):
    """The four ``tf.contrib.layers`` functions the released models reach."""

    def l2_regularizer(scale, scope=None):
        if not scale:
            return lambda _: None
        return lambda w: v1.multiply(scale, v1.nn.l2_loss(w))

    def l1_regularizer(scale, scope=None):
        if not scale:
            return lambda _: None
        return lambda w: v1.multiply(scale, v1.reduce_sum(v1.abs(w)))

    def sum_regularizer(regs, scope=None):
        def f(w):
            terms = [t for t in (r(w) for r in regs) if t is not None]
            return v1.add_n(terms) if terms else None
        return f

    def xavier_initializer(uniform=True, seed=None, dtype=v1.float32):
        # contrib's xavier_initializer is variance scaling 1.0 over fan_avg
        return v1.variance_scaling_initializer(
            scale=1.0, mode="fan_avg",
            distribution="uniform" if uniform else "truncated_normal", seed=seed, dtype=dtype)

    def layer_norm(inputs, center=True, scale=True, activation_fn=None, reuse=None,
                   variables_collections=None, outputs_collections=None, trainable=True,
                   begin_norm_axis=1, begin_params_axis=-1, scope=None):
        # contrib.layers.layer_norm: moments over axes begin_norm_axis.., eps 1e-12,
        # per-channel beta/gamma created (or reused) in `scope` (default "LayerNorm")
        shape = inputs.shape
        rank = shape.ndims
        if begin_params_axis < 0:
            begin_params_axis += rank
        if begin_norm_axis < 0:
            begin_norm_axis += rank
        params_shape = shape[begin_params_axis:]
        with v1.variable_scope(scope, "LayerNorm", [inputs], reuse=reuse):
            beta = gamma = None
            if center:
                beta = v1.get_variable("beta", shape=params_shape, dtype=inputs.dtype,
                                       initializer=v1.zeros_initializer(), trainable=trainable)
            if scale:
                gamma = v1.get_variable("gamma", shape=params_shape, dtype=inputs.dtype,
                                        initializer=v1.ones_initializer(), trainable=trainable)
            mean, var = v1.nn.moments(inputs, list(range(begin_norm_axis, rank)), keep_dims=True)
            out = v1.nn.batch_normalization(inputs, mean, var, offset=beta, scale=gamma,
                                            variance_epsilon=1e-12)
            if activation_fn is not None:
                out = activation_fn(out)
            return out

    def flatten(inputs, outputs_collections=None, scope=None):
        n = 1
        for d in inputs.shape[1:]:
            n *= int(d)
        return v1.reshape(inputs, [-1, n])

    ns = types.SimpleNamespace(
        l2_regularizer=l2_regularizer, l1_regularizer=l1_regularizer,
        sum_regularizer=sum_regularizer, xavier_initializer=xavier_initializer,
        layer_norm=layer_norm, flatten=flatten)
    return ns


def _networkx1():
    """networkx 3 with the 1.x calls of their main.py: ``DiGraph(data=edges)``, ``G.node``,
    ``successors``/``predecessors`` returning lists."""
    import networkx as nx

    base = nx.DiGraph
    if getattr(base, "_convrnn_shim", False):
        return

    class DiGraph(base):
        _convrnn_shim = True

        def __init__(self, incoming_graph_data=None, data=None, **attr):
            super().__init__(incoming_graph_data if data is None else data, **attr)

        @property
        def node(self):
            return self.nodes

        def successors(self, n):
            return list(super().successors(n))

        def predecessors(self, n):
            return list(super().predecessors(n))

    nx.DiGraph = DiGraph


def install(authors_root: str):
    import tensorflow as tf2

    v1 = tf2.compat.v1
    v1.disable_eager_execution()
    v1.disable_v2_behavior()
    contrib = types.ModuleType("tensorflow.contrib")
    contrib.layers = _contrib_layers(v1)
    rnn = types.ModuleType("tensorflow.contrib.rnn")

    class RNNCell(object):
        pass

    import collections
    rnn.RNNCell = RNNCell
    rnn.LSTMStateTuple = collections.namedtuple("LSTMStateTuple", ("c", "h"))
    contrib.rnn = rnn
    v1.contrib = contrib
    # their modules say `import tensorflow as tf` and `from tensorflow.python...`
    sys.modules["tensorflow.contrib"] = contrib
    sys.modules["tensorflow.contrib.rnn"] = rnn
    # crossdevice_batchnorm imports contrib.tpu; the released configs never call it
    xbn = types.ModuleType("convrnns.utils.crossdevice_batchnorm")
    xbn.crossgpu_batch_norm = None
    xbn.CRTPUBatchNormalization = None
    sys.modules["convrnns.utils.crossdevice_batchnorm"] = xbn
    tf_module = types.ModuleType("tensorflow")
    tf_module.__dict__.update({k: getattr(v1, k) for k in dir(v1) if not k.startswith("__")})
    tf_module.contrib = contrib
    tf_module.python = tf2.python if hasattr(tf2, "python") else sys.modules.get("tensorflow.python")
    tf_module.__path__ = tf2.__path__  # keeps `from tensorflow.python.framework import ops` working
    sys.modules["tensorflow"] = tf_module
    _networkx1()
    root = os.path.abspath(authors_root)
    if root not in sys.path:
        sys.path.insert(0, root)
    # their configs are opened by paths relative to the repository root
    os.chdir(root)
    return v1
