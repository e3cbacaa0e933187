"""Load benchmarks of the HTTP servers, driven by `wrk` from a separate process.

Starts the release `convrnn-serve` (one model per server, so it gets every core) or the Python
reference server, waits until ready, runs a matrix of wrk runs (`benches/suite/post.lua` posts one
real encoded image per request), samples the server's resident memory (VmRSS of the process
and its children) during each run, and appends one JSON line per run to --out.

    python benches/suite/load.py rust   --model models/rgc_fmnist.onnx --out r.jsonl --seconds 10 \
        --concurrency 1,8,32,128 --cases classify:model.jpg,classify:model.png,...
    python benches/suite/load.py python --model models/rgc_fmnist.onnx --out r.jsonl --concurrency 32
    python benches/suite/load.py overload --model ... --connections 2048 --seconds 120 --queue-capacity 64
    python benches/suite/load.py overload --bin target/debug/convrnn-serve --model ... --saturate 8 \
        --connections 240 --seconds 60 --queue-capacity 8   # docs/reliability.md, "Faults"
    python benches/suite/load.py paired --against raw --raw-dir bench-results/<run> --model ... \
        --concurrency 128 --rounds 6 --seconds 8
    python benches/suite/load.py paired --against python --model ... --concurrency 32 --rounds 6
    python benches/suite/load.py paired --against raw-latency --raw-dir bench-results/<run> --model ... \
        --concurrency 1 --rounds 6 --seconds 12

`paired` measures one target's two sides in alternating slices (A B B A A B ...) instead of one
after the other: these shared machines drift by 10-20% within minutes, more than the margins
being judged. `--against raw` alternates wrk against our server with `benches/suite/raw_ort.rs` at
the best batch size and layout found in --raw-dir (the run's raw part), with the same real image
as input; `--against python` alternates wrk against our server and the Python reference server,
both up for the whole run; `--against python-pruned` does the same with the reference running
the graph pruned to the logits (REF_PRUNE=1, as our classification does), which separates what
pruning gains from what the serving path gains. Each round's ratio, and their median, go into
one record. `--against raw-latency` is target 2's pair: wrk at --concurrency (1: one request at
a time on one keep-alive connection) against raw ORT at batch 1 in the layout with the lowest
batch-1 p50 in --raw-dir; each round's p50 difference, and their median, go into the record.

Cases are `ENDPOINT:IMAGE` with ENDPOINT one of classify, npz (activations, all layers x all
steps, Accept: application/x-npz), json (the same activations as JSON), and IMAGE one of
model.jpg, model.png, camera.jpg, camera.png (files from benches/suite/make_images.py).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import report  # benches/suite/report.py: the raw ceiling, defined once for the bench and the report

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "target", "release", "convrnn-serve")
LUA = os.path.join(ROOT, "benches", "suite", "post.lua")
VENV_PY = os.path.join(ROOT, "benches", ".venv", "bin", "python")


def model_meta(path: str) -> dict:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return json.loads(s.get_modelmeta().custom_metadata_map["convrnn"])


def thread_cpu(pid: int) -> dict:
    """CPU seconds (user + system) of a process's threads so far, summed by role: `http` for
    tokio's threads (the HTTP side: accept, parse, decode, answer), `inference` for the rest (the
    workers, which run ONNX Runtime on their own thread, and any ORT pool threads)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {"http": 0.0, "inference": 0.0}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:  # the thread ended
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        secs = (int(fields[11]) + int(fields[12])) / tick
        out["http" if comm.startswith("tokio") else "inference"] += secs
    return out


