"""Counts the multiply-accumulates of one movie (batch 1, all T steps) in an exported ConvRNN by
walking its ONNX graph after shape inference: Conv = output elements x (C_in/groups x kH x kW),
Gemm/MatMul = M x N x K. The export unrolls time, so the sum is already per movie (x T).

`macs_per_movie` counts every node of the file. The nodes that do not depend on `frames` (the
steps before each layer is image-driven, computed once at batch 1 by the export) become
constants when ONNX Runtime builds a session, so what a request costs is `macs_per_image`
(all outputs) and `macs_per_image_logits` (classification, on the graph pruned to `logits`).

    python benches/suite/flops.py models/build/rgc_intermediate.onnx [--json out.json]
"""
import argparse
import json
from collections import defaultdict

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--json")
    a = ap.parse_args()
    m = onnx.load(a.model)
    meta = json.loads({p.key: p.value for p in m.metadata_props}["convrnn"])
    # Shapes of every Conv/Gemm/MatMul tensor: the exporter leaves Shape/Slice/Pad arithmetic
    # that static inference cannot resolve, so run the graph once (batch 1) with those tensors
    # exposed as outputs and read their real shapes.
    wanted = set()
    for n in m.graph.node:
        if n.op_type in ("Conv", "Gemm", "MatMul"):
            wanted.update([n.input[0], n.output[0]])
    existing = {o.name for o in m.graph.output}
    for name in sorted(wanted - existing):
        m.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    t, c = meta["time"]["steps"], meta["input"]["channels"]
    h, w = meta["input"]["height"], meta["input"]["width"]
    names = [o.name for o in sess.get_outputs()]
    vals = sess.run(names, {"frames": np.zeros((1, t, c, h, w), np.float32)})
    shapes = {n: list(v.shape) for n, v in zip(names, vals)}
    del vals
    inits = {i.name: numpy_helper.to_array(i).shape for i in m.graph.initializer}
    params = int(sum(np.prod(s) for s in inits.values()))
    # Nodes whose values (or shapes) depend on the input, in the graph's topological order.
    per_image = {"frames"}
    for n in m.graph.node:
        if any(i in per_image for i in n.input):
            per_image.update(n.output)
    # Nodes the logits depend on (the server's pruned classification graph).
    for_logits = {"logits"}
    for n in reversed(m.graph.node):
        if any(o in for_logits for o in n.output):
            for_logits.update(i for i in n.input if i)
    macs = defaultdict(int)
    image_macs = logits_macs = 0
    unknown = 0
    for n in m.graph.node:
        if n.op_type == "Conv":
            w = inits.get(n.input[1])
            out = shapes.get(n.output[0])
            if not w or not out or None in out:
                unknown += 1
                continue
            cost = int(np.prod(out)) * int(np.prod(w[1:]))
        elif n.op_type in ("Gemm", "MatMul"):
            a_s = shapes.get(n.input[0]) or inits.get(n.input[0])
            out = shapes.get(n.output[0])
            if not a_s or not out or None in out or None in a_s:
                unknown += 1
                continue
            cost = int(np.prod(out)) * int(a_s[-1])
        else:
            continue
        macs[n.op_type] += cost
        if n.output[0] in per_image:
            image_macs += cost
            if n.output[0] in for_logits:
                logits_macs += cost
    total = sum(macs.values())
    res = {"model": meta["name"], "steps": meta["time"]["steps"],
           "input": [meta["input"]["height"], meta["input"]["width"]], "params": params,
           "macs_per_movie": total, "gflops_per_movie": 2 * total / 1e9,
           "macs_per_image": image_macs, "gflops_per_image": 2 * image_macs / 1e9,
           "macs_per_image_logits": logits_macs, "gflops_per_image_logits": 2 * logits_macs / 1e9,
           "macs_by_op": dict(macs), "nodes_without_shape": unknown}
    print(json.dumps(res, indent=1))
    if a.json:
        json.dump(res, open(a.json, "w"))


if __name__ == "__main__":
    main()
