"""The graph of a servable file cut down to its `logits`, with the `onnx` package: what
convrnn-serve does in Rust for classification (src/model/prune.rs), for the Python side of the
benchmarks (the reference server's REF_PRUNE=1, benches/investigations/pruned_vs_whole.py)."""
import onnx


def pruned_to_logits(path: str) -> bytes:
    """The model with only the nodes the `logits` output depends on (graph nodes are
    topologically sorted, so one backward pass finds them)."""
    m = onnx.load(path)
    need = {"logits"}
    kept = []
    for node in reversed(m.graph.node):
        if any(o in need for o in node.output):
            kept.append(node)
            need.update(i for i in node.input if i)
    del m.graph.node[:]
    m.graph.node.extend(reversed(kept))
    outputs = [o for o in m.graph.output if o.name == "logits"]
    del m.graph.output[:]
    m.graph.output.extend(outputs)
    return m.SerializeToString()
