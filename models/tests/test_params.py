"""Parameter counts of the published architectures against convrnn-spec.md section 1
(the spec's figures are rounded to 3 significant digits; agreement within 1%)."""
import pytest
import torch

from convrnn import build_model

SPEC = {
    "timedecay_shallow": 4.20e6, "simplernn_shallow": 6.27e6, "gru_shallow": 25.4e6,
    "lstm_shallow": 21.1e6, "intersectionrnn_shallow": 32.5e6, "ugrnn_shallow": 18.4e6,
    "rgc_shallow": 24.0e6, "timedecay_intermediate": 16.4e6, "simplernn_intermediate": 33.5e6,
    "gru_intermediate": 67.7e6, "lstm_intermediate": 84.8e6, "intersectionrnn_intermediate": 84.8e6,
    "ugrnn_intermediate": 50.6e6, "ugrnn_intermediate_t30": 50.6e6,
    "ugrnn_intermediate_t30_tmaxconf": 50.6e6, "ugrnn_intermediate_t30_dthresh": 50.6e6,
    "rgc_intermediate": 15.45e6, "rgc_intermediate_tmaxconf": 15.45e6,
    "rgc_intermediate_dthresh": 15.45e6, "rgc_intermediate_t22_tmaxconf": 15.45e6,
}


def count(arch):
    with torch.device("meta"):
        return build_model(arch, seed=None)


@pytest.mark.parametrize("arch", sorted(SPEC))
def test_param_count(arch):
    m = count(arch)
    n = m.num_params()
    assert abs(n - SPEC[arch]) / SPEC[arch] < 0.01, (arch, n, SPEC[arch])


def test_published_geometry():
    for arch in SPEC:
        m = count(arch)
        cfg = m.cfg
        assert (cfg.input.height, cfg.input.width, cfg.num_classes) == (224, 224, 1000)
        T = cfg.time.steps
        if "t30" in arch:
            assert T == 30 and cfg.time.image_on_steps == 30
        elif "t22" in arch:
            assert T == 22 and cfg.time.image_on_steps == 22
        else:
            assert T == (16 if "shallow" in arch else 17) and cfg.time.image_on_steps == 12
        info = m.layer_info()
        last = info[-1]
        if "shallow" in arch:
            assert [l["height"] for l in info] == [56, 28, 14, 7, 4]
            assert m.first_driven_steps()["logits"] == 5
        else:
            assert [l["height"] for l in info] == [56, 56, 56, 28, 28, 14, 7, 7, 7, 4]
            assert m.first_driven_steps()["logits"] == 10
        assert last["height"] == 4


def test_rgc_intermediate_structure():
    m = count("rgc_intermediate")
    ch = {l["name"]: l["channels"] for l in m.layer_info()}
    assert [ch["conv%d" % i] for i in range(1, 11)] == [64, 128, 128, 128, 128, 256, 256, 256, 512, 512]
    assert m.fb_sources["conv6"] == ["conv7", "conv9"]
    # conv6's feedback 1x1 conv takes [conv7 (256), conv9 (512)] channels
    conv6 = m.layers[5].cell
    assert conv6.feedback_to_out.in_channels == 768 and conv6.feedback_to_out.out_channels == 256
    regions = {l["name"]: l.get("region") for l in m.layer_info()}
    assert regions["conv5"] == "V4" and regions["conv8"] == "pIT" and regions["conv10"] == "cIT/aIT"
