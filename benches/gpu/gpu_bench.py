"""GPU benchmarks of convrnn-serve, each step appending JSON lines to --out (benches/gpu/run.sh runs
them all as one prepared command on a leased GPU; docs/gpu.md). Every step also runs on CPU
(`--device cpu`), so the scripts are known to work before a lease.

    gpu_bench.py compare --model M.onnx --device cuda:0 --out r.jsonl
        the served answers on --device against the same server on CPU: classify (all probabilities
        per step), activations (every layer x step, npz) and KServe v2 infer (logits of a frames
        tensor); max |diff| relative to the CPU output's max |value|
    gpu_bench.py raw --model M.onnx --device cuda:0 --sessions 1 --batches 1,2,...,64 --out r.jsonl
        benches/suite/raw_ort.rs (the server's own ORT backend, no HTTP) per batch size, and the device
        memory after each batch size (GPU: the process's nvidia-smi used_memory; CPU: VmRSS)
    gpu_bench.py torch --model M.onnx --arch rgc_intermediate --device cuda:0 --out r.jsonl
        PyTorch eager on the same weights (the ONNX file's initializers), cudnn.benchmark on,
        TF32 as --tf32; logits of a batch per call, as a PyTorch server would answer
    gpu_bench.py http --model M.onnx --device cuda:0 --sessions 2 --max-batch 32 --delay-ms 2 ...
        the server saturated over HTTP (closed loop, --connections clients in --procs processes
        posting a JPEG to classify), and at one connection; GPU utilisation sampled meanwhile

Binaries: $CONVRNN_SERVE_BIN (default target/release/convrnn-serve, else target/debug) and
$RAW_ORT_BIN (default: the newest target/release/deps/raw_ort-*, else target/debug/deps). Needs numpy, Pillow, aiohttp;
`torch` needs PyTorch and the repository's models/ package.
"""
from __future__ import annotations

import argparse
import asyncio
import glob
import io
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def server_bin() -> str:
    for p in (os.environ.get("CONVRNN_SERVE_BIN"), f"{ROOT}/target/release/convrnn-serve",
              f"{ROOT}/target/debug/convrnn-serve"):
        if p and os.path.isfile(p):
            return p
    sys.exit("no convrnn-serve binary: set CONVRNN_SERVE_BIN or cargo build")


def raw_bin() -> str:
    p = os.environ.get("RAW_ORT_BIN")
    if p:
        return p
    found = sorted(glob.glob(f"{ROOT}/target/release/deps/raw_ort-*"), key=os.path.getmtime) or \
        sorted(glob.glob(f"{ROOT}/target/debug/deps/raw_ort-*"), key=os.path.getmtime)
    found = [f for f in found if os.access(f, os.X_OK) and not f.endswith(".d")]
    if not found:
        sys.exit("no raw_ort binary: set RAW_ORT_BIN or cargo bench --bench raw_ort --no-run")
    return found[-1]


