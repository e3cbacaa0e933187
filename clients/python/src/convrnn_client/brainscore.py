"""A Brain-Score ``BrainModel`` backed by a convrnn-serve server.

``start_recording(region, time_bins)`` picks the layers the model's metadata maps to the region
(``IT`` matches ``pIT``, ``cIT/aIT`` and ``aIT``; ``region_layer_map`` overrides) and, for each
time bin, the model steps whose start lies in it (averaged); a bin holding no step start uses
the step whose start is nearest, as Brain-Score's CORnet-S commitment does. ``look_at`` returns
a ``NeuroidAssembly`` ``[presentation, neuroid, time_bin]`` with the StimulusSet's columns on
``presentation``, ``neuroid_id``/``layer``/``region``/``channel``/``y``/``x`` on ``neuroid`` and
``time_bin_start``/``time_bin_end`` on ``time_bin``.

With ``brainscore_vision`` installed the class subclasses its ``BrainModel`` and returns its
``NeuroidAssembly``; without it, an ``xarray.DataArray`` of the same layout.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import xarray as xr

from ._dataset import neuroids
from .client import Client

try:  # pragma: no cover - exercised by scripts/check_brainscore.sh, not the default venv
    from brainscore_vision.model_interface import BrainModel as _Base
except ImportError:  # brainscore-vision pins numpy<2 and xarray<2022.6; the client works without it
    _Base = object  # type: ignore[assignment,misc]

try:  # pragma: no cover
    from brainscore_core.supported_data_standards.brainio.assemblies import (
        NeuroidAssembly as _NeuroidAssembly,
    )
except ImportError:
    _NeuroidAssembly = None

log = logging.getLogger(__name__)

TimeBin = Tuple[float, float]


def region_matches(layer_region: Optional[str], target: str) -> bool:
    """Whether a layer's metadata region belongs to a Brain-Score recording target."""
    if not layer_region:
        return False
    want = target.strip().upper()
    for part in layer_region.replace(",", "/").split("/"):
        part = part.strip().upper()
        if part == want or (want == "IT" and part.endswith("IT") and part[:-2] in ("", "P", "C", "A")):
            return True
    return False


def steps_for_bin(start: float, end: float, n_steps: int, step_ms: float) -> List[int]:
    """The steps whose start ``t * step_ms`` lies in ``[start, end)``, else the nearest one."""
    inside = [t for t in range(n_steps) if start <= t * step_ms < end]
    if inside:
        return inside
    nearest = int(min(range(n_steps), key=lambda t: abs(t * step_ms - start)))
    log.warning(
        "time bin %s-%s ms holds no step start (steps every %s ms up to %s ms): using step %d",
        start, end, step_ms, (n_steps - 1) * step_ms, nearest,
    )
    return [nearest]