def status_kib(pid: int, key: str, default: int = 0) -> int:
    """One figure of /proc/PID/status in KiB (VmRSS, VmHWM...), `default` when it has none."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return default


def rss_kib(pid: int) -> int:
    """VmRSS of pid and all its descendants (uvicorn workers are children; 0 once gone)."""
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            total += status_kib(p, "VmRSS")
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError):
            pass
    return total


class Sampler(threading.Thread):
    def __init__(self, pid: int, every: float = 0.5):
        super().__init__(daemon=True)
        self.pid, self.every, self.samples, self.stop_flag = pid, every, [], False
        self.t0 = time.monotonic()

    def run(self):
        # (seconds, RSS KiB, open file descriptors: mostly the connections the server holds)
        while not self.stop_flag:
            try:
                fds = len(os.listdir(f"/proc/{self.pid}/fd"))
            except OSError:
                fds = -1
            self.samples.append((round(time.monotonic() - self.t0, 2), rss_kib(self.pid), fds))
            time.sleep(self.every)

    def stop(self):
        self.stop_flag = True
        self.join()
        return self.samples


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 600.0):
    t0 = time.monotonic()
    time.sleep(0.3)  # a server that cannot bind exits at once: do not talk to someone else's
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200 and proc.poll() is None:
                    return time.monotonic() - t0
        except Exception:  # noqa: BLE001
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def stop(proc: subprocess.Popen):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def pinned(cmd: list[str], cpus: str | None) -> list[str]:
    """`cmd` run on the CPUs `cpus` (a taskset list such as "0" or "0-3"), when given."""
    return ["taskset", "-c", cpus, *cmd] if cpus else cmd


def start_rust(model: str, port: int, flags: list[str], log: str, binary: str = BIN,
               cpus: str | None = None):
    mdir = tempfile.mkdtemp(prefix="bench-models-")
    os.symlink(os.path.abspath(model), os.path.join(mdir, os.path.basename(model)))
    # taskset execs the server, so the pid sampled is the server's
    cmd = pinned([binary, "serve", "--model-dir", mdir, "--listen", f"127.0.0.1:{port}", "--devices", "cpu",
                  *flags], cpus)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True, env={**os.environ, "RUST_LOG": "warn"})
    return proc, cmd, mdir


def start_python(model: str, port: int, workers: int, intra: int, log: str, prune: bool = False):
    cmd = [VENV_PY, "-m", "uvicorn", "ref_server:app", "--app-dir", os.path.join(ROOT, "benches", "suite"),
           "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
           "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]
    env = {**os.environ, "REF_MODEL": os.path.abspath(model), "REF_INTRA_THREADS": str(intra),
           "OMP_NUM_THREADS": str(intra), "REF_PRUNE": "1" if prune else "0"}
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True, env=env)
    return proc, cmd


def run_wrk(url: str, body: str, ctype: str, accept: str, conns: int, seconds: float,
            timeout_s: int, threads: int = 1, count_429: bool = False, cpus: str | None = None) -> dict:
    cmd = pinned(["wrk", f"-t{min(threads, conns)}", f"-c{conns}", f"-d{int(round(seconds))}s", f"--timeout",
                  f"{timeout_s}s", "-s", LUA, url], cpus)
    env = {**os.environ, "BODY_FILE": body, "CONTENT_TYPE": ctype, "ACCEPT": accept,
           "COUNT_429": "1" if count_429 else "0"}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("WRKJSON "):
            r = json.loads(line[len("WRKJSON "):])
            r["wrk_cmd"] = " ".join(cmd)
            return r
    raise RuntimeError(f"wrk failed: {out.stdout}\n{out.stderr}")


def post_once(url: str, body: str, ctype: str, accept: str) -> int:
    req = urllib.request.Request(url, data=open(body, "rb").read(), method="POST",
                                 headers={"Content-Type": ctype, **({"Accept": accept} if accept else {})})
    with urllib.request.urlopen(req, timeout=600) as r:
        return len(r.read())


ENDPOINTS = {
    # name: (path suffix, query, accept)
    "classify": ("classify", "", ""),
    "npz": ("activations", "?layers=all&steps=all", "application/x-npz"),
    "json": ("activations", "?layers=all&steps=all", "application/json"),
}


def image_file(images: str, name: str, size: int) -> tuple[str, str]:
    kind, ext = name.split(".")
    path = os.path.join(images, f"model-{size}.{ext}" if kind == "model" else f"camera.{ext}")
    return path, "image/jpeg" if ext == "jpg" else "image/png"


def emit(out: str, rec: dict):
    with open(out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    keys = ("server", "model", "case", "conns", "ok_rps", "lat_p50_ms", "lat_p99_ms", "non2xx",
            "rss_max_mib", "median_ratio", "median_p50_diff_ms")
    print("  ".join(f"{k}={rec.get(k)}" for k in keys), flush=True)


def matrix(args, server: str, base: str, pid: int, meta: dict, extra: dict):
    size = meta["input"]["height"]
    for case in args.cases.split(","):
        endpoint, img = case.split(":")
        suffix, query, accept = ENDPOINTS[endpoint]
        url = f"{base}/v1/models/{meta['name']}/{suffix}{query}"
        body, ctype = image_file(args.images, img, size)
        resp_bytes = post_once(url, body, ctype, accept)  # also a warm-up
        for conns in [int(c) for c in args.concurrency.split(",")]:
            sampler = Sampler(pid)
            sampler.start()
            r = run_wrk(url, body, ctype, accept, conns, args.seconds, args.wrk_timeout)
            samples = sampler.stop()
            rec = {"server": server, "model": meta["name"], "case": case, "endpoint": endpoint,
                   "image": img, "conns": conns, "body_bytes": os.path.getsize(body),
                   "response_bytes": resp_bytes, **r,
                   "rss_max_mib": round(max(s[1] for s in samples) / 1024, 1), **extra}
            emit(args.out, rec)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("server", choices=["rust", "python", "overload", "paired"])
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--images", default=os.path.join(ROOT, "bench-results", "images"))
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--concurrency", default="1,8,32,128")
    ap.add_argument("--cases", default="classify:model.jpg")
    ap.add_argument("--port", type=int, default=0, help="0: a free port")
    ap.add_argument("--wrk-timeout", type=int, default=60)
    ap.add_argument("--tag", default="", help="free text stored with each record")
    # Rust server flags
    ap.add_argument("--max-batch-size", type=int, default=8)
    ap.add_argument("--max-queue-delay-ms", type=int, default=2)
    ap.add_argument("--sessions-per-device", type=int, default=1)
    ap.add_argument("--intra-threads", type=int, default=0)
    ap.add_argument("--cpu-thread-pool", default="adaptive", choices=["adaptive", "per-session", "shared"])
    ap.add_argument("--queue-capacity", type=int, default=256)
    ap.add_argument("--request-timeout-ms", type=int, default=120000)
    ap.add_argument("--extra-flags", default="")
    # Python server settings
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--py-intra-threads", type=int, default=1)
    # overload
    ap.add_argument("--connections", type=int, default=2048)
    ap.add_argument("--overload-case", default="classify:camera.jpg")
    ap.add_argument("--saturate", type=int, default=0,
                    help="first measure the saturated rate with this many connections for "
                         "--saturate-seconds, and report the overload's offered rate against it")
    ap.add_argument("--saturate-seconds", type=float, default=10)
    ap.add_argument("--bin", default=BIN, help="the server binary (default: the release build)")
    ap.add_argument("--server-cpus", help="overload: pin the server to these CPUs (taskset list, e.g. 0)")
    ap.add_argument("--client-cpus", help="overload: pin wrk to these CPUs (e.g. 1), apart from the server")
    # paired
    ap.add_argument("--against", choices=["raw", "raw-latency", "python", "python-pruned"],
                    default="raw",
                    help="python-pruned: the reference on the graph pruned to logits (REF_PRUNE=1); "
                         "raw-latency: p50 at --concurrency against raw batch 1 (target 2)")
    ap.add_argument("--raw-dir", help="folder with the raw part's raw-<model>-logits-*.json")
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()

    meta = model_meta(args.model)
    if not args.port:
        args.port = free_port()
    base = f"http://127.0.0.1:{args.port}"
    log = os.path.join(os.path.dirname(os.path.abspath(args.out)),
                       f"server-{args.server}-{meta['name']}-{args.port}.log")
    if args.server == "paired":
        return paired(args, meta, base, log)
    if args.server in ("rust", "overload"):
        proc, cmd, mdir = start_rust(args.model, args.port, rust_flags(args), log, args.bin,
                                     args.server_cpus if args.server == "overload" else None)
        extra = {"server_cmd": " ".join(cmd[1:]).replace(mdir, "<dir with the model>"),
                 "tag": args.tag}
    else:
        proc, cmd = start_python(args.model, args.port, args.workers, args.py_intra_threads, log)
        mdir = None
        extra = {"server_cmd": f"REF_MODEL={args.model} REF_INTRA_THREADS={args.py_intra_threads} "
                               + " ".join(cmd[2:]), "tag": args.tag}
    try:
        ready = wait_ready(f"{base}/health/ready", proc)
        print(f"{args.server} server ready in {ready:.1f}s: {' '.join(cmd)}", flush=True)
        if args.server == "overload":
            overload(args, base, proc.pid, meta, extra)
        else:
            matrix(args, args.server, base, proc.pid, meta, extra)
    finally:
        stop(proc)
        if mdir:
            shutil.rmtree(mdir, ignore_errors=True)


def rust_flags(args) -> list[str]:
    return ["--max-batch-size", str(args.max_batch_size),
            "--max-queue-delay-ms", str(args.max_queue_delay_ms),
            "--sessions-per-device", str(args.sessions_per_device),
            "--intra-threads", str(args.intra_threads),
            "--cpu-thread-pool", args.cpu_thread_pool,
            "--queue-capacity", str(args.queue_capacity),
            "--request-timeout-ms", str(args.request_timeout_ms),
            *args.extra_flags.split()]


def run_raw(model: str, best: dict, image: str, seconds: float) -> dict:
    fd, out = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    cmd = ["cargo", "bench", "--quiet", "--bench", "raw_ort", "--", "--model", model,
           "--batches", str(best["batch"]), "--seconds", str(seconds), "--min-runs", "3",
           "--sessions", str(best["sessions"]), "--pool", best["pool"], "--outputs", "logits",
           "--image", image, "--json", out]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    r = json.load(open(out))
    os.unlink(out)
    return r["rows"][0]


def paired(args, meta: dict, base: str, log: str):
    """Our server against raw ORT or the Python server, in alternating slices (see the top)."""
    endpoint, img = args.cases.split(",")[0].split(":")
    suffix, query, accept = ENDPOINTS[endpoint]
    url = f"{base}/v1/models/{meta['name']}/{suffix}{query}"
    body, ctype = image_file(args.images, img, meta["input"]["height"])
    conns = int(args.concurrency.split(",")[0])
    proc, cmd, mdir = start_rust(args.model, args.port, rust_flags(args), log)
    procs = [proc]
    rec = {"server": "paired", "against": args.against, "model": meta["name"],
           "case": f"{endpoint}:{img}", "conns": conns, "seconds": args.seconds,
           "server_cmd": " ".join(cmd[1:]).replace(mdir, "<dir with the model>"), "tag": args.tag}
    try:
        wait_ready(f"{base}/health/ready", proc)
        post_once(url, body, ctype, accept)
        if args.against in ("raw", "raw-latency"):
            # The same reference the report judges target 1 (or 2) against.
            pick_raw = report.raw_ceiling if args.against == "raw" else report.raw_batch1
            best = pick_raw(report.load_raw(args.raw_dir), meta["name"])
            if best is None:
                raise RuntimeError(f"no raw results for {meta['name']} in {args.raw_dir}: "
                                   "run the raw part first")
            rec["raw"] = best

            def other() -> dict:
                row = run_raw(args.model, best, body, args.seconds)
                return {"ok_rps": row["images_per_s"], "cpu_ms_per_image": row.get("cpu_ms_per_image"),
                        "lat_p50_ms": row["p50_ms"]}
        else:
            py_port = free_port()
            py_base = f"http://127.0.0.1:{py_port}"
            py_log = log.replace("server-paired", "server-paired-python")
            prune = args.against == "python-pruned"
            py, py_cmd = start_python(args.model, py_port, args.workers, args.py_intra_threads,
                                      py_log, prune)
            procs.append(py)
            wait_ready(f"{py_base}/health/ready", py)
            py_url = f"{py_base}/v1/models/{meta['name']}/{suffix}{query}"
            post_once(py_url, body, ctype, accept)
            rec["python_cmd"] = (f"REF_MODEL={args.model} REF_INTRA_THREADS={args.py_intra_threads} "
                                 + ("REF_PRUNE=1 " if prune else "") + " ".join(py_cmd[2:]))

            def other() -> dict:
                return run_wrk(py_url, body, ctype, accept, conns, args.seconds, args.wrk_timeout)

        def ours() -> dict:
            # Where the server's CPU went during the slice: what an image cost its inference
            # threads (to set beside raw ORT's) and what a request cost its HTTP threads.
            before = thread_cpu(proc.pid)
            r = run_wrk(url, body, ctype, accept, conns, args.seconds, args.wrk_timeout)
            after = thread_cpu(proc.pid)
            if r.get("requests"):
                r["cpu_ms_per_image"] = (after["inference"] - before["inference"]) * 1e3 / r["requests"]
                r["http_cpu_ms_per_request"] = (after["http"] - before["http"]) * 1e3 / r["requests"]
            return r

        rounds = []
        for i in range(args.rounds):
            # A B, then B A: a steady drift within the pair cancels over two rounds.
            order = [("ours", ours), ("other", other)] if i % 2 == 0 else [("other", other), ("ours", ours)]
            res = {name: fn() for name, fn in order}
            o, t = res["ours"], res["other"]
            rounds.append({"ours_rps": o["ok_rps"], "ours_p99_ms": o.get("lat_p99_ms"),
                           "ours_p50_ms": o.get("lat_p50_ms"), "other_p50_ms": t.get("lat_p50_ms"),
                           "ours_non2xx": o.get("non2xx"), "other_rps": t["ok_rps"],
                           "other_p99_ms": t.get("lat_p99_ms"), "other_non2xx": t.get("non2xx"),
                           "ratio": o["ok_rps"] / t["ok_rps"] if t["ok_rps"] else None,
                           "ours_cpu_ms_per_image": o.get("cpu_ms_per_image"),
                           "ours_http_cpu_ms_per_request": o.get("http_cpu_ms_per_request"),
                           "other_cpu_ms_per_image": t.get("cpu_ms_per_image")})
            if args.against == "raw-latency":
                rounds[-1]["p50_diff_ms"] = o["lat_p50_ms"] - t["lat_p50_ms"]
                print(f"  round {i + 1}: ours p50 {o['lat_p50_ms']:.2f} ms vs raw batch 1 "
                      f"{t['lat_p50_ms']:.2f} ms = {rounds[-1]['p50_diff_ms']:+.2f} ms", flush=True)
            else:
                print(f"  round {i + 1}: ours {o['ok_rps']:.1f} vs {args.against} {t['ok_rps']:.1f} "
                      f"= {rounds[-1]['ratio']:.3f}x", flush=True)
        rec["rounds"] = rounds
        rec["median_ratio"] = statistics.median(r["ratio"] for r in rounds if r["ratio"] is not None)
        if args.against == "raw-latency":
            rec["median_p50_diff_ms"] = statistics.median(r["p50_diff_ms"] for r in rounds)
        emit(args.out, rec)
    finally:
        for p in procs:
            stop(p)
        shutil.rmtree(mdir, ignore_errors=True)


def overload(args, base: str, pid: int, meta: dict, extra: dict):
    """Far more concurrent requests than the queue holds, for --seconds; RSS every 0.5 s."""
    endpoint, img = args.overload_case.split(":")
    suffix, query, accept = ENDPOINTS[endpoint]
    url = f"{base}/v1/models/{meta['name']}/{suffix}{query}"
    body, ctype = image_file(args.images, img, meta["input"]["height"])
    post_once(url, body, ctype, accept)
    saturated = None
    if args.saturate:
        saturated = run_wrk(url, body, ctype, accept, args.saturate, args.saturate_seconds,
                            args.wrk_timeout, count_429=True, cpus=args.client_cpus)
    before = queue_wait_buckets(base, meta["name"])
    idle = rss_kib(pid)
    sampler = Sampler(pid)
    sampler.start()
    r = run_wrk(url, body, ctype, accept, args.connections, args.seconds, args.wrk_timeout,
                threads=2, count_429=True, cpus=args.client_cpus)
    stopped = time.monotonic()
    # Full service again: the first request after the load that is answered 200.
    while True:
        try:
            post_once(url, body, ctype, accept)
            break
        except Exception:  # noqa: BLE001  (a 429 from the queue the load left behind)
            time.sleep(0.02)
    recovered_s = time.monotonic() - stopped
    samples = sampler.stop()
    after = rss_kib(pid)
    delta = {le: n - before.get(le, 0) for le, n in queue_wait_buckets(base, meta["name"]).items()}
    half = [s_[1] for s_ in samples[len(samples) // 2:]] or [0]
    rec = {"server": "overload", "model": meta["name"], "case": args.overload_case,
           "endpoint": endpoint, "image": img, "conns": args.connections,
           "queue_capacity": args.queue_capacity, "body_bytes": os.path.getsize(body), **r,
           "other_errors": r["non2xx"] - r["status429"],
           "conn_errors": r["err_connect"] + r["err_read"] + r["err_write"] + r["err_timeout"],
           "saturated_ok_rps": saturated and saturated["ok_rps"],
           "offered_x_saturated": saturated and round(r["rps"] / max(saturated["ok_rps"], 1e-9), 1),
           "accepted_queue_wait_p99_le_s": percentile_bucket(delta, 0.99),
           "recovered_s": round(recovered_s, 3),
           "rss_idle_mib": round(idle / 1024, 1), "rss_after_mib": round(after / 1024, 1),
           "rss_max_mib": round(max(s_[1] for s_ in samples) / 1024, 1),
           "rss_second_half_min_max_mib": [round(min(half) / 1024, 1), round(max(half) / 1024, 1)],
           "rss_samples": samples, **extra}
    emit(args.out, rec)
    keys = ("saturated_ok_rps", "offered_x_saturated", "status429", "other_errors", "conn_errors",
            "accepted_queue_wait_p99_le_s", "recovered_s", "rss_idle_mib",
            "rss_second_half_min_max_mib")
    print("  ".join(f"{k}={rec.get(k)}" for k in keys), flush=True)


def queue_wait_buckets(base: str, model: str) -> dict:
    """The cumulative buckets of convrnn_queue_duration_seconds for `model`: how long accepted
    items waited before their batch started."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("convrnn_queue_duration_seconds_bucket{") and f'model="{model}"' in line:
            le = line.split('le="')[1].split('"')[0]
            out[le] = float(line.rsplit(" ", 1)[1])
    return out


def percentile_bucket(cumulative: dict, q: float):
    """The upper bound of the bucket that holds quantile `q` of a cumulative histogram."""
    total = cumulative.get("+Inf", 0)
    if not total:
        return None
    for le, n in sorted(cumulative.items(), key=lambda kv: float(kv[0])):
        if n >= q * total:
            return float(le)
    return None


if __name__ == "__main__":
    sys.exit(main())
