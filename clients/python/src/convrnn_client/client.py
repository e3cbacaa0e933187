"""``Client``: the ``/v1`` API of a convrnn-serve server from Python.

Large image lists are split into batches (at most the server's images per request, learnt from
its 413 answer if smaller than ``batch_size``) sent from a few threads at once; a full queue
(429) or a draining server (503) is retried after the ``Retry-After`` the server sends.
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, TypedDict, Union

import httpx
import numpy as np

from ._dataset import build_dataset
from ._images import Source, as_list, sources

NPZ = "application/x-npz"
_LIMIT_RE = re.compile(r"the limit is (\d+)")


class ClassScore(TypedDict):
    index: int
    label: str
    probability: float


class ClassifyResult(TypedDict, total=False):
    top_k: List[ClassScore]
    readout_step: int
    per_timestep: List[List[float]]
    stimulus_id: str


class ConvRNNError(Exception):
    """An error answer of the server: ``status`` (HTTP), ``code`` and ``message`` from its JSON."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def _options(**kw: Any) -> Dict[str, str]:
    """Query parameters: None dropped, lists joined with commas, booleans lower case."""
    out: Dict[str, str] = {}
    for k, v in kw.items():
        if v is None:
            continue
        if isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, (list, tuple, range)):
            v = ",".join(str(x) for x in v)
        elif isinstance(v, slice):
            if v.step not in (None, 1):
                raise ValueError("a steps slice cannot have a step; pass a list")
            v = f"{'' if v.start is None else v.start}:{'' if v.stop is None else v.stop}"
        out[k] = str(v)
    return out


