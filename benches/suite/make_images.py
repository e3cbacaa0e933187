"""Real encoded test images for the load benchmarks, from a natural photo bundled with
scikit-image (`skimage.data.astronaut()`, 512x512 RGB, no download).

Writes into OUT_DIR:
  model-<S>.jpg / model-<S>.png   the photo at the model's size SxS (Pillow ImageOps.fit, Lanczos)
  camera.jpg / camera.png         the photo at camera size 1024x768 (upscaled: Lanczos; quality 90)

    python benches/suite/make_images.py OUT_DIR 28 224
"""
import os
import sys

import numpy as np
from PIL import Image, ImageOps
from skimage import data


def main():
    out = sys.argv[1]
    sizes = [int(s) for s in sys.argv[2:]] or [28, 224]
    os.makedirs(out, exist_ok=True)
    photo = Image.fromarray(np.asarray(data.astronaut())).convert("RGB")
    camera = ImageOps.fit(photo, (1024, 768), method=Image.Resampling.LANCZOS)
    camera.save(os.path.join(out, "camera.jpg"), quality=90)
    camera.save(os.path.join(out, "camera.png"))
    for s in sizes:
        small = ImageOps.fit(photo, (s, s), method=Image.Resampling.LANCZOS)
        small.save(os.path.join(out, f"model-{s}.jpg"), quality=90)
        small.save(os.path.join(out, f"model-{s}.png"))
    for name in sorted(os.listdir(out)):
        print(f"{name:<18} {os.path.getsize(os.path.join(out, name)):>9} bytes")


if __name__ == "__main__":
    main()