class ConvRNNBrainModel(_Base):  # type: ignore[misc,valid-type]
    """A served ConvRNN as a Brain-Score model.

    ``server``: a ``Client`` or a URL; ``model``: the served model's name; ``pool``: ``none``
    (every unit of the maps is a neuroid), ``mean`` or ``max`` (one per channel).
    """

    def __init__(
        self,
        server: Union[Client, str],
        model: Optional[str] = None,
        *,
        region_layer_map: Optional[Mapping[str, Union[str, Sequence[str]]]] = None,
        pool: str = "none",
        identifier: Optional[str] = None,
        api_key: Optional[str] = None,
    ):
        self.client = server if isinstance(server, Client) else Client(server, api_key=api_key)
        self.info = self.client.model_info(model)
        self.model = str(self.info["name"])
        self.pool = pool
        self._identifier = identifier or f"convrnn-serve:{self.model}"
        self.region_layer_map: Dict[str, List[str]] = {
            k: [v] if isinstance(v, str) else list(v) for k, v in (region_layer_map or {}).items()
        }
        self.recording_layers: List[str] = []
        self.recording_region: Optional[str] = None
        self.time_bins: List[TimeBin] = []
        self.bin_steps: List[List[int]] = []

    @property
    def identifier(self) -> str:
        return self._identifier

    def visual_degrees(self) -> float:
        """Degrees of visual angle the model's input spans, from its metadata."""
        return float(self.info.get("visual_degrees", 8.0))

    def start_task(self, task: Any, fitting_stimuli: Any = None) -> None:
        raise NotImplementedError("only neural recordings (start_recording) are supported")

    def layers_for(self, region: str) -> List[str]:
        if region in self.region_layer_map:
            return list(self.region_layer_map[region])
        layers = [layer["name"] for layer in self.info["layers"] if region_matches(layer.get("region"), region)]
        if not layers:
            known = sorted({str(layer.get("region")) for layer in self.info["layers"] if layer.get("region")})
            raise ValueError(
                f"model {self.model!r} maps no layer to region {region!r} (its regions: "
                f"{', '.join(known) or 'none'}); pass region_layer_map="
            )
        return layers

    def start_recording(self, recording_target: str, time_bins: Optional[Sequence[Sequence[float]]] = None) -> None:
        time = self.info["time"]
        bins = [(float(a), float(b)) for a, b in (time_bins if time_bins is not None else [(70, 170)])]
        if not bins or any(b <= a for a, b in bins):
            raise ValueError(f"time bins must be non-empty (start, end) pairs with start < end: {bins}")
        self.recording_layers = self.layers_for(str(recording_target))
        self.recording_region = str(recording_target)
        self.time_bins = bins
        self.bin_steps = [steps_for_bin(a, b, int(time["steps"]), float(time["step_ms"])) for a, b in bins]

    def look_at(self, stimuli: Any, number_of_trials: int = 1) -> Any:
        """Recordings of the current target for ``stimuli`` (a StimulusSet or image paths);
        the model is deterministic, so ``number_of_trials`` changes nothing."""
        if not self.recording_layers:
            raise RuntimeError("call start_recording(region, time_bins) first")
        paths, ids, columns = _stimuli(stimuli)
        steps = sorted({s for b in self.bin_steps for s in b})
        ds = self.client.activations(
            paths, layers=self.recording_layers, steps=steps, pool=self.pool,
            model=self.model, stimulus_ids=ids, as_xarray=True,
        )
        flat = neuroids(ds, self.recording_layers)  # [stimulus, neuroid, time_ms]
        position = {s: i for i, s in enumerate(steps)}
        values = np.stack(
            [flat.values[:, :, [position[s] for s in b]].mean(axis=2) for b in self.bin_steps], axis=2
        ).astype(np.float32)
        coords: Dict[str, Any] = {k: ("presentation", v) for k, v in columns.items()}
        coords["stimulus_id"] = ("presentation", np.asarray(ids, dtype=object))
        for k in ("neuroid_id", "layer", "region", "channel", "y", "x"):
            coords[k] = ("neuroid", flat[k].values)
        coords["time_bin_start"] = ("time_bin", np.asarray([a for a, _ in self.time_bins]))
        coords["time_bin_end"] = ("time_bin", np.asarray([b for _, b in self.time_bins]))
        dims = ("presentation", "neuroid", "time_bin")
        if _NeuroidAssembly is not None:
            return _NeuroidAssembly(values, coords=coords, dims=dims)
        da = xr.DataArray(values, coords=coords, dims=dims)
        # MultiIndexes as a NeuroidAssembly has them (one level stays a plain coordinate).
        levels: Dict[str, List[str]] = {
            "presentation": ["stimulus_id", *columns],
            "neuroid": ["neuroid_id", "layer", "region", "channel", "y", "x"],
            "time_bin": ["time_bin_start", "time_bin_end"],
        }
        multi: Dict[Any, Any] = {dim: names for dim, names in levels.items() if len(names) > 1}
        return da.set_index(multi)


def _stimuli(stimuli: Any) -> Tuple[List[str], List[str], Dict[str, np.ndarray]]:
    """Paths, ids and per-stimulus columns of a StimulusSet (or of a list of paths)."""
    if hasattr(stimuli, "columns") and "stimulus_id" in getattr(stimuli, "columns", []):
        ids = [str(s) for s in stimuli["stimulus_id"]]
        getter = getattr(stimuli, "get_stimulus", None) or getattr(stimuli, "get_image", None)
        if getter is not None:
            paths = [os.fspath(getter(s)) for s in stimuli["stimulus_id"]]
        else:
            column = next((c for c in ("stimulus_path", "path", "filepath") if c in stimuli.columns), None)
            if column is None:
                raise ValueError("the StimulusSet has neither get_stimulus() nor a path column")
            paths = [os.fspath(p) for p in stimuli[column]]
        columns = {
            str(c): np.asarray(stimuli[c].values)
            for c in stimuli.columns
            if c != "stimulus_id" and np.asarray(stimuli[c].values).ndim == 1
        }
        return paths, ids, columns
    paths = [os.fspath(p) for p in stimuli]
    return paths, list(paths), {}
