"""Rewrites of the exported ONNX graph: what ``torch.onnx.export`` leaves that the server's
contract or ONNX Runtime's speed wants otherwise. ``export.py`` applies them in order."""
from __future__ import annotations

import numpy as np


def declare_static_shapes(graph, shapes: dict) -> None:
    """Declares every named input and output shape statically except the batch axis ``N``,
    which the export leaves symbolic: the server reads the shapes from the file."""
    for vi in list(graph.input) + list(graph.output):
        if vi.name not in shapes:
            continue
        dims = vi.type.tensor_type.shape.dim
        want = shapes[vi.name]
        assert len(dims) == len(want) + 1, (vi.name, len(dims), want)
        dims[0].Clear()
        dims[0].dim_param = "N"
        for d, v in zip(dims[1:], want):
            d.Clear()
            d.dim_value = int(v)


ELU_ZERO, ELU_ONE = "convrnn.elu.zero", "convrnn.elu.one"


def input_driven(graph) -> set:
    """Names of the tensors that depend on a graph input (the frames); the rest depend on
    weights alone, which ONNX Runtime folds into constants when it builds a session. Nodes are
    stored in topological order, so one pass finds them."""
    driven = {i.name for i in graph.input} - {t.name for t in graph.initializer}
    for node in graph.node:
        if any(name in driven for name in node.input):
            driven.update(node.output)
    return driven


def elu_as_elementwise(graph) -> int:
    """Rewrites every ``Elu`` (alpha 1, as ``F.elu``) that depends on a graph input as
    ``Max(x, Exp(Min(x, 0)) - 1)``.

    ONNX Runtime's CPU ``Elu`` kernel is slow, while the four elementwise ops compute the same
    function (for x > 0 the max is x; for x <= 0, exp(x) - 1 >= x) through vectorised kernels
    (models/README.md has the timings). A node's values agree with ``Elu`` within 2^-23
    (exp(x) - 1 loses expm1's relative precision near 0); a whole model's outputs within 3e-6.

    An ``Elu`` that depends on weights alone (the steps before a layer is image-driven) is
    kept: ONNX Runtime folds it into a constant when it builds a session, so it costs nothing
    per run, and folding four ops instead of one holds more memory while building. Returns the
    number of nodes rewritten."""
    from onnx import helper, numpy_helper

    driven = input_driven(graph)

    def rewritable(node):
        if node.op_type != "Elu" or node.domain not in ("", "ai.onnx"):
            return False
        alpha = [a.f for a in node.attribute if a.name == "alpha"]
        # the identity needs alpha <= 1; the models only use F.elu's alpha = 1
        return (not alpha or alpha[0] == 1.0) and node.input[0] in driven

    nodes, rewritten = [], 0
    for i, node in enumerate(graph.node):
        if not rewritable(node):
            nodes.append(node)
            continue
        x, y, p = node.input[0], node.output[0], "%s/elu%d" % (node.name or "Elu", i)
        nodes += [helper.make_node("Min", [x, ELU_ZERO], [p + "/neg"], name=p + "/Min"),
                  helper.make_node("Exp", [p + "/neg"], [p + "/exp"], name=p + "/Exp"),
                  helper.make_node("Sub", [p + "/exp", ELU_ONE], [p + "/expm1"], name=p + "/Sub"),
                  helper.make_node("Max", [x, p + "/expm1"], [y], name=p + "/Max")]
        rewritten += 1
    if rewritten:
        del graph.node[:]
        graph.node.extend(nodes)
        graph.initializer.extend([numpy_helper.from_array(np.array(0, np.float32), ELU_ZERO),
                                  numpy_helper.from_array(np.array(1, np.float32), ELU_ONE)])
    return rewritten
