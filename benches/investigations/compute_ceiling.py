"""The most any feature-extraction pipeline could reach on this machine: the model's forward pass
alone, through ONNX Runtime the way `convrnn-serve` runs a paper-sized model on CPU (one
single-threaded session per core, one image per run, every output; `--ort-batch` for a small
model, which the server batches) and through eager PyTorch the way
extract_vs_pytorch.py's THINGSvision-style loop does (batch 8, all cores, no hooks, nothing
kept), in alternating rounds on the same frames. No decoding, no copies, no files.

The frames are pseudo-random movies, so ONNX Runtime runs the file's own graph: for the graph the
server runs default-presentation movies on (each run of equal frames computed once), use
`cargo bench --bench raw_ort -- --image IMAGE --hold true|false` (docs/performance.md).

    models/.venv/bin/python benches/investigations/compute_ceiling.py \
        --model build/rgc_intermediate.onnx --arch rgc_intermediate --rounds 3

Each ONNX Runtime process builds its session before the timed part; the images/s of a round
count the images every process finished inside it.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def frames_for(meta, batch):
    import numpy as np
    inp, tm = meta["input"], meta["time"]
    rng = np.random.default_rng(0)
    shape = (batch, tm["steps"], inp["channels"], inp["height"], inp["width"])
    return rng.standard_normal(shape, dtype=np.float32)


def ort_worker(a):
    """One single-threaded session; waits for "go", runs --images images one at a time."""
    import onnxruntime as ort
    sys.path.insert(0, os.path.join(ROOT, "models"))
    from convrnn.export import read_metadata
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    s = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    x = frames_for(read_metadata(a.model), a.ort_batch)
    s.run(None, {"frames": x})
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.perf_counter()
    for _ in range(0, a.images, a.ort_batch):
        s.run(None, {"frames": x})
    print(json.dumps({"seconds": time.perf_counter() - t0}), flush=True)


def ort_round(a, cores):
    procs = [subprocess.Popen([sys.executable, __file__, "--ort-worker", "--model", a.model, "--arch", a.arch,
                               "--images", str(a.images), "--ort-batch", str(a.ort_batch)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(cores)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    t0 = time.perf_counter()
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        json.loads(p.stdout.readline())
        p.wait()
    per_core = -(-a.images // a.ort_batch) * a.ort_batch
    return cores * per_core / (time.perf_counter() - t0)


def torch_round(a, model, x, cores):
    import torch
    torch.set_num_threads(cores)
    n = 0
    t0 = time.perf_counter()
    with torch.no_grad():
        while n < a.images * cores:
            model(x, return_layers=True)
            n += x.shape[0]
    return n / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--arch", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--images", type=int, default=8, help="images per core per round")
    ap.add_argument("--batch", type=int, default=8, help="PyTorch batch")
    ap.add_argument("--ort-batch", type=int, default=1,
                    help="ONNX Runtime batch (1: as the server runs a paper-sized model on CPU)")
    ap.add_argument("--ort-worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.ort_worker:
        return ort_worker(a)
    import torch
    sys.path.insert(0, os.path.join(ROOT, "models"))
    from convrnn.export import load_onnx_weights, read_metadata
    from convrnn.model import build_model
    cores = len(os.sched_getaffinity(0))
    model = build_model(a.arch, seed=None)
    load_onnx_weights(model, a.model)
    model.eval()
    x = torch.from_numpy(frames_for(read_metadata(a.model), a.batch))
    with torch.no_grad():
        model(x[:1], return_layers=True)
    print(f"{a.arch}, {cores} cores; ONNX Runtime: {cores} sessions x 1 thread, batch {a.ort_batch}; "
          f"PyTorch: {cores} threads, batch {a.batch}; images/s")
    print("| round | ONNX Runtime | PyTorch eager | ratio |")
    print("|---|---:|---:|---:|")
    ratios = []
    for r in range(a.rounds):
        o = ort_round(a, cores)
        t = torch_round(a, model, x, cores)
        ratios.append(o / t)
        print(f"| {r + 1} | {o:.3f} | {t:.3f} | {o / t:.2f}x |", flush=True)
    ratios.sort()
    print(f"median ratio {ratios[len(ratios) // 2]:.2f}x")


if __name__ == "__main__":
    main()
