"""The Python client (clients/python, `convrnn_client`) against the real server: every input kind,
batching over threads, the server's image limit, 429 retries, numpy and xarray activations
checked against plain HTTP, extraction directories, rsatoolbox and the Brain-Score adapter."""

import io
import json
import time
import urllib.request

import httpx
import numpy as np
import pytest
import xarray as xr
from PIL import Image

from conftest import MODEL, Server
from convrnn_client import Client, ConvRNNError, layer_view, open_extraction
from convrnn_client.brainscore import ConvRNNBrainModel, steps_for_bin


def image_array(seed: int, size=(20, 24)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (*size, 3), dtype=np.uint8)


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def http_post(server, path: str, body: bytes, content_type: str, accept: str = "application/json"):
    req = urllib.request.Request(
        server.base + path, data=body, headers={"Content-Type": content_type, "Accept": accept}
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.read()


def multipart(pngs):
    boundary = "client-test-boundary"
    out = io.BytesIO()
    for i, data in enumerate(pngs):
        out.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{i}.png"\r\n'
            "Content-Type: image/png\r\n\r\n".encode()
        )
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def http_activations(server, pngs, query: str):
    body, ct = multipart(pngs)
    raw = http_post(server, f"/v1/models/{MODEL}/activations?{query}", body, ct, "application/x-npz")
    with np.load(io.BytesIO(raw)) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def client(server):
    with Client(server.base) as c:
        yield c


@pytest.fixture(scope="module")
def arrays():
    return [image_array(i) for i in range(7)]


def test_models_describe_the_served_model(client):
    models = client.models()
    assert [m["name"] for m in models] == [MODEL]
    info = client.model_info()
    assert info["time"]["steps"] == 6
    assert info["visual_degrees"] == 8.0
    assert [layer.get("region") for layer in info["layers"]] == [None, "V4", "pIT"]


def test_classify_accepts_every_input_kind_and_matches_http(server, client, arrays, tmp_path):
    arr = arrays[0]
    data = png(arr)
    path = tmp_path / "a.png"
    path.write_bytes(data)
    expected = json.loads(http_post(server, f"/v1/models/{MODEL}/classify?top_k=3", data, "image/png"))
    want = expected["results"][0]
    inputs = [str(path), path, data, Image.fromarray(arr), arr, arr.astype(np.float32) / 255.0]
    results = client.classify(inputs, top_k=3)
    assert len(results) == len(inputs)
    for r in results:
        assert [c["index"] for c in r["top_k"]] == [c["index"] for c in want["top_k"]]
        np.testing.assert_allclose(
            [c["probability"] for c in r["top_k"]], [c["probability"] for c in want["top_k"]], rtol=1e-6
        )
    assert results[0]["stimulus_id"] == str(path)
    assert results[2]["stimulus_id"] == "2"
    # A single image is a list of one; a 4-D array is a list of images.
    assert len(client.classify(data)) == 1
    assert len(client.classify(np.stack(arrays[:3]))) == 3


def test_classify_per_timestep_and_bad_input(client, arrays):
    (r,) = client.classify(arrays[0], per_timestep=True, top_k=2)
    probs = np.asarray(r["per_timestep"])
    assert probs.shape == (6, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ConvRNNError) as e:
        client.classify(b"not an image")
    assert e.value.status == 400 and e.value.code
    with pytest.raises(TypeError):
        client.classify([object()])
    with pytest.raises(ValueError):
        client.classify(np.zeros((4, 4, 5), dtype=np.uint8)[None])
    with pytest.raises(ValueError, match="no images"):
        client.activations([])


