"""ONNX Runtime (Python) on a model's whole graph against the graph pruned to `logits`: node
counts, whether the logits agree bit for bit, and the time per batch of each, alternating.

    benches/.venv/bin/python benches/investigations/pruned_vs_whole.py models/build/rgc_intermediate.onnx \
        --threads 2 --batch 1 --reps 2 --rounds 2
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort

# onnx_prune lives with the suite (the reference server uses it too).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "suite"))
from onnx_prune import pruned_to_logits  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    pruned = pruned_to_logits(a.model)
    before = len(onnx.load(a.model, load_external_data=False).graph.node)
    after = len(onnx.load_from_string(pruned).graph.node)
    print(f"nodes {before} -> {after}")
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = a.threads, 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    whole = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    cut = ort.InferenceSession(pruned, so, providers=["CPUExecutionProvider"])
    meta = json.loads(whole.get_modelmeta().custom_metadata_map["convrnn"])
    t, h, w = meta["time"]["steps"], meta["input"]["height"], meta["input"]["width"]
    x = np.random.default_rng(0).standard_normal((a.batch, t, 3, h, w)).astype(np.float32)
    same = np.array_equal(whole.run(["logits"], {"frames": x})[0], cut.run(["logits"], {"frames": x})[0])
    print(f"logits identical: {same}")
    for _ in range(a.rounds):
        for name, s in (("whole", whole), ("pruned", cut)):
            t0 = time.perf_counter()
            for _ in range(a.reps):
                s.run(["logits"], {"frames": x})
            dt = (time.perf_counter() - t0) / a.reps
            print(f"{name:6s} {dt * 1e3:9.2f} ms per batch of {a.batch}, {a.batch / dt:8.2f} images/s")


if __name__ == "__main__":
    main()
