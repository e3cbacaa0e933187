"""convrnn.config: every file parses, defaults are filled in once, bad files are refused with
the file and field named, and what export writes is what the config says."""
import json

import pytest

from convrnn import build_model
from convrnn.config import (FASHION_MNIST_LABELS, IMAGENET_MEAN, IMAGENET_STD, ArchConfig,
                            ConfigError, config_path, get_config, list_archs)
from convrnn.export import build_metadata

MINIMAL = {
    "name": "m", "description": "a test config", "num_classes": 10,
    "input": {"channels": 3, "height": 8, "width": 8},
    "time": {"steps": 3, "image_on_steps": 2},
    "layers": [{"name": "conv1", "pre": {"out": 4, "k": 3}}],
    "head": {"type": "gap_fc"},
}


def write(tmp_path, name, data):
    path = tmp_path / (name + ".json")
    path.write_text(json.dumps(data))
    return str(path)


def with_changes(**top):
    d = json.loads(json.dumps(MINIMAL))
    d.update(top)
    return d


@pytest.mark.parametrize("arch", list_archs())
def test_every_config_parses_and_round_trips(arch):
    cfg = get_config(arch)
    assert cfg.name and cfg.architecture and cfg.layers
    assert ArchConfig.from_dict(json.loads(json.dumps(cfg.to_dict())), source=arch) == cfg
    assert get_config(config_path(arch)) is cfg  # parsed once, by name or by path


def test_registry_lists_the_files():
    archs = list_archs()
    assert {"rgc_fmnist", "tiny_fixture", "tiny_feedback", "rgc_intermediate"} <= set(archs)
    assert archs == sorted(archs)
    with pytest.raises(ConfigError, match="no_such_arch.json"):
        get_config("no_such_arch")


def test_defaults_are_filled_in():
    cfg = ArchConfig.from_dict(MINIMAL)
    assert cfg.architecture == "m"
    assert cfg.input.mean == IMAGENET_MEAN and cfg.input.std == IMAGENET_STD
    assert (cfg.input.resize, cfg.input.grayscale) == ("shorter-side-then-center-crop", "replicate")
    assert cfg.input.resize_shorter_side is None
    assert (cfg.time.step_ms, cfg.time.blank_value) == (10, 0.5)
    assert (cfg.readout.rule, cfg.readout.threshold, cfg.readout.first_step) == ("last", 0.9, None)
    layer = cfg.layers[0]
    assert (layer.pre.stride, layer.pre.bias, layer.pre.act) == (1, True, None)
    assert (layer.cell.type, layer.cell.kwargs(), layer.post, layer.pool) == ("feedforward", {}, None, False)
    assert cfg.feedback == () and cfg.labels == "fashion-mnist"
    assert cfg.label_names() == list(FASHION_MNIST_LABELS)
    assert ArchConfig.from_dict(with_changes(head={"type": "conv_gap"})).head.k == 2


def test_a_derived_file_merges_its_base(tmp_path):
    base = write(tmp_path, "base", with_changes(
        architecture="family",
        layers=[{"name": "conv1", "pre": {"out": 16, "k": 3}, "cell": {"type": "gru", "out": 32}},
                {"name": "conv2", "pre": {"out": 8, "k": 3}}]))
    child = write(tmp_path, "child", {
        "base": base, "name": "child", "description": "derived", "channel_scale": 0.5,
        "time": {"steps": 5}, "layer_overrides": {"conv2": {"pool": True, "pre": {"act": "elu"}}}})
    cfg = get_config(child)
    assert (cfg.name, cfg.architecture, cfg.description) == ("child", "family", "derived")
    assert (cfg.time.steps, cfg.time.image_on_steps) == (5, 2)  # objects merge key by key
    conv1, conv2 = cfg.layers
    assert conv1.pre.out == 8 and conv1.cell.kwargs() == {"out": 16}
    assert (conv2.pre.out, conv2.pre.k, conv2.pre.act, conv2.pool) == (4, 3, "elu", True)


@pytest.mark.parametrize("data, field, problem", [
    (with_changes(colour="red"), "colour", "unknown key"),
    (with_changes(input={"channels": 3, "height": 8, "width": 8, "crop": 1}), "input.crop", "unknown key"),
    (with_changes(input={"channels": 3, "height": 8}), "input.width", "missing"),
    (with_changes(input={"channels": 3, "height": 8, "width": 8, "resize": "crop"}), "input.resize", "stretch"),
    (with_changes(input={"channels": 3, "height": 8, "width": 8, "mean": [0.5]}), "input.mean", "per channel"),
    (with_changes(time={"steps": 3, "image_on_steps": 4}), "time.image_on_steps", "steps"),
    (with_changes(time={"steps": 3, "image_on_steps": 2, "step_ms": 0}), "time.step_ms", "positive"),
    (with_changes(readout={"rule": "vote"}), "readout.rule", "max_conf"),
    (with_changes(readout={"rule": "last", "threshold": 0.5}), "readout.threshold", "threshold rule"),
    (with_changes(layers=[{"name": "conv1", "pre": {"out": 4, "k": 3, "act": "gelu"}}]),
     "layers[0].pre.act", "elu"),
    (with_changes(layers=[{"name": "conv1", "pre": {"out": 4, "k": 3}, "pool": 1}]), "layers[0].pool", "true or false"),
    (with_changes(layers=[{"name": "conv1", "cell": {"type": "gru", "peepholes": True}}]),
     "layers[0].cell.peepholes", "unknown key for cell type 'gru'"),
    (with_changes(layers=[{"name": "conv1", "cell": {"type": "lstm", "peepholes": "yes"}}]),
     "layers[0].cell.peepholes", "a value like False"),
    (with_changes(layers=[{"name": "conv1", "cell": {"type": "transformer"}}]), "layers[0].cell.type", "one of"),
    (with_changes(layers=[{"name": "a"}, {"name": "a"}]), "layers[1].name", "names two layers"),
    (with_changes(layers=[{"name": "a"}, {"name": "b"}], feedback=[["a", "b"]]), "feedback[0]", "backwards"),
    (with_changes(layers=[{"name": "a"}], feedback=[["z", "a"]]), "feedback[0]", "layer names"),
    (with_changes(layers=[{"name": "a", "cell": {"type": "rgc"}}, {"name": "b"}], feedback=[["b", "a"]]),
     "feedback[0]", "a rgc cell has no feedback input"),
    (with_changes(head={"type": "gap_fc", "k": 2}), "head.k", "conv_gap"),
    (with_changes(labels=["a", "b"]), "labels", "2 names for 10 classes"),
    (with_changes(num_classes=1000), "labels", "fashion-mnist has 10 classes"),
])
def test_bad_files_are_refused_naming_file_and_field(tmp_path, data, field, problem):
    path = write(tmp_path, "bad", data)
    with pytest.raises(ConfigError) as e:
        get_config(path)
    msg = str(e.value)
    assert msg.startswith(path + ": " + field + ": "), msg
    assert problem in msg, msg


