"""Train a ConvRNN on Fashion-MNIST (CPU), then export it to ONNX with the measured
test accuracy in its metadata.

    cd models && .venv/bin/python train.py --arch rgc_fmnist --epochs 8 --export rgc_fmnist.onnx

Writes runs/<name>/: log.csv and log.json (per-epoch loss and test top-1), last.pt (a
checkpoint per epoch, resumed with --resume), final.pt, summary.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads crawl on a shared CPU
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convrnn.data import load_fashion_mnist, normalize  # noqa: E402
from convrnn.export import build_metadata, export_onnx  # noqa: E402
from convrnn.config import get_config  # noqa: E402
from convrnn.model import ConvRNN, make_movie  # noqa: E402


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def last_logits(model, frames):
    """logits at T-1; the exact fast path when it applies (see ConvRNN.forward_last)."""
    fast = (model.cfg.readout.rule == "last"
            and not any(model.fb_sources.values())
            and all(l.cell_type in ("feedforward", "rgc", "simplernn", "timedecay") for l in model.layers))
    if fast:
        return model.forward_last(frames)
    logits, _ = model(frames, return_layers=False)
    return model.readout(logits)


def movie(model, x):
    tm = model.cfg.time
    return make_movie(x, tm.steps, tm.image_on_steps, tm.blank_value)


@torch.no_grad()
def evaluate(model, x_test, y_test, batch=500):
    model.eval()
    correct, loss = 0, 0.0
    for i in range(0, len(x_test), batch):
        xb, yb = x_test[i:i + batch], y_test[i:i + batch]
        out = last_logits(model, movie(model, xb))
        loss += F.cross_entropy(out, yb, reduction="sum").item()
        correct += (out.argmax(1) == yb).sum().item()
    return correct / len(x_test), loss / len(x_test)


def ort_accuracy(path, x_test, y_test, batch=500):
    """Top-1 recomputed from the ONNX file with ONNX Runtime (the way the tests do it)."""
    import onnxruntime as ort
    from convrnn.export import read_metadata
    meta = read_metadata(path)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    tm = meta["time"]
    correct = 0
    for i in range(0, len(x_test), batch):
        xb = make_movie(x_test[i:i + batch], tm["steps"], tm["image_on_steps"], tm["blank_value"])
        logits = sess.run(["logits"], {"frames": xb.numpy()})[0]
        assert meta["readout"]["rule"] == "last"
        correct += int((logits[:, -1].argmax(1) == y_test[i:i + batch].numpy()).sum())
    return correct / len(x_test)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="rgc_fmnist")
    ap.add_argument("--name", help="run/model name (default: the config name)")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "runs"))
    ap.add_argument("--export", help="write the trained model to this ONNX file")
    ap.add_argument("--resume", action="store_true", help="resume from runs/<name>/last.pt")
    ap.add_argument("--limit", type=int, default=0, help="use only this many training images (smoke tests)")
    a = ap.parse_args(argv)

    torch.set_num_threads(a.threads)
    set_seed(a.seed)
    cfg = get_config(a.arch)
    name = a.name or cfg.name
    out_dir = os.path.join(a.runs_dir, name)
    os.makedirs(out_dir, exist_ok=True)

    x_tr_u8, y_tr = load_fashion_mnist("train")
    x_te_u8, y_te = load_fashion_mnist("test")
    if a.limit:
        x_tr_u8, y_tr = x_tr_u8[:a.limit], y_tr[:a.limit]
    x_tr, y_tr = normalize(x_tr_u8, cfg.input.mean, cfg.input.std), torch.as_tensor(y_tr)
    x_te, y_te = normalize(x_te_u8, cfg.input.mean, cfg.input.std), torch.as_tensor(y_te)

    model = ConvRNN(cfg)
    n_params = model.num_params()
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=a.weight_decay)
    steps_per_epoch = (len(x_tr) + a.batch_size - 1) // a.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, epochs=a.epochs,
                                                steps_per_epoch=steps_per_epoch, pct_start=0.2)
    log, start_epoch, train_seconds = [], 0, 0.0
    ck_path = os.path.join(out_dir, "last.pt")
    if a.resume and os.path.exists(ck_path):
        ck = torch.load(ck_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        torch.set_rng_state(ck["rng"])
        log, start_epoch, train_seconds = ck["log"], ck["epoch"] + 1, ck["train_seconds"]
    print("%s: %s, %d params, %d train / %d test images, T=%d" % (
        name, cfg.architecture, n_params, len(x_tr), len(x_te), cfg.time.steps), flush=True)

    g = torch.Generator().manual_seed(a.seed)
    for epoch in range(start_epoch, a.epochs):
        g.manual_seed(a.seed * 1000 + epoch)
        model.train()
        perm = torch.randperm(len(x_tr), generator=g)
        t0 = time.time()
        tot, seen = 0.0, 0
        bar = tqdm(range(steps_per_epoch), desc="epoch %d/%d" % (epoch + 1, a.epochs),
                   mininterval=5, file=sys.stdout)
        for s in bar:
            idx = perm[s * a.batch_size:(s + 1) * a.batch_size]
            xb, yb = x_tr[idx], y_tr[idx]
            flip = torch.rand(len(idx), generator=g) < 0.5          # horizontal flips
            xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(-1), xb)
            loss = F.cross_entropy(last_logits(model, movie(model, xb)), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(idx)
            seen += len(idx)
            if s % 20 == 0:
                bar.set_postfix(loss="%.4f" % (tot / seen))
        train_seconds += time.time() - t0
        acc, test_loss = evaluate(model, x_te, y_te)
        row = {"epoch": epoch + 1, "train_loss": tot / seen, "test_loss": test_loss,
               "test_top1": acc, "epoch_seconds": time.time() - t0,
               "train_seconds_total": train_seconds, "lr": sched.get_last_lr()[0]}
        log.append(row)
        print(json.dumps(row), flush=True)
        with open(os.path.join(out_dir, "log.csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            w.writeheader()
            w.writerows(log)
        with open(os.path.join(out_dir, "log.json"), "w") as f:
            json.dump(log, f, indent=1)
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "rng": torch.get_rng_state(), "epoch": epoch, "log": log,
                    "train_seconds": train_seconds, "config": cfg.to_dict()}, ck_path)

    final_acc = log[-1]["test_top1"]
    trained_on = {"dataset": "fashion-mnist", "test_top1": final_acc, "epochs": a.epochs,
                  "seed": a.seed, "train_seconds": round(train_seconds, 1),
                  "command": "python train.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    desc = cfg.description + "; trained on Fashion-MNIST (%d epochs, CPU), test top-1 %.2f%%" % (
        a.epochs, 100 * final_acc)
    torch.save({"model": model.state_dict(), "config": cfg.to_dict(), "trained_on": trained_on,
                "description": desc}, os.path.join(out_dir, "final.pt"))
    summary = {"name": name, "arch": a.arch, "params": n_params, "test_top1_torch": final_acc,
               "train_seconds": train_seconds, "epochs": a.epochs}
    if a.export:
        import onnx
        meta = build_metadata(model, name=name, description=desc, trained_on=trained_on)
        rep = export_onnx(model, a.export, meta)
        acc_ort = ort_accuracy(a.export, x_te, y_te)
        # the metadata carries the accuracy measured on the exported file itself
        trained_on["test_top1"] = acc_ort
        trained_on["test_top1_pytorch"] = final_acc
        meta = build_metadata(model, name=name, description=desc, trained_on=trained_on)
        m = onnx.load(a.export)
        for p in m.metadata_props:
            if p.key == "convrnn":
                p.value = json.dumps(meta)
        onnx.save(m, a.export)
        onnx.checker.check_model(a.export)
        summary.update({"onnx": a.export, "test_top1_onnx": acc_ort, "onnx_bytes": rep["bytes"],
                        "ort_vs_torch_max_abs_diff": rep["max_abs_diff"]})
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
