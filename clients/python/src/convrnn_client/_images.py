"""Turning what users hold (paths, bytes, PIL images, numpy arrays) into encoded image bytes.

Paths are read only when their batch is sent, so a list of 100,000 paths costs no more memory
than the batch in flight.
"""

from __future__ import annotations

import io
import os
from typing import Any, Callable, Iterable, List, Sequence, Tuple, Union

import numpy as np

ImageLike = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, np.ndarray, Any]
"""One image: a file path, encoded bytes, a ``PIL.Image.Image`` or an ``[H, W]``, ``[H, W, 3]``
or ``[H, W, 4]`` array (uint8, or float in [0, 1])."""

# (stimulus id, a function returning the encoded bytes when the batch is sent)
Source = Tuple[str, Callable[[], bytes]]


def _is_pil(obj: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        return False
    return isinstance(obj, Image.Image)


def encode_array(arr: np.ndarray) -> bytes:
    """PNG bytes of one ``[H, W]``, ``[H, W, 1|3|4]`` image; floats are taken as [0, 1]."""
    from PIL import Image

    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ValueError(f"an image array must be [H, W], [H, W, 3] or [H, W, 4], not {list(a.shape)}")
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating):
            if not np.isfinite(a).all():
                raise ValueError("a float image array holds NaN or infinity")
            a = np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
        elif np.issubdtype(a.dtype, np.integer) or a.dtype == bool:
            if a.min(initial=0) < 0 or a.max(initial=0) > 255:
                raise ValueError("an integer image array must lie in 0..255")
            a = a.astype(np.uint8) * (255 if a.dtype == bool else 1)
        else:
            raise ValueError(f"unsupported image array dtype {a.dtype}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a)).save(buf, format="PNG")
    return buf.getvalue()


def _encode_pil(img: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _read(path: str) -> Callable[[], bytes]:
    def read() -> bytes:
        with open(path, "rb") as f:
            return f.read()

    return read


def _const(data: bytes) -> Callable[[], bytes]:
    return lambda: data


def as_list(images: Any) -> List[Any]:
    """A single image becomes a one-item list; a 4-D array ``[N, H, W, C]`` a list of N images."""
    if isinstance(images, (str, bytes, bytearray, memoryview, os.PathLike)) or _is_pil(images):
        return [images]
    if isinstance(images, np.ndarray):
        if images.ndim == 4 or (images.ndim == 3 and images.shape[2] not in (1, 3, 4)):
            return list(images)
        return [images]
    if isinstance(images, Iterable):
        return list(images)
    raise TypeError(f"cannot read images from {type(images).__name__}")


def sources(images: Sequence[Any], stimulus_ids: Sequence[str] | None = None) -> List[Source]:
    """One (stimulus id, loader) per image; ids default to the path, else the position."""
    if not images:
        raise ValueError("no images")
    if stimulus_ids is not None and len(stimulus_ids) != len(images):
        raise ValueError(f"{len(stimulus_ids)} stimulus ids for {len(images)} images")
    out: List[Source] = []
    for i, img in enumerate(images):
        default_id = str(i)
        load: Callable[[], bytes]
        if isinstance(img, (str, os.PathLike)):
            path = os.fspath(img)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"image {i}: no file {path!r}")
            default_id = path
            load = _read(path)
        elif isinstance(img, (bytes, bytearray, memoryview)):
            load = _const(bytes(img))
        elif _is_pil(img):
            load = _const(_encode_pil(img))
        elif isinstance(img, np.ndarray):
            load = _const(encode_array(img))
        else:
            raise TypeError(
                f"image {i}: expected a path, bytes, a PIL image or a numpy array, not {type(img).__name__}"
            )
        sid = str(stimulus_ids[i]) if stimulus_ids is not None else default_id
        out.append((sid, load))
    return out
