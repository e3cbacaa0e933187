"""Is the server faster than the authors' own code? (issue 19, section 5; docs/benchmarks.md,
"Against the authors' TensorFlow code")

One run, one machine, the same weights and the same 17-step movies, four sides measured in
interleaved rounds (the order rotates every round, so the machine's drift hits all alike):

- ``tf-b1``, ``tf-b8``: the authors' TF code (github neuroailab/convrnns, read from --authors,
  under tensorflow-cpu's compat.v1 through models/reference/tf1_shim.py) on their run_model.py
  path: their ``model_func`` and registry kwargs at the full 224 px, ``out_layers="imnetds"``
  and the other defaults, the checkpoint restored through their ``get_restore_vars``, their
  ``normalize_ims``, one ``tf.Session()`` with default options, batch 1 and batch 8;
- ``server``: the release ``convrnn-serve serve`` with its defaults (``--devices cpu``) serving
  the converted ONNX file, clients posting the PNGs to ``/v1/models/{m}/classify`` over HTTP;
- ``ort``: Python ONNX Runtime on the same file pruned to its logits (what the server runs for
  a classification), one session on all cores, batch 1, the movie built in numpy.

Each side is its own process (TF and ORT: a worker process of this script; the server: its
binary); peak memory is each process's VmHWM (peak RSS) at the end. Outputs must agree: the
top-5 classes at the readout step of every image equal between TF and the server and ORT, and
the logits of ORT within 1e-4 (relative to their largest) of TF's.

Inputs: 256x256 PNGs (skimage.data photos, fitted, and their mirror images); TF and ORT take
their centre 224x224, the server gets the PNG and does the same (the model's preprocessing:
shorter side to 256, which is the identity here, then the centre 224), so all see the same pixels.

Prepare the weights once (TF venv; a seeded random checkpoint at the full 224 px, then the
converter), then run (about 12 minutes on a loaded 2-core machine, half of it the server's
start-up):

    /work/tfref/venv/bin/python models/reference/authors_reference.py --authors /work/tfref/convrnns \\
        --out /tmp/ref224 --arch rgc_intermediate --checkpoint-dir /tmp/ckpt --full-size
    (cd models && .venv/bin/python -m convrnn.convert --arch rgc_intermediate \\
        --checkpoint /tmp/ckpt/rgc_intermediate/model.ckpt --out /tmp/rgc_intermediate.onnx)
    .venv/bin/python benches/investigations/authors_tf_vs_server.py --authors /work/tfref/convrnns \\
        --tf-python /work/tfref/venv/bin/python --checkpoint /tmp/ckpt/rgc_intermediate/model.ckpt \\
        --onnx /tmp/rgc_intermediate.onnx --binary target/release/convrnn-serve --out /tmp/tf_vs_server.json
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "benches", "suite"))
from load import status_kib  # noqa: E402  (the suite's /proc reader)
CROP = 224
SIDE = 256  # the converted model's resize_shorter_side: the server only cuts out the centre
OFF = (SIDE - CROP) // 2


def vm_hwm_kib(pid: int, key: str = "VmHWM") -> int:
    """Peak resident memory (VmHWM) of a process, or another /proc/PID/status figure, KiB."""
    return status_kib(pid, key, default=-1)


def say(obj) -> None:
    # the workers' answers; everything else they (and the authors' code) print goes elsewhere
    sys.__stdout__.write("@@ " + json.dumps(obj) + "\n")
    sys.__stdout__.flush()


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# ---------------------------------------------------------------- workers (own processes)

def tf_worker(a) -> None:
    """The authors' run_model.py path at batch ``a.batch``."""
    t0 = time.monotonic()
    sys.stdout = sys.stderr  # their code prints; keep the answer channel clean
    sys.path.insert(0, os.path.join(ROOT, "models", "reference"))
    from tf1_shim import install

    v1 = install(a.authors)  # also chdirs to their root, as run_model.py expects
    import tensorflow as tf  # the shim's compat.v1 module, as their files see it
    from convrnns.models.model_func import model_func
    from convrnns.utils.loader import MODEL_TO_KWARGS, get_restore_vars
    from run_model import normalize_ims

    if a.batch == 1:
        # model_func builds its readout even when it is not fetched, and its 'last' decoder
        # squeezes the batch dimension away and then asserts rank 2: keep the batch axis there
        squeeze = tf.squeeze

        def keep_batch_squeeze(x, axis=None, name=None, **kw):
            if axis is None:
                axis = [i for i, d in enumerate(x.shape.as_list()) if d == 1 and i > 0]
                if not axis:  # an empty list would squeeze every size-1 axis
                    return x
            return squeeze(x, axis=axis, name=name, **kw)

        tf.squeeze = keep_batch_squeeze
    images = np.load(a.images)  # [N, 256, 256, 3] uint8
    crops = images[:, OFF:OFF + CROP, OFF:OFF + CROP]
    inputs = tf.placeholder(tf.float32, shape=[a.batch, CROP, CROP, 3])
    y = model_func(inputs=inputs, out_layers=["imnetds"], **MODEL_TO_KWARGS[a.arch])
    last = max(y["imnetds"])
    sess = tf.Session()
    restore_vars = get_restore_vars(a.checkpoint)
    tf.train.Saver(var_list=restore_vars).restore(sess, a.checkpoint)
    assert len(restore_vars) == len(v1.global_variables()), "their loader skipped variables"

    def run_all():
        logits = []
        for i in range(0, len(crops), a.batch):
            x = normalize_ims(crops[i:i + a.batch])
            out = sess.run(y, feed_dict={inputs: x})
            logits.append(np.asarray(out["imnetds"][last]).reshape(a.batch, -1))
        return np.concatenate(logits)

    run_all()  # warm-up: the first run pays grappler's graph rewrite
    say({"ready_s": time.monotonic() - t0, "pid": os.getpid()})
    serve_commands(run_all)


