"""Reference outputs from the authors' own TensorFlow code (github neuroailab/convrnns), for
models/tests/test_authors_equality.py.

Runs under TensorFlow (a separate venv, never the project's; the authors' code is not part
of this project and is read from the path given):

    /work/tfref/venv/bin/python models/reference/authors_reference.py \
        --authors /path/to/convrnns --out models/tests/data/authors [--arch rgc_intermediate ...]

Per architecture it builds the authors' graph with their ``model_func`` (their registry
``MODEL_TO_KWARGS``, default image presentation, ``include_all_times``; the graph's declared
input size set to the small test input, see ``small_input_graph``), fills every variable
with the seeded weights of ``convrnn.reference_weights`` (so a test regenerates them without
TensorFlow), saves them with TF's ``Saver``, restores them through the authors' loader
(``get_restore_vars``) into a fresh session, and runs the fixed inputs. It writes
``<arch>.npz``: the variable names and shapes, the inputs, and every layer's output at every
step, reduced as ``convrnn.reference_weights.reduce_output`` says, plus the full logits.
``--checkpoint-dir DIR`` also keeps the TF checkpoint (``DIR/<arch>/model.ckpt``).
``--full-size`` builds the graph at the authors' own 224 px instead (the RGC kernels, clipped to
the map size, then have their released shapes), for a checkpoint to convert and serve at full
size (benches/investigations/authors_tf_vs_server.py).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def _load(path, name):
    # convrnn/__init__ imports torch, which this venv lacks: load the numpy-only file alone
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


rw = _load(os.path.join(os.path.dirname(HERE), "convrnn", "reference_weights.py"), "reference_weights")
install = _load(os.path.join(HERE, "tf1_shim.py"), "tf1_shim").install


def layer_names(num_layers):
    return ["conv%d" % l for l in range(1, num_layers)] + ["imnetds"]


def small_input_graph(base_name, size):
    """A copy of the authors' graph JSON declaring ``size`` px instead of 224: their harbor
    resizes every input to the node's declared shape (conv1: [224, 224, 3]), so a small image
    would otherwise be upsampled to 224 first; the recurrent cells declare their state's
    spatial shape (e.g. [56, 56]) too. Every declared spatial size is scaled by size/224
    (exact for 64 and 96 px); nothing else changes. Same file name (their model_func reads
    the cell type and t22/t30 from it) in a folder whose name contains neither."""
    with open(base_name + ".json") as f:
        graph = json.load(f)

    def scale(obj):
        if isinstance(obj, dict):
            for k, v in obj.items():
                if k == "shape" and isinstance(v, list) and len(v) >= 2:
                    new = [v[0] * size / 224.0, v[1] * size / 224.0]
                    assert all(x == int(x) for x in new), (v, size)
                    obj[k] = [int(new[0]), int(new[1])] + v[2:]
                else:
                    scale(v)
        elif isinstance(obj, list):
            for v in obj:
                scale(v)

    assert graph["nodes"][0]["name"] == "conv1" and graph["nodes"][0]["shape"] == [224, 224, 3]
    scale(graph)
    folder = os.path.join(tempfile.gettempdir(), "convrnn_ref_graphs_%d" % size)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, os.path.basename(base_name))
    with open(path + ".json", "w") as f:
        json.dump(graph, f)
    return path


def run(arch, authors, out_dir, ckpt_dir=None, list_only=False, full_size=False):
    v1 = install(authors)
    from convrnns.models.model_func import model_func
    from convrnns.utils.loader import MODEL_TO_KWARGS, get_restore_vars

    size = 224 if full_size else rw.input_size(arch)
    images = rw.inputs(arch, size)  # [B, H, W, 3] NHWC, already normalised
    g = v1.Graph()
    with g.as_default():
        x = v1.placeholder(v1.float32, shape=list(images.shape))
        kwargs = dict(MODEL_TO_KWARGS[arch])
        if not full_size:
            kwargs["base_name"] = small_input_graph(kwargs["base_name"], size)
        nl = 6 if "shallow" in arch else 11
        outs = model_func(inputs=x, out_layers=layer_names(nl), include_all_times=True,
                          include_logits=True, **kwargs)
        variables = sorted(v1.global_variables(), key=lambda v: v.op.name)
        manifest = [(v.op.name, v.shape.as_list(), v.dtype.base_dtype.name) for v in variables]
        if list_only:
            return manifest
        values = {n: rw.weight(arch, n, tuple(s)) for n, s, _ in manifest}
        for (n, s, dt) in manifest:
            assert dt == "float32", (n, dt)
        with v1.Session(graph=g) as sess:
            for v in variables:
                v.load(values[v.op.name], sess)
            tmp = ckpt_dir and os.path.join(os.path.abspath(ckpt_dir), arch)
            tmp = tmp or tempfile.mkdtemp(prefix="convrnn-ref-")
            os.makedirs(tmp, exist_ok=True)
            prefix = os.path.join(tmp, "model.ckpt")
            v1.train.Saver(var_list=variables).save(sess, prefix, write_meta_graph=False,
                                                    write_state=False)
        # a fresh session, restored through the authors' own loader, as run_model.py does
        with v1.Session(graph=g) as sess:
            sess.run(v1.global_variables_initializer())
            restore = get_restore_vars(prefix)
            assert len(restore) == len(variables), "the authors' loader skipped variables"
            v1.train.Saver(var_list=restore).restore(sess, prefix)
            t0 = time.time()
            res = sess.run(outs, feed_dict={x: images})
            secs = time.time() - t0
    data = {"names": np.array([n for n, _, _ in manifest]),
            "shapes": np.array(json.dumps([s for _, s, _ in manifest]))}
    for layer in layer_names(nl):
        steps = res[layer]
        arr = np.stack([np.asarray(steps[t]) for t in sorted(steps)], 1)  # [B,T,H,W,C]
        if layer == "imnetds":
            logits = arr.reshape(arr.shape[0], arr.shape[1], -1)
            for k, v in rw.reduce_logits(logits).items():
                data["logits/" + k] = v
            # the decoder's choice: the step whose logits it returned
            readout = np.asarray(res["logits"]).reshape(arr.shape[0], -1)
            err = np.abs(logits - readout[:, None]).max(-1)
            data["readout_step"] = err.argmin(1).astype(np.int16)
            assert np.all(err.min(1) == 0), "the readout is not one step's logits"
        else:
            for k, v in rw.reduce_output(arr).items():
                data[layer + "/" + k] = v
    os.makedirs(out_dir, exist_ok=True)
    np.savez_compressed(os.path.join(out_dir, arch + ".npz"), **data)
    print("%s: %d variables, %d values, run %.1f s" % (
        arch, len(manifest), sum(int(np.prod(s)) for _, s, _ in manifest), secs))
    return manifest


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--authors", required=True, help="root of a neuroailab/convrnns checkout")
    ap.add_argument("--out", required=True)
    ap.add_argument("--arch", nargs="*", default=None)
    ap.add_argument("--checkpoint-dir")
    ap.add_argument("--list", action="store_true", help="print the variables and exit")
    ap.add_argument("--full-size", action="store_true",
                    help="build the graph at the authors' 224 px, not the small test input")
    a = ap.parse_args()
    out = os.path.abspath(a.out)
    ck = a.checkpoint_dir and os.path.abspath(a.checkpoint_dir)
    for arch in a.arch or rw.ARCHS:
        m = run(arch, a.authors, out, ck, list_only=a.list, full_size=a.full_size)
        if a.list:
            for n, s, dt in m:
                print(arch, n, s, dt)


if __name__ == "__main__":
    main()
