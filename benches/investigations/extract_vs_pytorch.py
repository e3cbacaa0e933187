"""`convrnn-serve extract` (in-process, and through a server) against THINGSvision-style
extraction (PyTorch eager, forward hooks on every layer, features kept in RAM and saved at the
end) on the same Fashion-MNIST PNGs, the same model and weights, all layers x all steps, float32,
no pooling. Reports images/s and the resident memory over each run (docs/extract.md).

    models/.venv/bin/python benches/investigations/extract_vs_pytorch.py --count 1000 \
        --binary target/release/convrnn-serve
    # 64 photos at 224 px on a full-size rgc_intermediate (untrained export: the cost is the same)
    models/.venv/bin/python benches/investigations/extract_vs_pytorch.py --stimuli photos --count 64 \
        --batch 8 --arch rgc_intermediate --model build/rgc_intermediate.onnx --images /tmp/photos-256

Needs models/.venv (torch, onnx, Pillow) and the PNGs of benches/investigations/fmnist_pngs.py or
photos.py (written to --images if missing; photos.py needs the root .venv's scikit-image). The
PyTorch loop runs in a child process so its memory is its own. Each run's files are deleted when
it ends except the first and last layer, which are compared.
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import rss  # noqa: E402


def pytorch_loop(a):
    """The THINGSvision pattern: a hook per module appends its output, the loop keeps every
    batch's features in lists, and they are concatenated and saved after the last batch."""
    import numpy as np
    import torch
    from PIL import Image

    sys.path.insert(0, os.path.join(ROOT, "models"))
    from convrnn.export import load_onnx_weights, read_metadata
    from convrnn.model import build_model

    torch.set_num_threads(a.threads)
    meta = read_metadata(a.model)
    model = build_model(a.arch, seed=None)
    load_onnx_weights(model, a.model)
    model.eval()
    inp, tm = meta["input"], meta["time"]
    mean = np.array(inp["mean"], np.float32)[:, None, None]
    std = np.array(inp["std"], np.float32)[:, None, None]
    captured = {lay.name: [] for lay in model.layers}
    for lay in model.layers:
        lay.register_forward_hook(lambda m, i, o, name=lay.name: captured[name].append(o[0].detach()))
    features = {name: [] for name in captured}
    paths = [os.path.join(a.images, f"img_{i:05d}.png") for i in range(a.count)]
    t0 = time.perf_counter()
    for start in range(0, len(paths), a.batch):
        batch = paths[start:start + a.batch]
        imgs = [(np.asarray(preprocess(Image.open(p).convert("RGB"), inp), np.float32).transpose(2, 0, 1)
                 / 255 - mean) / std for p in batch]
        x = torch.from_numpy(np.stack(imgs))
        frames = torch.full((len(batch), tm["steps"]) + tuple(x.shape[1:]), tm["blank_value"])
        frames[:, : tm["image_on_steps"]] = x[:, None]
        for v in captured.values():
            v.clear()
        with torch.no_grad():
            model(frames, return_layers=False)
        for name, steps in captured.items():
            # Steps before a layer is image-driven ran once at batch 1: broadcast them.
            per_step = [s.expand((len(batch),) + tuple(s.shape[1:])) for s in steps]
            features[name].append(torch.stack(per_step, 1).numpy().copy())
    os.makedirs(a.out, exist_ok=True)
    for name, chunks in features.items():
        np.save(os.path.join(a.out, f"{name}.npy"), np.concatenate(chunks))
    print(json.dumps({"seconds": time.perf_counter() - t0}))


def preprocess(img, inp):
    """The contract's shorter-side-then-center-crop: the shorter side to resize_shorter_side (or
    the input size), then the centre input-sized square."""
    w, h = inp["width"], inp["height"]
    side = inp.get("resize_shorter_side") or max(w, h)
    scale = side / min(img.size)
    size = (round(img.size[0] * scale), round(img.size[1] * scale))
    if size != img.size:
        img = img.resize(size, Image.Resampling.BILINEAR)
    left, top = (size[0] - w) // 2, (size[1] - h) // 2
    return img.crop((left, top, left + w, top + h))


def steady_rate(said, count):
    """Images/s once running, from what a run printed: the CLI's rate after its start-up (the
    sessions built and warm), or the PyTorch loop's own time (after importing torch and loading
    the model)."""
    m = re.search(r"; ([0-9.]+) images/s after ([0-9.]+) s of start-up", said)
    if m:
        return float(m.group(1))
    for line in said.splitlines():
        if line.startswith("{"):
            return count / json.loads(line)["seconds"]
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hwm_mib(pid):
    return rss.status_kib(pid, "VmHWM") / 1024


