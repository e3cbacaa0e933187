"""convrnn.tf_bundle against bundles written by TensorFlow's own Saver (fixtures made by
models/reference/make_bundle_fixtures.py, expected arrays as TensorFlow read them back)."""
import os
import shutil

import numpy as np
import pytest

from convrnn import tf_bundle
from convrnn.tf_bundle import BundleError, read_bundle, read_index

PREFIX = os.path.join(os.path.dirname(__file__), "data", "tf_bundle", "small")


def expected():
    z = np.load(PREFIX + ".npz")
    out = {k.replace("|", "/"): z[k] for k in z.files if k != "Momentum_stack"}
    for i, row in enumerate(z["Momentum_stack"]):
        out["tnn_model/conv%d/ReciprocalGateCell/out/tau/depthwise_weights/Momentum" % i] = row
    return out


def test_reads_every_tensor_as_tensorflow_does():
    want = expected()
    got = read_bundle(PREFIX)
    assert sorted(got) == sorted(want)
    for name, arr in want.items():
        assert got[name].dtype == arr.dtype, name
        assert got[name].shape == arr.shape, name
        assert np.array_equal(got[name], arr), name
    assert got["global_step"] == 123456789012
    assert got["tnn_model/conv1/pre_0/weights_basenet"].shape == (3, 3, 2, 4)


def test_index_header_and_entries():
    header, entries = read_index(PREFIX)
    assert header.num_shards == 1 and header.endianness == 0
    assert len(entries) == 110
    e = entries["tnn_model/conv1/pre_0/weights_basenet"]
    assert e.dtype == 1 and e.shape == (3, 3, 2, 4) and e.size == 3 * 3 * 2 * 4 * 4


def _copy(tmp_path):
    dst = str(tmp_path / "b")
    for ext in (".index", ".data-00000-of-00001"):
        shutil.copy(PREFIX + ext, dst + ext)
    return dst


def test_a_flipped_data_byte_is_caught_by_the_tensor_crc(tmp_path):
    dst = _copy(tmp_path)
    _, entries = read_index(dst)
    e = entries["tnn_model/imnetds/pre_3/weights"]
    with open(dst + ".data-00000-of-00001", "r+b") as f:
        f.seek(e.offset + 5)
        b = f.read(1)
        f.seek(e.offset + 5)
        f.write(bytes([b[0] ^ 0x10]))
    with pytest.raises(BundleError, match="imnetds/pre_3/weights: crc32c mismatch"):
        read_bundle(dst)
    # the other tensors still read (the damage is pinned to one tensor)
    assert read_bundle(dst, names=["tnn_model/conv1/pre_0/bias"])


def test_corrupt_index_and_truncated_data_are_refused(tmp_path):
    dst = _copy(tmp_path)
    with open(dst + ".index", "r+b") as f:
        f.seek(100)
        b = f.read(1)
        f.seek(100)
        f.write(bytes([b[0] ^ 1]))
    with pytest.raises(BundleError, match="crc32c mismatch"):
        read_index(dst)
    dst = _copy(tmp_path)
    with open(dst + ".data-00000-of-00001", "r+b") as f:
        f.truncate(100)
    with pytest.raises(BundleError, match="truncated"):
        read_bundle(dst)
    with open(dst + ".index", "r+b") as f:
        f.seek(-8, 2)
        f.write(b"\0" * 8)
    with pytest.raises(BundleError, match="magic"):
        read_index(dst)


def test_crc32c_implementations_agree():
    assert tf_bundle.crc32c_python(b"123456789") == 0xE3069283  # the standard check value
    data = np.random.default_rng(0).integers(0, 256, 10000, dtype=np.uint8).tobytes()
    assert tf_bundle.crc32c(data) == tf_bundle.crc32c_python(data)
    for c in (0, 1, 0xFFFFFFFF, 0x12345678):
        assert tf_bundle.unmask_crc(tf_bundle.mask_crc(c)) == c
