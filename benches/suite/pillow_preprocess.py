"""Pillow + NumPy doing what `convrnn_serve::image::preprocess` does (the Python reference in
src/image.rs): decode, EXIF transpose, RGB, ImageOps.fit with BILINEAR (shorter side then centre
crop), normalise to float32 CHW. Single-threaded, the same image bytes from memory.

    python benches/suite/pillow_preprocess.py --image bench-results/images/camera.jpg --size 224 --size 28
"""
import argparse
import io
import json
import time

import numpy as np
import PIL
from PIL import Image, ImageOps

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def preprocess(data: bytes, size: int) -> np.ndarray:
    im = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    im = im.convert("RGB")
    im = ImageOps.fit(im, (size, size), method=Image.Resampling.BILINEAR, centering=(0.5, 0.5))
    x = np.asarray(im, dtype=np.float32) / np.float32(255)
    return ((x - MEAN) / STD).transpose(2, 0, 1).copy()  # CHW, contiguous like ours


def decode_resize(data: bytes, size: int):
    im = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    im = im.convert("RGB")
    return ImageOps.fit(im, (size, size), method=Image.Resampling.BILINEAR, centering=(0.5, 0.5))


def bench(fn, data, size, seconds):
    for _ in range(3):
        fn(data, size)
    times = []
    start = time.perf_counter()
    while len(times) < 10 or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        fn(data, size)
        times.append(time.perf_counter() - t)
    times.sort()
    return len(times), times[len(times) // 2] * 1e3, sum(times) / len(times) * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--image", action="append")
    ap.add_argument("--size", action="append", type=int)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--json")
    a = ap.parse_args()
    rows = []
    print(f"Pillow {PIL.__version__}, NumPy {np.__version__}")
    print(f"{'image':<40} {'size':>5} {'what':<14} {'runs':>6} {'p50_ms':>9} {'mean_ms':>9}")
    for path in a.image or ["bench-results/images/camera.jpg"]:
        data = open(path, "rb").read()
        for size in a.size or [224, 28]:
            for what, fn in (("decode+resize", decode_resize), ("full", preprocess)):
                runs, p50, mean = bench(fn, data, size, a.seconds)
                print(f"{path:<40} {size:>5} {what:<14} {runs:>6} {p50:>9.3f} {mean:>9.3f}")
                rows.append({"image": path, "size": size, "what": what, "runs": runs,
                             "p50_ms": p50, "mean_ms": mean})
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"impl": "pillow", "pillow": PIL.__version__, "rows": rows}, f)


if __name__ == "__main__":
    main()