def curve(samples):
    """RSS at a quarter, half, three quarters of the run and at the end (MiB)."""
    samples = [s for s in samples if s[1] > 0]  # not the samples taken after the process exited
    if not samples:
        return []
    return [samples[min(len(samples) - 1, int(len(samples) * q))][1] for q in (0.25, 0.5, 0.75, 0.999)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/convrnn-serve"))
    ap.add_argument("--model", default=os.path.join(ROOT, "models/rgc_fmnist.onnx"))
    ap.add_argument("--arch", default="rgc_fmnist")
    ap.add_argument("--images", default="/tmp/fmnist-png")
    ap.add_argument("--stimuli", choices=["fmnist", "photos"], default="fmnist")
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--interval", type=float, default=0.05)
    ap.add_argument("--pytorch-loop", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.pytorch_loop:
        return pytorch_loop(a)
    if not os.path.exists(os.path.join(a.images, f"img_{a.count - 1:05d}.png")):
        if a.stimuli == "fmnist":
            subprocess.run([sys.executable, os.path.join(HERE, "fmnist_pngs.py"), "--out", a.images,
                            "--count", str(max(a.count, 10000))], check=True)
        else:
            subprocess.run([os.path.join(ROOT, ".venv/bin/python"), os.path.join(HERE, "photos.py"),
                            "--out", a.images, "--count", str(a.count)], check=True)
    sys.path.insert(0, os.path.join(ROOT, "models"))
    from convrnn.export import read_metadata
    layer_names = [l["name"] for l in read_metadata(a.model)["layers"]]
    compared = (layer_names[0], layer_names[-1])
    work = tempfile.mkdtemp(prefix="extract-bench-")
    csv = os.path.join(work, "stimuli.csv")
    with open(csv, "w") as f:
        f.write("stimulus_id,path\n")
        for i in range(a.count):
            f.write(f"s{i:05d},{os.path.join(a.images, f'img_{i:05d}.png')}\n")
    common = ["--images", csv, "--batch", str(a.batch), "--quiet", "--pool", "none", "--dtype", "f32"]
    rows = {}

    def run(label, cmd, out):
        with tempfile.TemporaryFile("w+") as said:
            rc, secs, samples, peak = rss.sample(cmd, a.interval, os.path.join(out, ".extract"), stdout=said)
            said.seek(0)
            said = said.read()
        sys.stdout.write(said)
        if rc != 0:
            sys.exit(f"{label} failed ({rc})")
        written = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out) if f.endswith(".npy"))
        rows[label] = {"seconds": secs, "images_per_s": a.count / secs, "peak_mib": peak,
                       "curve_mib": curve(samples), "written_mib": written / 2**20,
                       "steady_per_s": steady_rate(said, a.count)}
        for f in os.listdir(out):
            if f.endswith(".npy") and f[:-4] not in compared:
                os.remove(os.path.join(out, f))

    out_local = os.path.join(work, "local")
    run("convrnn-serve extract (in-process)",
        [a.binary, "extract", "--model", a.model, "--out", out_local, "--devices", "cpu"] + common, out_local)

    models = os.path.join(work, "models")
    os.makedirs(models)
    shutil.copy(a.model, models)
    port = free_port()
    # A server for stimulus sets: a batch of a full-size model at every layer and step can outlast
    # the default 30 s request deadline on a loaded machine.
    server = subprocess.Popen([a.binary, "serve", "--model-dir", models, "--listen", f"127.0.0.1:{port}",
                               "--devices", "cpu", "--request-timeout-ms", "600000"],
                              stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready").status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        base_hwm = hwm_mib(server.pid)
        out_remote = os.path.join(work, "remote")
        name = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models"))["models"][0]["name"]
        run("convrnn-serve extract --server (client)",
            [a.binary, "extract", "--server", f"http://127.0.0.1:{port}", "--model", name, "--out", out_remote]
            + common, out_remote)
        rows["convrnn-serve extract --server (client)"]["server_peak_mib"] = hwm_mib(server.pid)
        rows["convrnn-serve extract --server (client)"]["server_peak_before_mib"] = base_hwm
    finally:
        server.terminate()
        server.wait()

    out_torch = os.path.join(work, "torch")
    run("PyTorch eager + forward hooks (THINGSvision-style)",
        [sys.executable, __file__, "--pytorch-loop", "--model", a.model, "--arch", a.arch, "--images", a.images,
         "--count", str(a.count), "--batch", str(a.batch), "--threads", str(a.threads), "--out", out_torch],
        out_torch)

    import numpy as np
    diffs = {}
    for layer in compared:
        mine = np.load(os.path.join(out_local, f"{layer}.npy"), mmap_mode="r")
        theirs = np.load(os.path.join(out_torch, f"{layer}.npy"), mmap_mode="r")
        remote = np.load(os.path.join(out_remote, f"{layer}.npy"), mmap_mode="r")
        diffs[layer] = (float(np.abs(mine - theirs).max()), bool(np.array_equal(mine, remote)))
    what = "Fashion-MNIST PNGs" if a.stimuli == "fmnist" else "photos"
    print(f"\n{a.count} {what}, {a.arch}, all layers x all steps, float32, batch {a.batch}, "
          f"{a.threads} cores available, PyTorch threads {a.threads}")
    print("| method | images/s, whole job | images/s once running | wall s | peak RSS MiB "
          "| RSS at 25/50/75/100% of the run, MiB | written MiB |")
    print("|---|---:|---:|---:|---:|---|---:|")

    def fmt(rate):
        return "-" if rate is None else f"{rate:.0f}" if rate >= 10 else f"{rate:.3f}"

    for label, r in rows.items():
        extra = ""
        if "server_peak_mib" in r:
            extra = f" (server: peak {r['server_peak_mib']:.0f} MiB, {r['server_peak_before_mib']:.0f} before)"
        print(f"| {label} | {fmt(r['images_per_s'])} | {fmt(r['steady_per_s'])} | {r['seconds']:.2f} "
              f"| {r['peak_mib']:.0f}{extra} | "
              + " / ".join(f"{m:.0f}" for m in r["curve_mib"]) + f" | {r['written_mib']:.0f} |")
    torch_row = rows["PyTorch eager + forward hooks (THINGSvision-style)"]
    for label, r in rows.items():
        if r is torch_row:
            continue
        ratios = [f"{r['images_per_s'] / torch_row['images_per_s']:.2f}x whole job"]
        if r["steady_per_s"] and torch_row["steady_per_s"]:
            ratios.append(f"{r['steady_per_s'] / torch_row['steady_per_s']:.2f}x once running")
        print(f"{label} / PyTorch: " + ", ".join(ratios))
    for layer, (d, same) in diffs.items():
        print(f"{layer}: largest |CLI - PyTorch| {d:.2e}; --server file identical to in-process: {same}")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
