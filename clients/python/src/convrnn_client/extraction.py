"""``open_extraction``: the output directory of ``convrnn-serve extract`` as an xarray Dataset.

The directory holds ``manifest.json`` and one ``<layer>.npy`` per layer shaped
``[stimuli, time, C(, H, W)]``. Each array is opened with ``np.load(mmap_mode="r")``, so opening
a 100 GB extraction reads only the manifest and the ``.npy`` headers; values are read from disk
when they are indexed.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Mapping, Sequence

import numpy as np
import xarray as xr

from ._dataset import build_dataset

MANIFEST = "manifest.json"


def _layers(manifest: Mapping[str, Any]) -> List[Dict[str, Any]]:
    layers = manifest.get("layers")
    if isinstance(layers, Mapping):
        return [{"name": k, **v} for k, v in layers.items()]
    if isinstance(layers, list):
        return [dict(layer) for layer in layers]
    raise ValueError("manifest.json has no `layers`")


def _time_axis(manifest: Mapping[str, Any]) -> tuple[list[float], list[float], list[Any]]:
    """Start and end in ms, and the steps, of each entry of the time axis."""
    bins = manifest.get("time_bins") or []
    step_ms = manifest.get("step_ms")
    starts, ends, steps = [], [], []
    for b in bins:
        if isinstance(b, Mapping):
            starts.append(float(b["start_ms"]))
            ends.append(float(b["end_ms"]))
            steps.append(list(b.get("steps", [])))
        else:
            starts.append(float(b[0]))
            ends.append(float(b[1]))
            steps.append([])
    if not bins and "steps" in manifest and step_ms is not None:
        for s in manifest["steps"]:
            starts.append(s * float(step_ms))
            ends.append((s + 1) * float(step_ms))
            steps.append([s])
    if manifest.get("time_axis", "steps") == "steps" and all(len(s) == 1 for s in steps):
        steps = [s[0] for s in steps]
    return starts, ends, steps


def open_extraction(directory: str | os.PathLike[str]) -> xr.Dataset:
    """The extraction in ``directory`` as a lazy, memory-mapped ``xarray.Dataset``.

    One variable per layer (dimensions ``stimulus``, ``time_ms`` and the layer's own
    ``<layer>_channel``/``_y``/``_x``; ``layer_view`` renames them), with coordinates
    ``stimulus`` (the ids in row order), ``stimulus_path``, ``sha256``, ``failed`` (rows the
    extraction could not read, left NaN), ``time_ms`` (bin starts), ``time_bin_start``,
    ``time_bin_end`` and ``step``; each variable's attributes hold its ``layer``, ``region``
    and ``first_driven_step``; the Dataset's the model, pooling and the manifest itself.
    """
    root = os.fspath(directory)
    with open(os.path.join(root, MANIFEST), encoding="utf-8") as f:
        manifest = json.load(f)
    layers = _layers(manifest)
    stimulus_ids = _stimulus_ids(manifest)
    starts, ends, steps = _time_axis(manifest)
    arrays: Dict[str, np.ndarray] = {}
    layer_attrs: Dict[str, Dict[str, Any]] = {}
    for layer in layers:
        name = layer["name"]
        path = os.path.join(root, layer.get("file") or f"{name}.npy")
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        want = layer.get("shape")
        if want is not None and list(arr.shape) != list(want):
            raise ValueError(f"{path}: shape {list(arr.shape)}, the manifest says {list(want)}")
        if arr.shape[0] != len(stimulus_ids) or (starts and arr.shape[1] != len(starts)):
            raise ValueError(
                f"{path}: shape {list(arr.shape)} does not match {len(stimulus_ids)} stimuli "
                f"x {len(starts)} time bins"
            )
        arrays[name] = arr
        layer_attrs[name] = {
            k: layer.get(k)
            for k in ("region", "first_driven_step", "channels", "height", "width", "file")
        }
    if not starts:
        n = next(iter(arrays.values())).shape[1] if arrays else 0
        starts, ends, steps = [float("nan")] * n, [float("nan")] * n, list(range(n))
    model = manifest.get("model") or {}
    model_name = model.get("name") if isinstance(model, Mapping) else str(model)
    metadata = model.get("metadata", {}) if isinstance(model, Mapping) else {}
    ds = build_dataset(
        arrays,
        stimulus_ids=stimulus_ids,
        time_ms=starts,
        time_bin_end_ms=ends,
        steps=steps,
        layer_attrs=layer_attrs,
        labels=metadata.get("labels") if isinstance(metadata, Mapping) else None,
        attrs={
            "model": model_name or "",
            "pool": str(manifest.get("pool", "")),
            "time_axis": str(manifest.get("time_axis", "")),
            "step_ms": float(manifest.get("step_ms", np.nan)),
            "complete": int(bool(manifest.get("complete", True))),
            "directory": os.path.abspath(root),
        },
    )
    n = len(stimulus_ids)
    extra: Dict[str, Any] = {}
    paths = manifest.get("stimulus_paths")
    if isinstance(paths, list) and len(paths) == n:
        extra["stimulus_path"] = ("stimulus", np.asarray(paths, dtype=object))
    sha = manifest.get("stimulus_sha256") or manifest.get("sha256")
    if isinstance(sha, list) and len(sha) == n:
        extra["sha256"] = ("stimulus", np.asarray([s or "" for s in sha], dtype=object))
    failed = np.zeros(n, dtype=bool)
    for failure in manifest.get("failures") or []:
        row = failure.get("row") if isinstance(failure, Mapping) else None
        if isinstance(row, int) and 0 <= row < n:
            failed[row] = True
    extra["failed"] = ("stimulus", failed)
    ds = ds.assign_coords(extra)
    ds.attrs["manifest"] = json.dumps(manifest)
    return ds


def _stimulus_ids(manifest: Mapping[str, Any]) -> Sequence[str]:
    ids = manifest.get("stimulus_ids")
    if ids is None and isinstance(manifest.get("stimuli"), list):
        ids = [s["stimulus_id"] if isinstance(s, Mapping) else s for s in manifest["stimuli"]]
    if ids is None:
        raise ValueError("manifest.json has no `stimulus_ids`")
    return [str(s) for s in ids]
