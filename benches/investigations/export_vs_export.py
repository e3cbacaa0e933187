"""Two exports of the same model with ONNX Runtime (Python), side by side: session creation,
the time per batch of the whole graph and of the graph pruned to `logits` (as the server
classifies), alternating rounds, and the largest difference of their outputs. Used to measure a
change of the exporter (docs/benchmarks-history.md, finding 21):

    git show 423e228:models/rgc_fmnist.onnx > /tmp/before.onnx
    benches/.venv/bin/python benches/investigations/export_vs_export.py /tmp/before.onnx models/rgc_fmnist.onnx \
        --batch 16 --reps 20 --rounds 3
"""
import argparse
import os
import sys
import time

import numpy as np
import onnxruntime as ort

# onnx_prune lives with the suite (the reference server uses it too).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "suite"))
from onnx_prune import pruned_to_logits  # noqa: E402


def session(model, threads):
    """What the server builds on CPU: all optimisations, one pool of `threads`, no spinning."""
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    t0 = time.perf_counter()
    s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    return s, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    sessions = {}
    for tag, path in (("before", a.before), ("after", a.after)):
        for graph, model in (("whole", path), ("pruned", pruned_to_logits(path))):
            s, secs = session(model, a.threads)
            sessions[(tag, graph)] = s
            print(f"{tag:6s} {graph:6s} session created in {secs:6.1f} s")
    shape = sessions[("before", "whole")].get_inputs()[0].shape
    x = np.random.default_rng(0).standard_normal([a.batch] + shape[1:]).astype(np.float32)
    for graph in ("whole", "pruned"):
        outs = [sessions[(tag, graph)].run(None, {"frames": x}) for tag in ("before", "after")]
        diff = max(float(np.abs(p - q).max()) for p, q in zip(*outs))
        print(f"{graph:6s} largest output difference before/after: {diff:.3g}")
    times = {k: [] for k in sessions}
    for _ in range(a.rounds):
        for key, s in sessions.items():
            for _ in range(a.reps):
                t0 = time.perf_counter()
                s.run(None, {"frames": x})
                times[key].append(time.perf_counter() - t0)
    for graph in ("whole", "pruned"):
        b, f = (np.median(times[(tag, graph)]) for tag in ("before", "after"))
        print(f"{graph:6s} median per batch of {a.batch}: before {b * 1e3:9.2f} ms, after "
              f"{f * 1e3:9.2f} ms ({b / a.batch * 1e3:.3f} -> {f / a.batch * 1e3:.3f} ms/image, "
              f"{b / f:.2f}x)")


if __name__ == "__main__":
    main()
