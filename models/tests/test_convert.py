"""convrnn.convert: the checkpoint -> ONNX command, and its refusals. The variable lists are
the authors' (names and shapes their code gives each graph, stored by the reference script
in tests/data/authors/<arch>.npz)."""
import json
import os

import numpy as np
import pytest

from bundle_writer import write_bundle
from convrnn import convert, contract
from convrnn import reference_weights as rw
from convrnn.export import read_metadata

DATA = os.path.join(os.path.dirname(__file__), "data", "authors")


def authors_variables(arch):
    z = np.load(os.path.join(DATA, arch + ".npz"))
    return dict(zip([str(n) for n in z["names"]], json.loads(str(z["shapes"]))))


def weights(arch):
    return {n: rw.weight(arch, n, tuple(s)) for n, s in authors_variables(arch).items()}


def test_command_writes_the_contract_with_imagenet_labels_and_provenance(tmp_path):
    arch = "timedecay_shallow"
    arrays = weights(arch)
    arrays["global_step"] = np.array(1234, np.int64)
    for n in list(arrays)[:5]:
        arrays[n + "/Momentum"] = np.zeros_like(arrays[n])
    prefix = str(tmp_path / "ckpt" / "model.ckpt")
    os.makedirs(os.path.dirname(prefix))
    write_bundle(prefix, arrays)
    out = str(tmp_path / "m.onnx")
    assert convert.main(["--arch", arch, "--checkpoint", prefix + ".index", "--out", out,
                         "--input-size", str(rw.input_size(arch)), "--no-compare"]) == 0
    meta = contract.validate(out)
    assert meta == read_metadata(out)
    assert len(meta["labels"]) == 1000
    assert meta["labels"][0].startswith("tench") and meta["labels"][999].startswith("toilet tissue")
    t = meta["trained_on"]
    assert t["dataset"].startswith("ImageNet")
    assert (t["test_top1"], t["test_top5"]) == (0.5006, 0.7297)
    assert "reported_by" in " ".join(t) and "not measured" in t["accuracy_reported_by"]
    assert t["checkpoint_sha256"]["model.ckpt.index"] == convert.sha256(prefix + ".index")
    assert t["checkpoint_sha256"]["model.ckpt.data-00000-of-00001"] == convert.sha256(
        prefix + ".data-00000-of-00001")
    regions = {layer["name"]: layer.get("region") for layer in meta["layers"]}
    assert regions == {"conv1": None, "conv2": None, "conv3": "V4", "conv4": "pIT", "conv5": "cIT/aIT"}
    assert meta["time"] == {"steps": 16, "step_ms": 10, "image_on_steps": 12, "blank_value": 0.5}
    assert meta["input"]["mean"] == [0.485, 0.456, 0.406]
    assert meta["readout"]["rule"] == "last"


def test_readout_values_come_from_the_checkpoint():
    model, rep = convert.convert_arrays("rgc_intermediate_tmaxconf", weights("rgc_intermediate_tmaxconf"),
                                        input_size=96)
    beta = float(weights("rgc_intermediate_tmaxconf")["tnn_model/normalize/softmax_beta"][0])
    assert rep["softmax_beta"] == pytest.approx(beta) and beta != 1.0
    assert float(model.head.softmax_beta.detach()) == pytest.approx(beta)
    assert set(rep["unused_decoder_values"]) == {"tnn_model/probs/softmax_beta",
                                                 "tnn_model/alpha/softmax_beta"}
    model, rep = convert.convert_arrays("rgc_intermediate_dthresh", weights("rgc_intermediate_dthresh"),
                                        input_size=96)
    assert model.cfg.readout.threshold == pytest.approx(0.01)
    assert model.readout_start() == 11


def test_every_problem_is_listed_at_once():
    arrays = weights("rgc_intermediate")
    arrays["tnn_model/conv4/ReciprocalGateCell/out/extra_weights"] = np.zeros(3, np.float32)
    del arrays["tnn_model/conv6/ReciprocalGateCell/out/residual_add_weights"]
    del arrays["tnn_model/imnetds/pre_3/bias"]
    arrays["tnn_model/conv5/pre_0/bias"] = np.zeros(127, np.float32)
    with pytest.raises(convert.ConversionError) as e:
        convert.convert_arrays("rgc_intermediate", arrays, input_size=96)
    msg = str(e.value)
    assert "unknown variables (1): tnn_model/conv4/ReciprocalGateCell/out/extra_weights" in msg
    assert ("missing variables (2): tnn_model/conv6/ReciprocalGateCell/out/residual_add_weights, "
            "tnn_model/imnetds/pre_3/bias") in msg
    assert "tnn_model/conv5/pre_0/bias: checkpoint [127], rgc_intermediate needs [128]" in msg
    # the same checkpoint does not fit another architecture either: mis-shaped, not silently loaded
    with pytest.raises(convert.ConversionError, match="mis-shaped"):
        convert.convert_arrays("rgc_intermediate", weights("rgc_intermediate") | {
            "tnn_model/conv1/pre_0/weights_basenet": np.zeros((3, 7, 7, 64), np.float32)}, input_size=96)


def test_memory_decay_and_threshold_beta_must_be_what_our_models_represent(tmp_path):
    arrays = weights("rgc_intermediate")
    arrays["tnn_model/conv2/memory_decay"] = np.array([0.25], np.float32)
    arrays["tnn_model/imnetds/memory_decay"] = np.array([-0.5], np.float32)
    with pytest.raises(convert.ConversionError,
                       match=r"memory_decay must be 0.*conv2/memory_decay = 0.25.*imnetds/memory_decay = -0.5"):
        convert.convert_arrays("rgc_intermediate", arrays, input_size=96)
    arrays = weights("rgc_intermediate_dthresh")
    arrays["tnn_model/normalize/softmax_beta"] = np.array([2.0], np.float32)
    with pytest.raises(convert.ConversionError, match="softmax beta must be 1"):
        convert.convert_arrays("rgc_intermediate_dthresh", arrays, input_size=96)
    # the command reports the refusal and exits 2
    prefix = str(tmp_path / "model.ckpt")
    write_bundle(prefix, arrays)
    assert convert.main(["--arch", "rgc_intermediate_dthresh", "--checkpoint", prefix,
                         "--out", str(tmp_path / "x.onnx"), "--input-size", "96"]) == 2
    assert not os.path.exists(tmp_path / "x.onnx")
