"""The Brain-Score adapter against brainscore-vision's own classes (run by
scripts/check-brainscore.sh, which sets up their environment and a server at CONVRNN_URL):
a StimulusSet built locally goes through `ConvRNNBrainModel`, the answer is a real
NeuroidAssembly, and Brain-Score's temporal alignment of 10 ms recordings gives the same
values as asking the adapter for the wider bins directly."""

import os
import sys
import tempfile

import numpy as np
from PIL import Image
from brainscore_core.supported_data_standards.brainio.assemblies import NeuroidAssembly
from brainscore_core.supported_data_standards.brainio.stimuli import StimulusSet
from brainscore_vision.model_helpers.brain_transformation.temporal import assembly_time_align
from brainscore_vision.model_interface import BrainModel

from convrnn_client.brainscore import ConvRNNBrainModel

URL = os.environ["CONVRNN_URL"]
MODEL = os.environ.get("CONVRNN_MODEL", "tiny_convrnn")


def stimulus_set(directory: str) -> StimulusSet:
    rng = np.random.default_rng(0)
    rows, paths = [], {}
    for i in range(6):
        sid = f"stim{i}"
        path = os.path.join(directory, f"{sid}.png")
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        rows.append({"stimulus_id": sid, "object_name": ["car", "dog"][i % 2]})
        paths[sid] = path
    stimuli = StimulusSet(rows)
    stimuli.stimulus_paths = paths
    stimuli.identifier = "convrnn-serve-local"
    return stimuli


def main() -> int:
    with tempfile.TemporaryDirectory() as d:
        stimuli = stimulus_set(d)
        model = ConvRNNBrainModel(URL, MODEL)
        assert isinstance(model, BrainModel), type(model).__mro__
        assert model.visual_degrees() == 8.0
        steps, step_ms = model.info["time"]["steps"], model.info["time"]["step_ms"]
        fine = [(t * step_ms, (t + 1) * step_ms) for t in range(steps)]
        model.start_recording(BrainModel.RecordingTarget.IT, time_bins=fine)
        asm = model.look_at(stimuli)
        assert isinstance(asm, NeuroidAssembly), type(asm)
        assert set(asm.dims) == {"presentation", "neuroid", "time_bin"}, asm.dims
        assert list(asm["stimulus_id"].values) == list(stimuli["stimulus_id"]), asm["stimulus_id"].values
        assert list(asm["object_name"].values) == list(stimuli["object_name"])
        assert set(asm["region"].values) == {"pIT"} and asm.sizes["time_bin"] == steps
        one = asm.sel(stimulus_id="stim3")
        assert one.sizes["neuroid"] == asm.sizes["neuroid"]
        wide = [(0.0, 2 * step_ms), (2 * step_ms, 5 * step_ms)]
        aligned = assembly_time_align(asm, wide)
        model.start_recording("IT", time_bins=wide)
        direct = model.look_at(stimuli)
        a = aligned.transpose("presentation", "neuroid", "time_bin").values
        b = direct.transpose("presentation", "neuroid", "time_bin").values
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        print(f"brainscore check passed: NeuroidAssembly {dict(asm.sizes)}; "
              f"Brain-Score's time alignment of {steps} bins equals the adapter's {len(wide)} bins")
    return 0


if __name__ == "__main__":
    sys.exit(main())
