"""The Python reference server: what a user would write without convrnn-serve.

FastAPI + uvicorn + onnxruntime + Pillow/NumPy, one model, the same preprocessing as the Rust
server (EXIF transpose, RGB, ImageOps.fit BILINEAR = shorter side then centre crop, normalise,
grayscale replicated by convert("RGB")) and the same default presentation (the image for
`image_on_steps`, then frames of `blank_value`). One ORT session per worker process, one request
per run (no dynamic batching: that is the part users do not write). The endpoint is an
async one that reads the raw body (as the FastAPI docs show for binary uploads) and
hands decoding + inference to the thread pool, so the event loop is never blocked.

    REF_MODEL=models/rgc_fmnist.onnx REF_INTRA_THREADS=1 \
        uvicorn ref_server:app --app-dir benches/suite --workers 2 --port 8090 \
        --loop uvloop --http httptools --no-access-log

POST /v1/models/{model}/classify  with an image/* body -> top-5 JSON like the Rust server's.

REF_PRUNE=1 runs the graph cut down to `logits` (what convrnn-serve does for classification,
src/model/prune.rs), written with the `onnx` package. Not what a user would write without us;
the benchmark runs it beside the plain reference to show how much of the gap is pruning.
"""
import io
import json
import os

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, HTTPException, Request
from PIL import Image, ImageOps
from starlette.concurrency import run_in_threadpool

MODEL_PATH = os.environ.get("REF_MODEL", "models/rgc_fmnist.onnx")
INTRA = int(os.environ.get("REF_INTRA_THREADS", "1"))
PRUNE = os.environ.get("REF_PRUNE", "0") == "1"

so = ort.SessionOptions()
so.intra_op_num_threads = INTRA
so.inter_op_num_threads = 1
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
if PRUNE:
    from onnx_prune import pruned_to_logits  # benches/suite/, on the path through --app-dir

    source = pruned_to_logits(MODEL_PATH)
else:
    source = MODEL_PATH
session = ort.InferenceSession(source, so, providers=["CPUExecutionProvider"])
meta = json.loads(session.get_modelmeta().custom_metadata_map["convrnn"])
INP, TIME, LABELS = meta["input"], meta["time"], meta["labels"]
H, W, T = INP["height"], INP["width"], TIME["steps"]
MEAN = np.array(INP["mean"], dtype=np.float32)
STD = np.array(INP["std"], dtype=np.float32)
ON, BLANK = TIME["image_on_steps"], np.float32(TIME["blank_value"])
# Warm up (first run allocates).
session.run(["logits"], {"frames": np.full((1, T, 3, H, W), BLANK, np.float32)})

app = FastAPI()


def preprocess(data: bytes) -> np.ndarray:
    im = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    im = im.convert("RGB")
    if INP.get("resize", "shorter-side-then-center-crop") == "stretch":
        im = im.resize((W, H), Image.Resampling.BILINEAR)
    else:
        im = ImageOps.fit(im, (W, H), method=Image.Resampling.BILINEAR, centering=(0.5, 0.5))
    x = np.asarray(im, dtype=np.float32) / np.float32(255)
    return ((x - MEAN) / STD).transpose(2, 0, 1)


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


@app.get("/health/ready")
def ready():
    return {"ready": True}


def infer(data: bytes) -> dict:
    try:
        frame = preprocess(data)
    except Exception as e:  # noqa: BLE001
        raise HTTPException(400, f"bad image: {e}") from e
    movie = np.empty((1, T, 3, H, W), np.float32)
    movie[0, :ON] = frame
    movie[0, ON:] = BLANK
    logits = session.run(["logits"], {"frames": movie})[0][0, -1]
    p = softmax(logits)
    top = np.argsort(-p)[:5]
    return {"model": meta["name"], "results": [{
        "top_k": [{"index": int(i), "label": LABELS[i], "probability": float(p[i])} for i in top],
        "readout_step": T - 1}]}


@app.post("/v1/models/{model}/classify")
async def classify_raw(model: str, request: Request):
    if model != meta["name"]:
        raise HTTPException(404, f"model {model!r} is not served here")
    data = await request.body()
    return await run_in_threadpool(infer, data)