def ort_worker(a) -> None:
    """ONNX Runtime on the converted file pruned to its logits, batch 1, all cores."""
    t0 = time.monotonic()
    import onnxruntime as ort

    sys.path.insert(0, os.path.join(ROOT, "benches", "suite"))
    from onnx_prune import pruned_to_logits

    import onnx
    meta = {p.key: p.value for p in onnx.load(a.onnx, load_external_data=False).metadata_props}
    cfg = json.loads(meta["convrnn"])
    mean = np.array(cfg["input"]["mean"], np.float32)
    std = np.array(cfg["input"]["std"], np.float32)
    tm = cfg["time"]
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(pruned_to_logits(a.onnx), so, providers=["CPUExecutionProvider"])
    images = np.load(a.images)
    crops = images[:, OFF:OFF + CROP, OFF:OFF + CROP]

    def run_all():
        logits = []
        for img in crops:
            x = ((img.astype(np.float32) / 255.0 - mean) / std).transpose(2, 0, 1)
            movie = np.full((1, tm["steps"], 3, CROP, CROP), tm["blank_value"], np.float32)
            movie[0, :tm["image_on_steps"]] = x
            out = sess.run(["logits"], {"frames": movie})[0]
            logits.append(out[:, -1])  # readout "last"
        return np.concatenate(logits)

    run_all()
    say({"ready_s": time.monotonic() - t0, "pid": os.getpid()})
    serve_commands(run_all)


def serve_commands(run_all) -> None:
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "run":
            repeat = int(cmd[1])
            t0 = time.monotonic()
            for r in range(repeat):
                logits = run_all()
                if r == 0:
                    first = logits
            secs = time.monotonic() - t0
            say({"images": repeat * len(first), "seconds": secs, "logits": first.tolist()})
        elif cmd[0] == "quit":
            say({"vm_hwm_kib": vm_hwm_kib(os.getpid()), "vm_rss_kib": vm_hwm_kib(os.getpid(), "VmRSS"),
                 "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss})
            return


# ---------------------------------------------------------------- driver

class Worker:
    def __init__(self, name, cmd, log):
        self.name = name
        self.log = open(log, "w")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, bufsize=1)

    def answer(self):
        for line in self.proc.stdout:
            if line.startswith("@@ "):
                return json.loads(line[3:])
        raise RuntimeError("%s exited (%s); see its log" % (self.name, self.proc.wait()))

    def run(self, repeat):
        self.proc.stdin.write("run %d\n" % repeat)
        self.proc.stdin.flush()
        return self.answer()

    def quit(self):
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        res = self.answer()
        self.proc.wait(60)
        return res


class Server:
    def __init__(self, binary, onnx_path, log):
        self.dir = tempfile.mkdtemp(prefix="tf-vs-server-")
        os.symlink(os.path.abspath(onnx_path), os.path.join(self.dir, os.path.basename(onnx_path)))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.cmd = [binary, "serve", "--model-dir", self.dir, "--listen",
                    "127.0.0.1:%d" % self.port, "--devices", "cpu"]
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, stdout=open(log, "w"),
                                     stderr=subprocess.STDOUT, env={**os.environ, "RUST_LOG": "warn"})
        self.t0 = time.monotonic()
        self.local = threading.local()

    def wait_ready(self, timeout=900):
        import urllib.request
        while time.monotonic() - self.t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited with %s" % self.proc.returncode)
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/health/ready" % self.port, timeout=2) as r:
                    if r.status == 200:
                        return time.monotonic() - self.t0
            except Exception:  # noqa: BLE001
                pass
            time.sleep(0.5)
        raise RuntimeError("server not ready")

    def classify(self, model, png):
        import http.client
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        conn.request("POST", "/v1/models/%s/classify?top_k=5" % model, body=png,
                     headers={"Content-Type": "image/png"})
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError("classify: HTTP %d %s" % (r.status, body[:300]))
        res = json.loads(body)["results"][0]
        return [k["index"] for k in res["top_k"]], [k["probability"] for k in res["top_k"]]

    def run(self, model, pngs, repeat, concurrency):
        from concurrent.futures import ThreadPoolExecutor
        jobs = [p for _ in range(repeat) for p in pngs]
        t0 = time.monotonic()
        with ThreadPoolExecutor(concurrency) as ex:
            res = list(ex.map(lambda p: self.classify(model, p), jobs))
        return {"images": len(jobs), "seconds": time.monotonic() - t0, "top5": res[:len(pngs)]}


