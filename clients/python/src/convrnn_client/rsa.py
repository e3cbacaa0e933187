"""``to_rsatoolbox``: activations as an rsatoolbox ``TemporalDataset`` (rsatoolbox is optional)."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import xarray as xr

from ._dataset import neuroids


def to_rsatoolbox(ds: xr.Dataset, layers: Optional[Sequence[str]] = None) -> Any:
    """An ``rsatoolbox.data.TemporalDataset`` of the chosen layers (default: all) of ``ds`` (from
    ``Client.activations(..., as_xarray=True)`` or ``open_extraction``): observations are the
    stimuli (``stimulus`` descriptor), channels the layers' units (``neuroid_id``, ``layer``,
    ``region``, ``channel``, ``y``, ``x``), times the time axis (``time`` in ms: bin starts,
    ``time_bin_end``). Loads the values."""
    try:
        from rsatoolbox.data import TemporalDataset
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("to_rsatoolbox needs rsatoolbox: pip install 'convrnn-client[rsa]'") from e
    flat = neuroids(ds, layers)  # [stimulus, neuroid, time_ms]
    return TemporalDataset(
        np.asarray(flat.values, dtype=np.float64),
        descriptors={"model": str(ds.attrs.get("model", ""))},
        obs_descriptors={"stimulus": [str(s) for s in flat["stimulus"].values]},
        channel_descriptors={
            k: [v.item() if hasattr(v, "item") else v for v in flat[k].values]
            for k in ("neuroid_id", "layer", "region", "channel", "y", "x")
        },
        time_descriptors={
            "time": np.asarray(flat["time_ms"].values, dtype=np.float64),
            "time_bin_end": np.asarray(flat["time_bin_end"].values, dtype=np.float64),
        },
    )
