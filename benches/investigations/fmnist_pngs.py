"""Write the first N Fashion-MNIST test images as PNGs plus a Brain-Score-style stimulus CSV.

    .venv/bin/python benches/investigations/fmnist_pngs.py --out /tmp/fmnist-png --count 10000

Reads the Debian package dataset-fashion-mnist (/usr/share/datasets/fashion-mnist, or
$FASHION_MNIST_DIR). Writes OUT/img_00000.png ... and OUT/stimuli.csv (stimulus_id,
image_file_name, label).
"""

import argparse
import gzip
import os

import numpy as np
from PIL import Image

FMNIST_DIR = os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--count", type=int, default=10000)
    args = ap.parse_args()
    images = read_idx(os.path.join(FMNIST_DIR, "t10k-images-idx3-ubyte.gz"))[: args.count]
    labels = read_idx(os.path.join(FMNIST_DIR, "t10k-labels-idx1-ubyte.gz"))[: args.count]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "stimuli.csv"), "w") as csv:
        csv.write("stimulus_id,image_file_name,label\n")
        for i, (img, label) in enumerate(zip(images, labels)):
            name = f"img_{i:05d}.png"
            Image.fromarray(img, mode="L").save(os.path.join(args.out, name))
            csv.write(f"fmnist_test_{i:05d},{name},{label}\n")
    print(f"wrote {len(images)} PNGs and stimuli.csv to {args.out}")


if __name__ == "__main__":
    main()