def test_batches_in_parallel_keep_order(server, arrays):
    ids = [f"s{i}" for i in range(len(arrays))]
    with Client(server.base) as one:
        whole = one.classify(arrays, stimulus_ids=ids, top_k=10)
    with Client(server.base, batch_size=2, workers=3) as many:
        split = many.classify(arrays, stimulus_ids=ids, top_k=10)
        acts = many.activations(arrays, layers="conv2", steps="1:4")
    assert [r["stimulus_id"] for r in split] == ids
    for a, b in zip(whole, split):
        np.testing.assert_allclose(
            [c["probability"] for c in a["top_k"]], [c["probability"] for c in b["top_k"]], rtol=1e-6
        )
    ref = http_activations(server, [png(a) for a in arrays], "layers=conv2&steps=1:4")
    np.testing.assert_allclose(acts["conv2"], ref["conv2"], rtol=1e-6)


def test_respects_the_servers_image_limit(arrays):
    s = Server("--max-images-per-request", "3")
    try:
        with Client(s.base, batch_size=32, workers=1) as c:
            results = c.classify(arrays, top_k=1)
            assert len(results) == len(arrays)
            assert c.batch_size == 3
            acts = c.activations(arrays, layers="conv3", pool="mean")
            assert acts["conv3"].shape == (len(arrays), 6, 8)
    finally:
        s.stop()


def test_retries_429_after_retry_after(server, arrays):
    calls = []
    real = httpx.HTTPTransport()

    class Busy(httpx.BaseTransport):
        """Answers the first inference request 429 with Retry-After: 1, then the real server."""

        def handle_request(self, request):
            if request.url.path.endswith("/classify"):
                assert request.headers["authorization"] == "Bearer secret"
                calls.append(time.monotonic())
                if len(calls) == 1:
                    return httpx.Response(
                        429,
                        headers={"Retry-After": "1"},
                        json={"error": "the queue is full", "code": "overloaded"},
                    )
            return real.handle_request(request)

    with Client(server.base, api_key="secret", transport=Busy(), model=MODEL) as c:
        (r,) = c.classify(arrays[0])
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.95
    assert r["top_k"]
    with Client(server.base, api_key="secret", transport=Busy(), model=MODEL, max_retries=0) as c:
        calls.clear()
        with pytest.raises(ConvRNNError) as e:
            c.classify(arrays[0])
        assert e.value.status == 429


def test_activations_numpy_match_http(server, client, arrays):
    pngs = [png(a) for a in arrays[:3]]
    got = client.activations(pngs, layers=["conv1", "conv3"], steps=slice(2, 5))
    ref = http_activations(server, pngs, "layers=conv1,conv3&steps=2:5")
    assert set(got) == {"conv1", "conv3", "steps", "time_ms"}
    assert got["conv1"].shape == (3, 3, 4, 8, 8) and got["conv1"].dtype == np.float32
    for k in ("conv1", "conv3", "steps", "time_ms"):
        np.testing.assert_array_equal(got[k], ref[k])
    pooled = client.activations(pngs, layers="conv2", window_ms=(20, 40), pool="max")
    assert pooled["conv2"].shape == (3, 2, 8)
    np.testing.assert_array_equal(pooled["steps"], [2, 3])


def test_activations_as_xarray(client, arrays):
    ids = ["a", "b", "c"]
    ds = client.activations(arrays[:3], layers="all", steps=[1, 3], stimulus_ids=ids, as_xarray=True)
    assert isinstance(ds, xr.Dataset)
    assert list(ds.data_vars) == ["conv1", "conv2", "conv3"]
    assert list(ds["stimulus"].values) == ids
    np.testing.assert_array_equal(ds["time_ms"].values, [10.0, 30.0])
    np.testing.assert_array_equal(ds["time_bin_end"].values, [20.0, 40.0])
    np.testing.assert_array_equal(ds["step"].values, [1, 3])
    assert ds["conv2"].dims == ("stimulus", "time_ms", "conv2_channel", "conv2_y", "conv2_x")
    assert ds["conv2"].attrs["region"] == "V4"
    v = layer_view(ds, "conv2")
    assert v.dims == ("stimulus", "time_ms", "channel", "y", "x")
    assert v["layer"].item() == "conv2" and v["region"].item() == "V4"
    raw = client.activations(arrays[:3], layers="conv2", steps=[1, 3])
    np.testing.assert_array_equal(v.sel(stimulus="b").values, raw["conv2"][1])
    logits = client.activations(arrays[:1], layers="logits", as_xarray=True)
    assert logits["logits"].dims == ("stimulus", "time_ms", "logits_class")
    assert logits["logits_label"].values[1] == "Trouser"


