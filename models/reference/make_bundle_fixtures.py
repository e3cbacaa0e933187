"""Write the small TensorFlow tensor bundles that models/tests/test_tf_bundle.py reads.

Runs under TensorFlow (a separate venv, not the project's), e.g.
    /work/tfref/venv/bin/python models/reference/make_bundle_fixtures.py models/tests/data/tf_bundle

Writes, per fixture, the bundle TensorFlow's own Saver writes (``<name>.index`` and
``<name>.data-00000-of-00001``) and ``<name>.npz`` with the arrays as TensorFlow's own
checkpoint reader reads them back (the 100 ``.../Momentum`` ones stacked in conv order).
"""
import os
import sys

import numpy as np
import tensorflow as tf

v1 = tf.compat.v1


def arrays(seed):
    rng = np.random.default_rng(seed)
    out = {
        "tnn_model/conv1/pre_0/weights_basenet": rng.standard_normal((3, 3, 2, 4)).astype(np.float32),
        "tnn_model/conv1/pre_0/bias": rng.standard_normal(4).astype(np.float32),
        "tnn_model/conv1/memory_decay": np.zeros(1, np.float32),
        "tnn_model/normalize/softmax_beta": np.array([0.375], np.float32),
        "tnn_model/imnetds/pre_3/weights": rng.standard_normal((5, 7)).astype(np.float32),
        "global_step": np.array(123456789012, np.int64),
        "double": rng.standard_normal((2, 3)),
        "ints": rng.integers(-1000, 1000, (6,), dtype=np.int32),
        "flags": np.array([True, False, True]),
        "empty": np.zeros((0, 3), np.float32),
    }
    # enough prefix-sharing names for several restart points (every 16 keys) in the block
    for i in range(100):
        out["tnn_model/conv%d/ReciprocalGateCell/out/tau/depthwise_weights/Momentum" % i] = (
            rng.standard_normal((2,)).astype(np.float32))
    return out


def write(prefix, values):
    g = tf.Graph()
    with g.as_default():
        vs = [v1.get_variable(name, initializer=val) for name, val in values.items()]
        saver = v1.train.Saver(var_list=vs)
        with v1.Session(graph=g) as sess:
            sess.run(v1.global_variables_initializer())
            saver.save(sess, prefix, write_meta_graph=False, write_state=False)
    reader = tf.train.load_checkpoint(prefix)
    back = {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}
    assert set(back) == set(values)
    for n, v in values.items():
        assert np.array_equal(np.asarray(back[n]), v), n
    many = sorted((n for n in back if n.endswith("/Momentum")), key=lambda n: int(n.split("/")[1][4:]))
    expected = {n.replace("/", "|"): np.asarray(back[n]) for n in back if n not in many}
    expected["Momentum_stack"] = np.stack([back[n] for n in many])  # conv0.. conv299 in order
    np.savez_compressed(prefix + ".npz", **expected)


if __name__ == "__main__":
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    write(os.path.join(out, "small"), arrays(19))
    print("tensorflow", tf.__version__)