def emit(out: str, record: dict) -> None:
    record["at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    line = json.dumps(record)
    print(line, flush=True)
    with open(out, "a") as f:
        f.write(line + "\n")


def model_meta(path: str) -> dict:
    import onnx
    m = onnx.load(path, load_external_data=False)
    return json.loads({p.key: p.value for p in m.metadata_props}["convrnn"])


def test_jpegs(meta: dict, n: int) -> list[bytes]:
    """Deterministic smooth images at twice the model's input size (so resizing runs)."""
    import numpy as np
    from PIL import Image
    h, w = 2 * meta["input"]["height"], 2 * meta["input"]["width"]
    out = []
    for i in range(n):
        y, x = np.mgrid[0:h, 0:w]
        rgb = np.stack([(x * (i + 1) + y) % 256, (y * 3 + 40 * i) % 256, (x + y * (i + 2)) % 256], -1)
        buf = io.BytesIO()
        Image.fromarray(rgb.astype("uint8")).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


# ---- the server ----------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, model: str, device: str, flags: list[str], log: str, timeout: float = 300):
        self.model_dir = os.path.dirname(os.path.abspath(model))
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        cmd = [server_bin(), "serve", "--model-dir", self.model_dir, "--listen", f"127.0.0.1:{self.port}",
               "--devices", device, "--request-timeout-ms", "120000", *flags]
        self.log = open(log, "ab")
        self.log.write(("\n$ " + " ".join(cmd) + "\n").encode())
        self.log.flush()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log)
        started = time.time()
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode} (log {log})")
            try:
                with urllib.request.urlopen(self.base + "/health/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() - started > timeout:
                self.stop()
                raise RuntimeError(f"server not ready in {timeout} s (log {log})")
            time.sleep(0.2)
        self.ready_s = time.time() - started

    def post(self, path: str, body: bytes, headers: dict) -> tuple[bytes, dict]:
        req = urllib.request.Request(self.base + path, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.read(), dict(r.headers)

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.base + path, timeout=30) as r:
            return r.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


# ---- device memory and utilisation ---------------------------------------------------------------------------

def has_nvidia_smi() -> bool:
    return shutil.which("nvidia-smi") is not None


def process_memory_mib(pid: int) -> float | None:
    """GPU memory of `pid` (nvidia-smi), or its resident memory on a machine without one."""
    if has_nvidia_smi():
        try:
            out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                                  "--format=csv,noheader,nounits"], capture_output=True, text=True,
                                 timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            return None
        for line in out.splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 2 and parts[0] == str(pid):
                return float(parts[1])
        # gVisor and some containers hide other pids: the whole GPU's used memory instead.
        return gpu_used_mib()
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def gpu_used_mib() -> float | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout
        return float(out.split()[0])
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        return None


class UtilSampler:
    """GPU utilisation and memory every 200 ms while active (nothing on a machine without a GPU)."""

    def __init__(self):
        self.samples: list[tuple[float, float]] = []
        self.proc = None

    def __enter__(self):
        if has_nvidia_smi():
            self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                          "--format=csv,noheader,nounits", "-lms", "200"],
                                         stdout=subprocess.PIPE, text=True)
            threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self):
        for line in self.proc.stdout:
            try:
                u, m = (float(v) for v in line.split(","))
                self.samples.append((u, m))
            except ValueError:
                pass

    def __exit__(self, *exc):
        if self.proc:
            self.proc.terminate()
            self.proc.wait()

    def summary(self) -> dict:
        if not self.samples:
            return {"gpu_util_mean": None, "gpu_mem_max_mib": None}
        us = [u for u, _ in self.samples]
        return {"gpu_util_mean": round(statistics.mean(us), 1), "gpu_mem_max_mib": max(m for _, m in self.samples)}


# ---- compare -------------------------------------------------------------------------------------------------

def numbers(v) -> list[float]:
    if isinstance(v, bool):
        return []
    if isinstance(v, (int, float)):
        return [float(v)]
    if isinstance(v, dict):
        return [x for k in sorted(v) for x in numbers(v[k])]
    if isinstance(v, list):
        return [x for e in v for x in numbers(e)]
    return []


def rel_diff(a, b) -> float:
    import numpy as np
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = max(float(np.abs(b).max()), 1e-12)
    return float(np.abs(a - b).max()) / scale


