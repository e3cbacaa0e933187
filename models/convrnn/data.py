"""Fashion-MNIST from the Debian package dataset-fashion-mnist (IDX files, gzip).
Grayscale is replicated to RGB and normalised with the ImageNet mean/std, as the paper does."""
from __future__ import annotations

import gzip
import os

import numpy as np
import torch

from .config import IMAGENET_MEAN, IMAGENET_STD

FMNIST_DIR = os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")


def _read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion_mnist(split: str):
    """Returns (images uint8 [N,28,28], labels int64 [N]) for split 'train' or 'test'."""
    prefix = {"train": "train", "test": "t10k"}[split]
    x = _read_idx(os.path.join(FMNIST_DIR, "%s-images-idx3-ubyte.gz" % prefix))
    y = _read_idx(os.path.join(FMNIST_DIR, "%s-labels-idx1-ubyte.gz" % prefix))
    return x, y.astype(np.int64)


def normalize(images_u8, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 [N,H,W] grayscale -> float32 [N,3,H,W]: x/255, replicated to RGB, then
    (x - mean) / std per channel."""
    x = torch.as_tensor(np.array(images_u8, dtype=np.float32)).div_(255.0).unsqueeze(1)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x.expand(-1, 3, -1, -1) - m) / s