class Client:
    """A convrnn-serve server at ``url``.

    ``api_key`` is sent as ``Authorization: Bearer``. ``model`` is the default model of every
    call (else the only served model). ``batch_size`` caps the images per request, ``workers``
    the requests in flight; ``max_retries`` bounds retries of 429/503 answers.
    """

    def __init__(
        self,
        url: str,
        api_key: Optional[str] = None,
        *,
        model: Optional[str] = None,
        batch_size: int = 32,
        workers: int = 4,
        timeout: float = 300.0,
        max_retries: int = 20,
        transport: Optional[httpx.BaseTransport] = None,
    ):
        if batch_size < 1 or workers < 1:
            raise ValueError("batch_size and workers must be at least 1")
        headers = {"User-Agent": "convrnn-client/0.1"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.url = url.rstrip("/")
        self.model = model
        self.batch_size = batch_size
        self.workers = workers
        self.max_retries = max_retries
        self._lock = threading.Lock()
        self._models: Optional[List[Dict[str, Any]]] = None
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=workers + 1, max_keepalive_connections=workers + 1),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- models ----------------------------------------------------------------------------

    def models(self) -> List[Dict[str, Any]]:
        """Every served model's description (labels, input, time axis, layers with regions)."""
        models = self._request("GET", "/v1/models").json()["models"]
        with self._lock:
            self._models = models
        return models

    def model_info(self, model: Optional[str] = None) -> Dict[str, Any]:
        """The description of ``model`` (default: the client's, else the only served one)."""
        name = self._model_name(model)
        with self._lock:
            cached = next((m for m in self._models or [] if m["name"] == name), None)
        return cached or self._request("GET", f"/v1/models/{name}").json()

    def _model_name(self, model: Optional[str]) -> str:
        name = model or self.model
        if name:
            return name
        with self._lock:
            models = self._models
        if models is None:
            models = self.models()
        if len(models) != 1:
            names = ", ".join(m["name"] for m in models)
            raise ValueError(f"the server serves several models ({names}): pass model=")
        return models[0]["name"]

    # ---- inference ---------------------------------------------------------------------------

    def classify(
        self,
        images: Any,
        *,
        top_k: Optional[int] = None,
        per_timestep: bool = False,
        model: Optional[str] = None,
        stimulus_ids: Optional[Sequence[str]] = None,
        mask: Any = None,
        **options: Any,
    ) -> List[ClassifyResult]:
        """Top-k classes of each image (and with ``per_timestep`` the probabilities at every
        step), in input order, each with its ``stimulus_id``. ``options``: ``presentation``,
        ``on_steps``, ``mask_steps``, ``sequence`` as in the HTTP API."""
        name = self._model_name(model)
        params = _options(top_k=top_k, per_timestep=per_timestep or None, **options)
        srcs = sources(as_list(images), stimulus_ids)
        mask_bytes = self._mask(mask)

        def send(start: int, batch: List[Source]) -> List[ClassifyResult]:
            r = self._post_images(f"/v1/models/{name}/classify", batch, params, mask_bytes, None)
            return list(r.json()["results"])

        results = self._run(srcs, send, whole=options.get("presentation") == "sequence")
        if options.get("presentation") == "sequence":
            return [r for part in results for r in part]
        out: List[ClassifyResult] = []
        for (sid, _), r in zip(srcs, (r for part in results for r in part)):
            r["stimulus_id"] = sid
            out.append(r)
        return out

    def activations(
        self,
        images: Any,
        *,
        layers: Union[None, str, Sequence[str]] = None,
        steps: Union[None, str, int, slice, Sequence[int]] = None,
        window_ms: Union[None, str, Tuple[float, float]] = None,
        pool: Optional[str] = None,
        model: Optional[str] = None,
        stimulus_ids: Optional[Sequence[str]] = None,
        as_xarray: bool = False,
        mask: Any = None,
        **options: Any,
    ) -> Any:
        """Layer activations of each image at the chosen steps, fetched as ``.npz``.

        Returns a dict like the server's npz: one float32 array per layer shaped
        ``[images, steps, C, H, W]`` (pooled: ``[images, steps, C]``), plus ``steps`` and
        ``time_ms``; or with ``as_xarray=True`` an ``xarray.Dataset`` (see ``layer_view``).
        ``layers``: names, ``"all"`` or ``"logits"``; ``steps``: ``"a:b"``, a slice, a list;
        ``window_ms``: ``(start, end)``; ``pool``: ``none``, ``mean`` or ``max``.
        """
        name = self._model_name(model)
        if isinstance(window_ms, tuple):
            window_ms = f"{window_ms[0]}:{window_ms[1]}"
        if isinstance(steps, int):
            steps = [steps]
        params = _options(layers=layers, steps=steps, window_ms=window_ms, pool=pool, **options)
        sequence = options.get("presentation") == "sequence"
        srcs = sources(as_list(images), stimulus_ids)
        mask_bytes = self._mask(mask)
        total = 1 if sequence else len(srcs)
        out: Dict[str, np.ndarray] = {}
        meta: Dict[str, np.ndarray] = {}
        fill_lock = threading.Lock()

        def send(start: int, batch: List[Source]) -> None:
            r = self._post_images(f"/v1/models/{name}/activations", batch, params, mask_bytes, NPZ)
            with np.load(io.BytesIO(r.content), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
            # Rows go straight into the whole answer, so a large list costs it plus the batches
            # in flight, not twice it.
            with fill_lock:
                for k in ("steps", "time_ms"):
                    meta.setdefault(k, arrays.pop(k))
                for k, a in arrays.items():
                    if k not in out:
                        out[k] = np.empty((total, *a.shape[1:]), dtype=a.dtype)
                    out[k][start : start + a.shape[0]] = a

        self._run(srcs, send, whole=sequence)
        if not as_xarray:
            return {**out, **meta}
        info = self.model_info(name)
        step_ms = float(info["time"]["step_ms"])
        by_name = {layer["name"]: layer for layer in info["layers"]}
        ids = [srcs[0][0]] if sequence else [sid for sid, _ in srcs]
        return build_dataset(
            out,
            stimulus_ids=ids,
            time_ms=meta["time_ms"],
            time_bin_end_ms=np.asarray(meta["time_ms"]) + step_ms,
            steps=[int(s) for s in meta["steps"]],
            layer_attrs={
                k: {
                    "region": by_name.get(k, {}).get("region"),
                    "first_driven_step": by_name.get(k, {}).get("first_driven_step"),
                }
                for k in out
            },
            labels=info.get("labels"),
            attrs={"model": name, "pool": pool or "none", "step_ms": step_ms},
        )

    # ---- transport ---------------------------------------------------------------------------

    def _mask(self, mask: Any) -> Optional[bytes]:
        if mask is None:
            return None
        return sources(as_list(mask))[0][1]()

    def _run(self, srcs: List[Source], send: Any, whole: bool) -> List[Any]:
        """``send(offset, batch)`` over batches of ``srcs`` from ``workers`` threads; results
        in batch order. ``whole`` sends everything as one request (a sequence is one stimulus)."""
        if whole:
            return [send(0, srcs)]
        size = self.batch_size
        starts = list(range(0, len(srcs), size))
        if len(starts) <= 1 or self.workers == 1:
            return [send(i, srcs[i : i + size]) for i in starts]
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            futures = [pool.submit(send, i, srcs[i : i + size]) for i in starts]
            return [f.result() for f in futures]

    def _post_images(
        self,
        path: str,
        batch: List[Source],
        params: Mapping[str, str],
        mask: Optional[bytes],
        accept: Optional[str],
    ) -> httpx.Response:
        """One request for ``batch``; a 413 for too many images splits it and merges the parts
        (only for npz and JSON answers whose parts the caller can join: see ``_join``)."""
        files = [("image", (f"{i}", load(), "application/octet-stream")) for i, (_, load) in enumerate(batch)]
        if mask is not None:
            files.append(("mask", ("mask", mask, "application/octet-stream")))
        headers = {"Accept": accept} if accept else {}
        try:
            return self._request("POST", path, params=params, files=files, headers=headers)
        except ConvRNNError as e:
            limit = self._split_limit(e, len(batch))
            if limit is None:
                raise
        parts = [batch[i : i + limit] for i in range(0, len(batch), limit)]
        return _join([self._post_images(path, p, params, mask, accept) for p in parts], accept)

    def _split_limit(self, e: ConvRNNError, n: int) -> Optional[int]:
        """The batch size to retry with after a 413, or None when splitting cannot help."""
        if e.status != 413 or n <= 1:
            return None
        m = _LIMIT_RE.search(e.message)
        limit = int(m.group(1)) if m and "images in one request" in e.message else n // 2
        limit = max(1, min(limit, n - 1))
        with self._lock:
            self.batch_size = min(self.batch_size, limit)
        return limit

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        for attempt in range(self.max_retries + 1):
            r = self._http.request(method, path, **kw)
            if r.status_code < 400:
                return r
            if r.status_code in (429, 503) and attempt < self.max_retries:
                time.sleep(_retry_after(r, attempt))
                continue
            raise _error(r)
        raise AssertionError("unreachable")  # pragma: no cover


def _retry_after(r: httpx.Response, attempt: int) -> float:
    value = r.headers.get("retry-after")
    if value is not None:
        try:
            return max(0.0, min(float(value), 60.0))
        except ValueError:
            pass
    return min(0.25 * 2**attempt, 10.0)


def _error(r: httpx.Response) -> ConvRNNError:
    try:
        body = r.json()
        return ConvRNNError(r.status_code, str(body.get("code", "")), str(body.get("error", r.text)))
    except ValueError:
        return ConvRNNError(r.status_code, "", r.text[:500])


def _join(responses: List[httpx.Response], accept: Optional[str]) -> httpx.Response:
    """One response holding the rows of ``responses`` in order (npz arrays or JSON results)."""
    first = responses[0]
    if accept == NPZ:
        parts = []
        for r in responses:
            with np.load(io.BytesIO(r.content), allow_pickle=False) as npz:
                parts.append({k: npz[k] for k in npz.files})
        merged = {
            k: parts[0][k] if k in ("steps", "time_ms") else np.concatenate([p[k] for p in parts])
            for k in parts[0]
        }
        buf = io.BytesIO()
        np.savez(buf, **merged)  # type: ignore[arg-type]
        content = buf.getvalue()
    else:
        body = first.json()
        body["results"] = [x for r in responses for x in r.json()["results"]]
        content = json.dumps(body).encode()
    return httpx.Response(first.status_code, headers=first.headers, content=content, request=first.request)