def cmd_compare(a) -> int:
    import numpy as np
    meta = model_meta(a.model)
    name = meta["name"]
    flags = ["--max-batch-size", "4", "--cuda-tf32", str(a.tf32).lower()]
    dev = Server(a.model, a.device, flags, a.log)
    # The reference: one CPU session on every core, the quickest to start.
    cpu = Server(a.model, "cpu", flags + ["--sessions-per-device", "1", "--cpu-thread-pool", "per-session"], a.log)
    worst = {}
    try:
        models = json.loads(dev.get("/v1/models"))
        for jpeg in test_jpegs(meta, a.images):
            hdr = {"content-type": "image/jpeg"}
            q = f"/v1/models/{name}/classify?top_k={len(meta['labels'])}&per_timestep=true"
            (x, _), (y, _) = dev.post(q, jpeg, hdr), cpu.post(q, jpeg, hdr)
            xj, yj = json.loads(x), json.loads(y)
            xs = [p for r in xj["results"] for p in numbers(r.get("per_timestep"))]
            ys = [p for r in yj["results"] for p in numbers(r.get("per_timestep"))]
            worst["classify"] = max(worst.get("classify", 0), rel_diff(xs, ys))
            q = f"/v1/models/{name}/activations"
            hdr = {"content-type": "image/jpeg", "accept": "application/x-npz"}
            (x, _), (y, _) = dev.post(q, jpeg, hdr), cpu.post(q, jpeg, hdr)
            xz, yz = np.load(io.BytesIO(x)), np.load(io.BytesIO(y))
            assert sorted(xz.files) == sorted(yz.files), (xz.files, yz.files)
            for k in yz.files:
                worst[f"activations:{k}"] = max(worst.get(f"activations:{k}", 0), rel_diff(xz[k], yz[k]))
        # KServe v2: a frames tensor (binary) in, logits out.
        t, c, h, w = meta["time"]["steps"], meta["input"]["channels"], meta["input"]["height"], meta["input"]["width"]
        frames = (np.sin(np.arange(t * c * h * w, dtype=np.float32) * 0.001) * 2).astype("<f4")
        header = json.dumps({"inputs": [{"name": "frames", "datatype": "FP32", "shape": [1, t, c, h, w],
                                         "parameters": {"binary_data_size": frames.nbytes}}],
                             "outputs": [{"name": "logits"}]}).encode()
        hdr = {"Inference-Header-Content-Length": str(len(header)), "content-type": "application/octet-stream"}
        body = header + frames.tobytes()
        (x, _), (y, _) = dev.post(f"/v2/models/{name}/infer", body, hdr), cpu.post(f"/v2/models/{name}/infer", body, hdr)
        worst["v2:logits"] = rel_diff(numbers(json.loads(x)["outputs"]), numbers(json.loads(y)["outputs"]))
    finally:
        dev.stop()
        cpu.stop()
    ok = all(v <= a.tolerance for v in worst.values())
    emit(a.out, {"step": "compare", "model": name, "device": a.device, "tf32": a.tf32, "images": a.images,
                 "tolerance": a.tolerance, "max_rel_diff": max(worst.values()), "ok": ok,
                 "per_output": {k: round(v, 8) for k, v in worst.items()},
                 "devices_listed": [m.get("devices") for m in models.get("models", models if isinstance(models, list) else [])],
                 "ready_s": {"device": round(dev.ready_s, 1), "cpu": round(cpu.ready_s, 1)}})
    return 0 if ok else 1


# ---- raw ORT -------------------------------------------------------------------------------------------------

def cmd_raw(a) -> int:
    for outputs in a.outputs.split(","):
        js = os.path.join(os.path.dirname(os.path.abspath(a.out)), f"raw-{outputs}-s{a.sessions}.json")
        cmd = [raw_bin(), "--model", a.model, "--device", a.device, "--batches", a.batches,
               "--sessions", str(a.sessions), "--seconds", str(a.seconds), "--min-runs", "3",
               "--outputs", outputs, "--tf32", str(a.tf32).lower(), "--json", js]
        if a.device == "cpu":
            cmd += ["--pool", "per-session"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(a.log, "ab"), text=True)
        memory = {}
        with UtilSampler() as util:
            for line in proc.stdout:  # one line per batch size, printed as it finishes
                parts = line.split()
                if parts and parts[0].isdigit():
                    memory[int(parts[0])] = process_memory_mib(proc.pid)
        if proc.wait() != 0:
            emit(a.out, {"step": "raw", "outputs": outputs, "error": f"raw_ort exited {proc.returncode}"})
            return 1
        with open(js) as f:
            result = json.load(f)
        for row in result["rows"]:
            row["memory_mib_after"] = memory.get(row["batch"])
        best = max(result["rows"], key=lambda r: r["images_per_s"])
        emit(a.out, {"step": "raw", **result, "best_batch": best["batch"], "best_images_per_s": best["images_per_s"],
                     "memory_kind": "gpu" if has_nvidia_smi() else "rss", **util.summary()})
    return 0