def make_images(n):
    """n SIDE x SIDE RGB photos: skimage's bundled ones, fitted (shorter side, centre crop)."""
    from skimage import data
    from PIL import Image
    import io
    photos = [getattr(data, name)() for name in ("astronaut", "coffee", "chelsea", "rocket")]
    out, pngs = [], []
    for i in range(n):
        im = Image.fromarray(photos[i % len(photos)])
        w, h = im.size
        s = SIDE / min(w, h)
        im = im.resize((max(SIDE, round(w * s)), max(SIDE, round(h * s))), Image.LANCZOS)
        w, h = im.size
        im = im.crop(((w - SIDE) // 2, (h - SIDE) // 2, (w - SIDE) // 2 + SIDE, (h - SIDE) // 2 + SIDE))
        if (i // len(photos)) % 2:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        out.append(np.asarray(im.convert("RGB")))
        buf = io.BytesIO()
        im.convert("RGB").save(buf, "PNG")
        pngs.append(buf.getvalue())
    return np.stack(out), pngs


def check_agreement(sides, server_top5, tol):
    """TF b1 is the reference: every side's top-5 at the readout step equal to it; ORT's and
    TF b8's logits within tol of its largest logit; the server's top-5 probabilities within
    tol of TF's softmax."""
    ref = np.asarray(sides["tf-b1"])
    ref_top5 = np.argsort(-ref, -1, kind="stable")[:, :5]
    report = {"tf_b1_top1": ref_top5[:, 0].tolist()}
    for name in ("tf-b8", "ort"):
        got = np.asarray(sides[name])
        report[name + "_rel_err"] = float(np.abs(got - ref).max() / np.abs(ref).max())
        report[name + "_top5_equal"] = bool(np.array_equal(np.argsort(-got, -1, kind="stable")[:, :5], ref_top5))
    idx = np.array([t[0] for t in server_top5])
    prob = np.array([t[1] for t in server_top5])
    report["server_top5_equal"] = bool(np.array_equal(idx, ref_top5))
    ref_prob = np.take_along_axis(softmax(ref.astype(np.float64)), ref_top5, -1)
    report["server_prob_abs_err"] = float(np.abs(prob - ref_prob).max())
    ok = (report["server_top5_equal"] and report["ort_top5_equal"] and report["tf-b8_top5_equal"]
          and report["server_prob_abs_err"] <= tol
          and report["ort_rel_err"] <= tol and report["tf-b8_rel_err"] <= tol)
    report["agree"] = bool(ok)
    return report


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=["tf", "ort"], help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--images-npy", dest="images", help=argparse.SUPPRESS)
    ap.add_argument("--authors", help="root of a neuroailab/convrnns checkout")
    ap.add_argument("--tf-python", help="a Python with tensorflow-cpu, networkx and six")
    ap.add_argument("--checkpoint", help="TF checkpoint prefix (DIR/model.ckpt)")
    ap.add_argument("--onnx", help="the same weights converted by convrnn.convert")
    ap.add_argument("--arch", default="rgc_intermediate")
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "convrnn-serve"))
    ap.add_argument("--count", type=int, default=8, help="images (a multiple of 8)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tf-repeat", type=int, default=1, help="passes over the images per round, TF")
    ap.add_argument("--fast-repeat", type=int, default=2, help="... server and ONNX Runtime")
    ap.add_argument("--concurrency", type=int, default=4, help="client connections to the server")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--out", help="JSON results")
    ap.add_argument("--logs", default=tempfile.gettempdir())
    a = ap.parse_args()
    if a.worker == "tf":
        return tf_worker(a)
    if a.worker == "ort":
        return ort_worker(a)

    t_start = time.monotonic()
    a.loadavg_start = os.getloadavg()
    assert a.count % 8 == 0
    images, pngs = make_images(a.count)
    npy = os.path.join(tempfile.mkdtemp(prefix="tf-vs-server-"), "images.npy")
    np.save(npy, images)
    me = os.path.abspath(__file__)
    common = ["--arch", a.arch, "--images-npy", npy, "--checkpoint", os.path.abspath(a.checkpoint),
              "--onnx", os.path.abspath(a.onnx), "--authors", os.path.abspath(a.authors)]
    # all four start together; their start-up is not what is compared
    server = Server(a.binary, a.onnx, os.path.join(a.logs, "tfvs-server.log"))
    workers = {
        "tf-b1": Worker("tf-b1", [a.tf_python, me, "--worker", "tf", "--batch", "1", *common],
                        os.path.join(a.logs, "tfvs-tf-b1.log")),
        "tf-b8": Worker("tf-b8", [a.tf_python, me, "--worker", "tf", "--batch", "8", *common],
                        os.path.join(a.logs, "tfvs-tf-b8.log")),
        "ort": Worker("ort", [sys.executable, me, "--worker", "ort", *common],
                      os.path.join(a.logs, "tfvs-ort.log")),
    }
    try:
        return measure(a, server, workers, pngs, t_start)
    finally:
        for w in workers.values():
            if w.proc.poll() is None:
                w.proc.kill()
        if server.proc.poll() is None:
            server.proc.terminate()
            server.proc.wait(60)


def measure(a, server, workers, pngs, t_start):
    ready = {n: w.answer()["ready_s"] for n, w in workers.items()}
    ready["server"] = server.wait_ready()
    for p in pngs[:2]:
        server.classify(a.arch, p)  # warm-up
    print("ready (s, started together, warm-up run included for the workers):",
          {k: round(v, 1) for k, v in ready.items()}, flush=True)

    names = ["tf-b1", "tf-b8", "server", "ort"]
    rounds, logits, server_top5 = [], {}, None
    for r in range(a.rounds):
        order = names[r % 4:] + names[:r % 4]
        row = {}
        for n in order:
            if n == "server":
                res = server.run(a.arch, pngs, a.fast_repeat, a.concurrency)
                server_top5 = res.pop("top5")
            else:
                res = workers[n].run(a.tf_repeat if n.startswith("tf") else a.fast_repeat)
                logits[n] = res.pop("logits")
            res["images_per_s"] = res["images"] / res["seconds"]
            row[n] = res
        rounds.append(row)
        print("round %d:" % r, {n: round(row[n]["images_per_s"], 3) for n in names}, flush=True)

    peak = {n: w.quit() for n, w in workers.items()}
    peak["server"] = {"vm_hwm_kib": vm_hwm_kib(server.proc.pid),
                      "vm_rss_kib": vm_hwm_kib(server.proc.pid, "VmRSS")}
    agree = check_agreement(logits, server_top5, a.tol)

    def med(xs):
        return float(np.median(xs))
    summary = {n: {"images_per_s_median": med([row[n]["images_per_s"] for row in rounds]),
                   "images_per_s_rounds": [row[n]["images_per_s"] for row in rounds],
                   "peak_rss_mib": peak[n]["vm_hwm_kib"] / 1024.0,
                   "rss_at_end_mib": peak[n]["vm_rss_kib"] / 1024.0} for n in names}
    ratios = {}
    for num in ("server", "ort"):
        for den in ("tf-b1", "tf-b8"):
            per = [row[num]["images_per_s"] / row[den]["images_per_s"] for row in rounds]
            ratios["%s/%s" % (num, den)] = {"median": med(per), "rounds": per}
    per = [row["server"]["images_per_s"] / row["ort"]["images_per_s"] for row in rounds]
    ratios["server/ort"] = {"median": med(per), "rounds": per}
    result = {"arch": a.arch, "count": a.count, "rounds": a.rounds, "tf_repeat": a.tf_repeat,
              "fast_repeat": a.fast_repeat, "concurrency": a.concurrency, "ready_s": ready,
              "server_cmd": " ".join(server.cmd), "summary": summary, "ratios": ratios,
              "peak": peak, "agreement": agree, "per_round": rounds,
              "wall_s": time.monotonic() - t_start, "loadavg_start": a.loadavg_start,
              "loadavg_end": os.getloadavg()}
    print(json.dumps({k: result[k] for k in ("summary", "ratios", "agreement", "wall_s")}, indent=1))
    print("\n| side | images/s (median of %d rounds) | rounds | peak RSS | RSS at the end |" % a.rounds)
    print("|---|---:|---|---:|---:|")
    for n in names:
        s = summary[n]
        print("| %s | %.3f | %s | %.0f MiB | %.0f MiB |" % (n, s["images_per_s_median"],
              " / ".join("%.3f" % x for x in s["images_per_s_rounds"]), s["peak_rss_mib"],
              s["rss_at_end_mib"]))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)
    if not agree["agree"]:
        print("OUTPUTS DISAGREE", agree, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