def test_bad_derived_files_are_refused(tmp_path):
    base = write(tmp_path, "base", MINIMAL)
    child = write(tmp_path, "child", {"base": base, "layer_overrides": {"conv9": {"pool": True}}})
    with pytest.raises(ConfigError, match=r"child\.json: layer_overrides\.conv9: no such layer"):
        get_config(child)
    child = write(tmp_path, "child2", {"base": base, "layer_overrides": {"conv1": {"pre": {"strid": 2}}}})
    with pytest.raises(ConfigError, match=r"child2\.json: layers\[0\]\.pre\.strid: unknown key"):
        get_config(child)
    loop = write(tmp_path, "loop", {"base": str(tmp_path / "loop2.json")})
    write(tmp_path, "loop2", {"base": loop})
    with pytest.raises(ConfigError, match=r"loop\.json: base: the chain of bases comes back"):
        get_config(loop)
    orphan = write(tmp_path, "orphan", with_changes(channel_scale=0.5))
    with pytest.raises(ConfigError, match=r"orphan\.json: channel_scale: only a file with a base"):
        get_config(orphan)


def test_configs_are_frozen():
    cfg = get_config("rgc_fmnist")
    with pytest.raises(Exception):
        cfg.time.steps = 3  # shared by every caller of get_config, so it must not change


@pytest.mark.parametrize("arch", ["tiny_fixture", "rgc_fmnist", "rgc_intermediate_tmaxconf_small",
                                  "ugrnn_intermediate_t30_dthresh_small"])
def test_metadata_is_what_the_config_says(arch):
    cfg = get_config(arch)
    meta = build_metadata(build_model(arch))
    assert (meta["name"], meta["architecture"], meta["description"]) == (
        cfg.name, cfg.architecture, cfg.description)
    assert meta["labels"] == cfg.label_names() and len(meta["labels"]) == cfg.num_classes
    inp = cfg.to_dict()["input"]
    if inp["resize_shorter_side"] is None:
        del inp["resize_shorter_side"]
    assert meta["input"] == inp
    assert meta["time"] == cfg.to_dict()["time"]
    assert [l["name"] for l in meta["layers"]] == cfg.layer_names
    assert [l["cell"] for l in meta["layers"]] == [l.cell.type for l in cfg.layers]
    assert meta["readout"]["rule"] == cfg.readout.rule
    if cfg.readout.first_step is not None:
        assert meta["readout"]["first_step"] == cfg.readout.first_step
    if cfg.readout.rule == "threshold":
        assert meta["readout"]["threshold"] == cfg.readout.threshold


@pytest.mark.parametrize("legacy", [False, True])
def test_a_checkpoint_exports_what_its_config_says(tmp_path, legacy):
    """train.py saves ``cfg.to_dict()``; ``export --checkpoint`` parses it back. Checkpoints of
    the untyped loader held the resolved file with a ``base_architecture`` key."""
    import torch

    from convrnn import export
    from convrnn.config import _load

    model = build_model("ff_fmnist", seed=3)
    saved = model.cfg.to_dict()
    if legacy:
        saved = dict(_load(config_path("ff_fmnist"))[1], base_architecture="rgc_shallow_small")
    ck = tmp_path / "final.pt"
    torch.save({"model": model.state_dict(), "config": saved, "trained_on": {"dataset": "x"},
                "description": "trained"}, str(ck))
    out = tmp_path / "m.onnx"
    export.main(["--arch", "ff_fmnist", "--checkpoint", str(ck), "--out", str(out), "--no-compare"])
    want = build_metadata(model, description="trained", trained_on={"dataset": "x"})
    assert export.read_metadata(str(out)) == json.loads(json.dumps(want))


def test_released_architectures_have_configs_and_reported_accuracy():
    from convrnn import convert
    from convrnn.config import RELEASED_ARCHS

    assert len(set(RELEASED_ARCHS)) == 20
    assert set(RELEASED_ARCHS) <= set(list_archs())
    assert set(convert.REPORTED_ACCURACY) == set(RELEASED_ARCHS)
