"""Write N natural-photo stimuli as square PNGs, cut from the photos scikit-image bundles.

    .venv/bin/python benches/investigations/photos.py --out /tmp/photos-256 --count 64 --size 256

Each image is a square crop (a seeded position and a side of 50-100% of the photo's shorter
side) of astronaut, chelsea, coffee, rocket, hubble_deep_field, immunohistochemistry, retina or
stereo_motorcycle, resized to SIZE px. At 256 px a model whose preprocessing is "shorter side to
256, then the centre 224" (rgc_intermediate's) sees the centre 224 without any resampling, so a
comparison of extractors measures their computation, not their resize filters. Writes
OUT/img_00000.png ... like fmnist_pngs.py.
"""

import argparse
import os

import numpy as np
from PIL import Image

PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
          "retina", "stereo_motorcycle"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--count", type=int, default=64)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    import skimage.data

    photos = []
    for name in PHOTOS:
        img = getattr(skimage.data, name)()
        if isinstance(img, tuple):  # stereo pairs: the left view
            img = img[0]
        photos.append(Image.fromarray(np.asarray(img)[..., :3]).convert("RGB"))
    rng = np.random.default_rng(a.seed)
    os.makedirs(a.out, exist_ok=True)
    for i in range(a.count):
        photo = photos[i % len(photos)]
        w, h = photo.size
        side = int(min(w, h) * rng.uniform(0.5, 1.0))
        x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        crop = photo.crop((x, y, x + side, y + side)).resize((a.size, a.size), Image.Resampling.LANCZOS)
        crop.save(os.path.join(a.out, f"img_{i:05d}.png"))
    print(f"{a.count} photos of {a.size} px in {a.out}")


if __name__ == "__main__":
    main()