def write_extraction(directory, client, images, ids, bins, layers=("conv2", "conv3"), failed_row=None):
    """An extraction directory in the format of `convrnn-serve extract` (manifest.json +
    <layer>.npy, time bins averaged over the steps whose start lies in them), from the server."""
    info = client.model_info()
    step_ms = info["time"]["step_ms"]
    acts = client.activations(images, layers=list(layers))
    time_bins = []
    for a, b in bins:
        steps = [t for t in range(info["time"]["steps"]) if a <= t * step_ms < b]
        time_bins.append({"start_ms": a, "end_ms": b, "steps": steps})
    entries = []
    for name in layers:
        data = np.stack([acts[name][:, tb["steps"]].mean(axis=1) for tb in time_bins], axis=1)
        data = data.astype(np.float32)
        if failed_row is not None:
            data[failed_row] = np.nan
        np.save(directory / f"{name}.npy", data)
        spec = next(layer for layer in info["layers"] if layer["name"] == name)
        entries.append({
            "name": name, "file": f"{name}.npy", "shape": list(data.shape), "dtype": "float32",
            "dims": ["stimulus", "time", "channel", "y", "x"], "region": spec.get("region"),
            "channels": spec["channels"], "height": spec["height"], "width": spec["width"],
            "model_height": spec["height"], "model_width": spec["width"],
            "first_driven_step": spec["first_driven_step"],
        })
    manifest = {
        "format": "convrnn-extract/1",
        "model": {"name": info["name"], "architecture": info["architecture"], "weights_sha256": None,
                  "metadata": {"labels": info["labels"]}},
        "stimulus_ids": ids,
        "stimulus_paths": [f"/data/{i}.png" for i in ids],
        "time_axis": "bins",
        "time_bins": time_bins,
        "step_ms": step_ms,
        "pool": "none",
        "dtype": "float32",
        "preprocessing": {},
        "layers": entries,
        "stimulus_sha256": [f"{i:064x}" for i in range(len(ids))],
        "failures": [] if failed_row is None else [
            {"row": failed_row, "stimulus_id": ids[failed_row], "path": "x", "error": "corrupt"}],
        "rows_done": len(ids),
        "complete": True,
        "source": "test",
        "command": ["convrnn-serve", "extract"],
        "convrnn_serve_version": "0",
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return acts, time_bins


def test_open_extraction_is_lazy_and_labelled(client, arrays, tmp_path):
    ids = [f"img{i}" for i in range(5)]
    acts, bins = write_extraction(tmp_path, client, arrays[:5], ids, [(0, 20), (20, 50)], failed_row=3)
    ds = open_extraction(tmp_path)
    assert list(ds.data_vars) == ["conv2", "conv3"]
    assert list(ds["stimulus"].values) == ids
    np.testing.assert_array_equal(ds["time_bin_start"].values, [0, 20])
    np.testing.assert_array_equal(ds["time_bin_end"].values, [20, 50])
    assert list(ds["step"].values) == ["0,1", "2,3,4"]
    assert list(ds["failed"].values) == [False, False, False, True, False]
    assert ds["conv3"].attrs["region"] == "pIT" and ds.attrs["model"] == MODEL
    v = layer_view(ds, "conv2")
    np.testing.assert_allclose(v.sel(stimulus="img1").isel(time_ms=1).values,
                               acts["conv2"][1, 2:5].mean(axis=0), rtol=1e-6)
    # Memory-mapped: the values come from the file, not a copy made at open.
    mm = np.load(tmp_path / "conv2.npy", mmap_mode="r+")
    mm[0, 0, 0, 0, 0] = 1234.5
    mm.flush()
    assert float(ds["conv2"][0, 0, 0, 0, 0]) == 1234.5
    bad = json.loads((tmp_path / "manifest.json").read_text())
    bad["layers"][0]["shape"][0] = 6
    (tmp_path / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="shape"):
        open_extraction(tmp_path)


def test_to_rsatoolbox(client, arrays):
    rsatoolbox = pytest.importorskip("rsatoolbox")
    from convrnn_client import to_rsatoolbox

    ds = client.activations(arrays[:4], layers=["conv2", "conv3"], pool="mean", as_xarray=True)
    td = to_rsatoolbox(ds)
    assert isinstance(td, rsatoolbox.data.TemporalDataset)
    assert td.measurements.shape == (4, 16, 6)
    assert list(td.channel_descriptors["layer"]) == ["conv2"] * 8 + ["conv3"] * 8
    np.testing.assert_array_equal(td.time_descriptors["time"], np.arange(6) * 10.0)
    np.testing.assert_allclose(td.measurements[2, 8:, 4], ds["conv3"].values[2, 4], rtol=1e-6)
    # The time course of the representational geometry: one RDM per time point.
    rdms = rsatoolbox.rdm.calc_rdm_movie(td, method="euclidean")
    assert rdms.n_rdm == 6 and rdms.n_cond == 4


class StimulusSet:
    """The part of Brain-Score's StimulusSet the adapter reads: a table with `stimulus_id` and
    `get_stimulus(id) -> path` (the real class is tried by scripts/check-brainscore.sh)."""

    def __init__(self, table, paths):
        self.table = table
        self.columns = list(table)
        self.paths = paths

    def __getitem__(self, column):
        import pandas as pd

        return pd.Series(self.table[column])

    def get_stimulus(self, stimulus_id):
        return self.paths[stimulus_id]


def test_brainscore_adapter_maps_regions_and_time_bins(server, client, arrays, tmp_path):
    paths = {}
    for i, a in enumerate(arrays[:4]):
        p = tmp_path / f"{i}.png"
        p.write_bytes(png(a))
        paths[f"id{i}"] = str(p)
    stimuli = StimulusSet({"stimulus_id": list(paths), "category": ["a", "b", "a", "b"]}, paths)
    brain = ConvRNNBrainModel(client, MODEL)
    assert brain.visual_degrees() == 8.0
    assert brain.layers_for("IT") == ["conv3"] and brain.layers_for("V4") == ["conv2"]
    with pytest.raises(ValueError, match="regions: V4, pIT"):
        brain.layers_for("V1")
    brain.start_recording("IT", [(0, 20), (20, 40), (40, 100)])
    assert brain.bin_steps == [[0, 1], [2, 3], [4, 5]]
    asm = brain.look_at(stimuli)
    assert asm.dims == ("presentation", "neuroid", "time_bin")
    assert asm.shape == (4, 8 * 2 * 2, 3)
    assert list(asm["stimulus_id"].values) == list(paths)
    assert list(asm["category"].values) == ["a", "b", "a", "b"]
    assert set(asm["layer"].values) == {"conv3"} and set(asm["region"].values) == {"pIT"}
    assert asm["neuroid_id"].values[5] == "conv3.5"
    np.testing.assert_array_equal(asm["time_bin_start"].values, [0, 20, 40])
    np.testing.assert_array_equal(asm["time_bin_end"].values, [20, 40, 100])
    raw = client.activations(list(paths.values()), layers="conv3")["conv3"]  # [4, 6, 8, 2, 2]
    np.testing.assert_allclose(asm.values[:, :, 1], raw[:, 2:4].mean(axis=1).reshape(4, -1), rtol=1e-6)
    # A bin with no step start takes the nearest step, as Brain-Score's CORnet-S commitment does.
    assert steps_for_bin(200, 250, 6, 10.0) == [5]
    pooled = ConvRNNBrainModel(server.base, MODEL, pool="mean", region_layer_map={"IT": ["conv2", "conv3"]})
    pooled.start_recording("IT", [(70, 170)])
    asm = pooled.look_at(list(paths.values()))
    assert asm.shape == (4, 16, 1)
    assert list(asm["stimulus_id"].values) == list(paths.values())
