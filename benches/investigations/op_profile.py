"""Where ONNX Runtime spends a run, by operator type: its own profiler on the whole graph (all
outputs, as activation requests run) and on the graph pruned to `logits` (as classification
runs), one intra-op thread, the server's optimisation level.

    benches/.venv/bin/python benches/investigations/op_profile.py models/rgc_fmnist.onnx --batch 16 --runs 20
    benches/.venv/bin/python benches/investigations/op_profile.py models/build/rgc_intermediate.onnx --batch 1 --runs 3

ONNX Runtime rewrites the graph before it runs it (constant folding, NCHWc layouts: the
`Reorder*` rows), so the rows are the kernels it ran, not the file's nodes. Profiling adds a
little time to every kernel; compare rows within one table.
"""
import argparse
import collections
import json
import os
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort

# onnx_prune lives with the suite (the reference server uses it too).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "suite"))
from onnx_prune import pruned_to_logits  # noqa: E402


def profile(model, feeds, outputs, runs, prefix):
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.enable_profiling = True
    so.profile_file_prefix = prefix
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    for _ in range(runs + 1):
        sess.run(outputs, feeds)
    path = sess.end_profiling()
    with open(path) as f:
        events = json.load(f)
    os.remove(path)
    # the first run also allocates its buffers: count only the kernels after it
    first = min((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    after = first["ts"] + first["dur"]
    us, calls = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= after:
            op = e["args"]["op_name"]
            us[op] += e["dur"]
            calls[op] += 1
    return {op: (us[op] / runs, calls[op] / runs) for op in us}


def show(title, table, top):
    total = sum(t for t, _ in table.values())
    print(f"\n{title}: {total / 1e3:.2f} ms a run in kernels")
    print(f"{'op':22s} {'ms/run':>9s} {'share':>6s} {'calls/run':>9s}")
    for op, (t, n) in sorted(table.items(), key=lambda kv: -kv[1][0])[:top]:
        print(f"{op:22s} {t / 1e3:9.3f} {100 * t / total:5.1f}% {n:9.0f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--top", type=int, default=12)
    a = ap.parse_args()
    # read from the file: an ORT session just for this would optimise the whole graph once more
    # (about 10 s on rgc_intermediate)
    m = onnx.load(a.model, load_external_data=False)
    meta = json.loads({p.key: p.value for p in m.metadata_props}["convrnn"])
    outputs = [o.name for o in m.graph.output]
    del m
    t, h, w = meta["time"]["steps"], meta["input"]["height"], meta["input"]["width"]
    feeds = {"frames": np.random.default_rng(0).standard_normal((a.batch, t, 3, h, w)).astype(np.float32)}
    with tempfile.TemporaryDirectory() as tmp:
        whole = profile(a.model, feeds, outputs, a.runs, os.path.join(tmp, "whole"))
        pruned = profile(pruned_to_logits(a.model), feeds, ["logits"], a.runs, os.path.join(tmp, "pruned"))
    show(f"whole graph, all outputs, batch {a.batch}", whole, a.top)
    show(f"pruned to logits, batch {a.batch}", pruned, a.top)


if __name__ == "__main__":
    main()