# ---- PyTorch eager -------------------------------------------------------------------------------------------

def cmd_torch(a) -> int:
    sys.path.insert(0, os.path.join(ROOT, "models"))
    import torch
    from convrnn.export import load_onnx_weights
    from convrnn.model import build_model

    cuda = a.device.startswith("cuda")
    dev = torch.device(a.device if cuda else "cpu")
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = a.tf32
        torch.backends.cuda.matmul.allow_tf32 = a.tf32
    else:
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    model = build_model(a.arch)
    load_onnx_weights(model, a.model)
    model = model.to(dev).eval()
    meta = model_meta(a.model)
    t, c, h, w = meta["time"]["steps"], meta["input"]["channels"], meta["input"]["height"], meta["input"]["width"]
    rows = []
    for b in [int(x) for x in a.batches.split(",")]:
        x = torch.randn(b, t, c, h, w, device=dev)
        try:
            with torch.inference_mode():
                for _ in range(2):  # cudnn.benchmark picks its algorithms on the first call per shape
                    model(x)
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                times = []
                started = time.perf_counter()
                while len(times) < 3 or time.perf_counter() - started < a.seconds:
                    t0 = time.perf_counter()
                    logits, _layers = model(x)
                    logits = logits.cpu()  # what a server returns; the layers stay on the device
                    times.append(time.perf_counter() - t0)
        except torch.OutOfMemoryError as e:
            rows.append({"batch": b, "error": f"out of memory: {e}"[:200]})
            torch.cuda.empty_cache()
            continue
        times.sort()
        rows.append({"batch": b, "runs": len(times), "p50_ms": round(times[len(times) // 2] * 1e3, 3),
                     "mean_ms": round(statistics.mean(times) * 1e3, 3),
                     "images_per_s": round(b * len(times) / sum(times), 2),
                     "memory_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda
                     else process_memory_mib(os.getpid())})
    ok_rows = [r for r in rows if "images_per_s" in r]
    best = max(ok_rows, key=lambda r: r["images_per_s"]) if ok_rows else None
    emit(a.out, {"step": "torch", "model": meta["name"], "device": a.device, "tf32": a.tf32,
                 "torch": torch.__version__, "cudnn_benchmark": cuda, "rows": rows,
                 "best_batch": best and best["batch"], "best_images_per_s": best and best["images_per_s"]})
    return 0


# ---- HTTP ----------------------------------------------------------------------------------------------------

def _client(url: str, body: bytes, connections: int, seconds: float, q) -> None:
    import aiohttp

    async def main():
        lat, errors = [], 0
        end = time.perf_counter() + seconds
        conn = aiohttp.TCPConnector(limit=connections)
        async with aiohttp.ClientSession(connector=conn) as s:
            async def one():
                nonlocal errors
                while time.perf_counter() < end:
                    t0 = time.perf_counter()
                    async with s.post(url, data=body, headers={"content-type": "image/jpeg"}) as r:
                        await r.read()
                        if r.status == 200:
                            lat.append(time.perf_counter() - t0)
                        else:
                            errors += 1
            await asyncio.gather(*(one() for _ in range(connections)))
        return lat, errors

    q.put(asyncio.run(main()))


def load(url: str, body: bytes, connections: int, procs: int, seconds: float) -> dict:
    procs = max(1, min(procs, connections))
    q = mp.get_context("fork").Queue()
    ps = [mp.get_context("fork").Process(target=_client, args=(url, body, max(1, connections // procs), seconds, q))
          for _ in range(procs)]
    started = time.perf_counter()
    for p in ps:
        p.start()
    results = [q.get() for _ in ps]
    for p in ps:
        p.join()
    wall = time.perf_counter() - started
    lat = sorted(x for r in results for x in r[0])
    errors = sum(r[1] for r in results)
    pct = lambda p: round(lat[min(len(lat) - 1, int(p * (len(lat) - 1)))] * 1e3, 2) if lat else None
    return {"requests": len(lat), "errors": errors, "images_per_s": round(len(lat) / wall, 2),
            "p50_ms": pct(0.5), "p90_ms": pct(0.9), "p99_ms": pct(0.99)}


def cmd_http(a) -> int:
    meta = model_meta(a.model)
    body = test_jpegs(meta, 1)[0]
    url_path = f"/v1/models/{meta['name']}/classify"
    for sessions in [int(s) for s in a.sessions.split(",")]:
        for delay in [int(d) for d in a.delay_ms.split(",")]:
            flags = ["--sessions-per-device", str(sessions), "--max-batch-size", str(a.max_batch),
                     "--max-queue-delay-ms", str(delay), "--queue-capacity", str(max(256, 4 * a.connections)),
                     "--cuda-tf32", str(a.tf32).lower(), "--http-threads", str(a.http_threads)]
            s = Server(a.model, a.device, flags, a.log)
            try:
                load(s.base + url_path, body, min(a.connections, 8), 1, min(2.0, a.seconds))  # warm the path
                with UtilSampler() as util:
                    sat = load(s.base + url_path, body, a.connections, a.procs, a.seconds)
                memory = process_memory_mib(s.proc.pid)
                single = load(s.base + url_path, body, 1, 1, a.single_seconds) if a.single_seconds > 0 else None
            finally:
                s.stop()
            emit(a.out, {"step": "http", "model": meta["name"], "device": a.device, "sessions": sessions,
                         "max_batch": a.max_batch, "max_queue_delay_ms": delay, "connections": a.connections,
                         "procs": a.procs, "seconds": a.seconds, "saturated": sat, "single": single,
                         "memory_mib": memory, "ready_s": round(s.ready_s, 1), **util.summary()})
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["compare", "raw", "torch", "http"])
    ap.add_argument("--model", required=True)
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--out", required=True)
    ap.add_argument("--log", default=None, help="servers' and raw_ort's stderr (default: beside --out)")
    ap.add_argument("--tf32", type=lambda s: s.lower() == "true", default=True)
    # compare
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--tolerance", type=float, default=1e-3)
    # raw, torch
    ap.add_argument("--batches", default="1,2,4,8,16,32,64")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--outputs", default="logits")
    ap.add_argument("--arch", default=None, help="torch: config name (default: the metadata's architecture)")
    # raw, http
    ap.add_argument("--sessions", default="1")
    # http
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--delay-ms", default="0")
    ap.add_argument("--connections", type=int, default=128)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--single-seconds", type=float, default=3.0)
    ap.add_argument("--http-threads", type=int, default=0)
    a = ap.parse_args(argv)
    a.log = a.log or os.path.join(os.path.dirname(os.path.abspath(a.out)), "servers.log")
    if a.step == "raw":
        a.sessions = int(a.sessions)
    if a.step == "torch" and not a.arch:
        meta = model_meta(a.model)
        named = os.path.join(ROOT, "models", "convrnn", "configs", meta["name"] + ".json")
        a.arch = meta["name"] if os.path.isfile(named) else meta["architecture"]
    return {"compare": cmd_compare, "raw": cmd_raw, "torch": cmd_torch, "http": cmd_http}[a.step](a)


if __name__ == "__main__":
    sys.exit(main())
