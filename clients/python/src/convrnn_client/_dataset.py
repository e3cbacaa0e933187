"""The xarray layout shared by ``Client.activations(..., as_xarray=True)`` and ``open_extraction``.

One data variable per layer, named by the layer, with the shared dimensions ``stimulus`` and
``time_ms`` and its own feature dimensions ``<layer>_channel``, ``<layer>_y``, ``<layer>_x``
(layers differ in size, and one xarray dimension has one size). ``layer_view`` gives one layer
with plain ``channel``, ``y``, ``x`` dimensions and ``layer`` and ``region`` coordinates.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import xarray as xr

LOGITS = "logits"


def feature_dims(layer: str, ndim: int) -> List[str]:
    """Names of the axes after ``[stimulus, time]`` of a layer's array with ``ndim`` dimensions."""
    extra = ndim - 2
    if layer == LOGITS and extra == 1:
        return [f"{LOGITS}_class"]
    names = [f"{layer}_channel", f"{layer}_y", f"{layer}_x"]
    if extra < 0 or extra > 3:
        raise ValueError(f"layer {layer!r}: expected 2 to 5 dimensions, got {ndim}")
    return names[:extra]


def build_dataset(
    arrays: Mapping[str, np.ndarray],
    *,
    stimulus_ids: Sequence[str],
    time_ms: Union[Sequence[float], np.ndarray],
    time_bin_end_ms: Union[Sequence[float], np.ndarray],
    steps: Optional[Sequence[Any]] = None,
    layer_attrs: Optional[Mapping[str, Mapping[str, Any]]] = None,
    labels: Optional[Sequence[str]] = None,
    attrs: Optional[Mapping[str, Any]] = None,
) -> xr.Dataset:
    """A Dataset over ``arrays`` (``layer -> [stimuli, times, ...]``) without copying them."""
    data_vars: Dict[str, xr.Variable] = {}
    coords: Dict[str, Any] = {
        "stimulus": ("stimulus", np.asarray(list(stimulus_ids), dtype=object)),
        "time_ms": ("time_ms", np.asarray(time_ms, dtype=np.float64)),
        "time_bin_start": ("time_ms", np.asarray(time_ms, dtype=np.float64)),
        "time_bin_end": ("time_ms", np.asarray(time_bin_end_ms, dtype=np.float64)),
    }
    if steps is not None:
        coords["step"] = ("time_ms", _steps_coord(steps))
    for name, arr in arrays.items():
        dims = ["stimulus", "time_ms", *feature_dims(name, arr.ndim)]
        la = dict((layer_attrs or {}).get(name, {}))
        la.setdefault("layer", name)
        data_vars[name] = xr.Variable(dims, arr, attrs={k: v for k, v in la.items() if v is not None})
        for dim, size in zip(dims[2:], arr.shape[2:]):
            coords.setdefault(dim, (dim, np.arange(size)))
        if name == LOGITS and labels is not None and arr.ndim == 3 and len(labels) == arr.shape[2]:
            coords[f"{LOGITS}_label"] = (f"{LOGITS}_class", np.asarray(list(labels), dtype=object))
    return xr.Dataset(data_vars, coords=coords, attrs=dict(attrs or {}))


def _steps_coord(steps: Sequence[Any]) -> np.ndarray:
    """One step index per time, or for averaged bins the steps joined as text (``"7,8,9"``)."""
    if all(isinstance(s, (int, np.integer)) for s in steps):
        return np.asarray(steps, dtype=np.int64)
    out = []
    for s in steps:
        if isinstance(s, (list, tuple, np.ndarray)):
            s = list(s)
            out.append(str(s[0]) if len(s) == 1 else ",".join(str(int(x)) for x in s))
        else:
            out.append(str(s))
    return np.asarray(out, dtype=object)


def layer_view(ds: xr.Dataset, layer: str) -> xr.DataArray:
    """One layer as a DataArray with dimensions ``stimulus, time_ms, channel[, y, x]`` and scalar
    coordinates ``layer`` and ``region``."""
    if layer not in ds.data_vars:
        raise KeyError(f"no layer {layer!r} (layers: {', '.join(map(str, ds.data_vars))})")
    da = ds[layer]
    rename = {d: d[len(layer) + 1 :] for d in map(str, da.dims) if d.startswith(f"{layer}_")}
    da = da.rename(rename)
    return da.assign_coords(layer=layer, region=str(da.attrs.get("region") or ""))


def neuroids(ds: xr.Dataset, layers: Optional[Sequence[str]] = None) -> xr.DataArray:
    """The chosen layers flattened to one ``neuroid`` axis: ``[stimulus, neuroid, time_ms]``,
    with per-neuroid ``neuroid_id`` (``layer.index``), ``layer``, ``region`` and ``channel``
    (and ``y``, ``x`` for unpooled maps) coordinates. Loads the values."""
    layers = list(layers) if layers is not None else [str(v) for v in ds.data_vars]
    if not layers:
        raise ValueError("no layers to flatten")
    blocks = []
    coords: Dict[str, List[Any]] = {k: [] for k in ("neuroid_id", "layer", "region", "channel", "y", "x")}
    for name in layers:
        da = layer_view(ds, name)
        values = np.asarray(da.values)
        n = int(np.prod(values.shape[2:], dtype=np.int64))
        blocks.append(values.reshape(values.shape[0], values.shape[1], n))
        feat = values.shape[2:]
        idx = np.unravel_index(np.arange(n), feat) if feat else (np.zeros(n, dtype=np.int64),)
        coords["neuroid_id"] += [f"{name}.{i}" for i in range(n)]
        coords["layer"] += [name] * n
        coords["region"] += [str(da.attrs.get("region") or "")] * n
        coords["channel"] += list(idx[0])
        coords["y"] += list(idx[1]) if len(idx) > 1 else [-1] * n
        coords["x"] += list(idx[2]) if len(idx) > 2 else [-1] * n
    data = np.concatenate(blocks, axis=2).transpose(0, 2, 1)
    return xr.DataArray(
        data,
        dims=("stimulus", "neuroid", "time_ms"),
        coords={
            "stimulus": ds["stimulus"].values,
            "time_ms": ds["time_ms"].values,
            "time_bin_start": ("time_ms", ds["time_bin_start"].values),
            "time_bin_end": ("time_ms", ds["time_bin_end"].values),
            **{k: ("neuroid", np.asarray(v)) for k, v in coords.items()},
        },
    )
