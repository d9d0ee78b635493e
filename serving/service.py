"""The BentoML prediction service of the champion mammogram classifier.

Start: ``bentoml serve serving.service:MammoClassifier --port 3000`` (or ``mammo serve``).

Two BentoML services, composed the BentoML way:

- :class:`MammoModel` owns the model. At start it resolves the version to serve
  (``MAMMO_SERVE_VERSION`` or the ``champion`` alias of ``MAMMO_REGISTERED_MODEL_NAME`` in
  ``MAMMO_MLFLOW_TRACKING_URI``), imports it into the BentoML model store under
  ``MAMMO_BENTOML_HOME`` (tag ``<name>:v<version>``), loads it and logs which version it
  serves. Its ``score`` API is ``batchable``: BentoML's adaptive batcher merges the model
  inputs of concurrent calls into one ``predict_on_batch`` of at most
  ``serve_max_batch_size`` images. Each row of the answer carries the probability *and* the
  version and threshold of the model that computed it, so an answer can never name another
  version than the one that scored it (even after BentoML restarts a crashed model worker
  that then resolves a newer champion).
- :class:`MammoClassifier` is the HTTP-facing service (``bentoml.depends(MammoModel)``). Every
  upload is decoded and preprocessed on its own, in the request that sent it, before the
  model is called: a bad upload fails only its own request with a 4xx and never reaches a
  batch; all rows of a batch have the same S x S x 1 shape.

Under ``bentoml serve`` each service runs in its own worker process (the model worker listens
on a Unix socket and gets NumPy arrays pickled, never from outside); ``/readyz`` of the API
answers 200 only when the model worker is ready and has said which version it serves.

Endpoints:

- ``POST /predict``: multipart field ``image`` (PNG, JPEG, TIFF, PGM or ``.npy``) ->
  ``{probability, label, threshold, model_name, model_version}``;
- ``POST /predict_batch``: multipart fields ``images`` (up to ``serve_max_batch_size``) -> a
  list of the same objects, in order;
- ``GET /model``: name, version, aliases, test metrics, threshold, trained-at;
- ``/livez``, ``/readyz`` (503 until the model is loaded), ``/metrics``: BentoML's own,
  including ``bentoml_service_adaptive_batch_size`` of the model worker.

A non-finite score is answered as a 500 for the request it belongs to, never as a label.

Batching, measured (``benchmarks/serving.py --baseline <rev>``, same machine and run, the
numbers are in ``docs/scaling-out.md``): BentoML's batcher replaced a hand-written one
(``AdaptiveBatcher``, git history). BentoML's ``max_latency_ms`` is a load-shedding bound
(a request that cannot be answered within it gets 503), not a batching window: it is set to
the request timeout, so no request is shed that could still be answered in time.

Guarding (:class:`RequestGuard`, an ASGI middleware): the API key (``MAMMO_API_KEY``, sent as
``Authorization: Bearer KEY`` or ``X-API-Key: KEY``) is required on everything but the probes
and ``/metrics``; request bodies over the size limit get 413 before anything is parsed;
``GET /model`` is answered there (BentoML API routes are POST-only); 4xx bodies are always
``{"error": message}``. BentoML's multipart parsing is hardened (no URL fetching for file
fields, malformed bodies are 400s: :mod:`mammo_pipeline.common.compat`). No pixel data is logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from http import HTTPStatus
from pathlib import Path
from typing import Any

import anyio
import bentoml
import numpy as np
from bentoml.exceptions import BadInput, BentoMLException, ServiceUnavailable

from mammo_pipeline.common.auth import key_matches, presented_key
from mammo_pipeline.common.compat import harden_bentoml_multipart
from mammo_pipeline.config import Settings, get_settings
from mammo_pipeline.serving.image_io import InputError, decode_path, to_model_input

logger = logging.getLogger("bentoml.mammo")  # under BentoML's configured logger

OPEN_PATHS = frozenset({"/livez", "/healthz", "/readyz", "/metrics"})
UPLOAD_PATHS = frozenset({"/predict", "/predict_batch"})
MULTIPART_OVERHEAD = 64 * 1024
#: Seconds a request may take end to end (BentoML's traffic timeout of both services).
REQUEST_TIMEOUT_S = 60
#: One row of the model worker's answer: the score and what produced it.
SCORE_DTYPE = np.dtype(
    [("probability", np.float64), ("threshold", np.float64), ("model_version", "U32")]
)
#: Seconds the API waits for the model worker's metadata before answering "not ready".
INFO_TIMEOUT_S = 5.0


harden_bentoml_multipart()  # mammo_pipeline.common.compat: upstream bug, see there


def _service_settings() -> Settings:
    return get_settings()


# --------------------------------------------------------------------------------------
class RequestGuard:
    """ASGI middleware: API key, body-size limit and ``GET /model``, before BentoML parses."""

    def __init__(self, app: Any) -> None:
        self.app = app
        s = _service_settings()
        self.api_key = s.api_key or None
        self.max_body = s.max_upload_bytes * s.serve_max_batch_size + MULTIPART_OVERHEAD
        self.max_single = s.max_upload_bytes + MULTIPART_OVERHEAD

    @staticmethod
    async def _send_json(send: Any, status: int, body: Any, headers: dict[str, str] | None = None):
        payload = json.dumps(body).encode()
        raw = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
        ]
        raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": payload})

    def _authorised(self, headers: dict[bytes, bytes]) -> bool:
        if self.api_key is None:
            return True
        return key_matches(presented_key(headers), self.api_key)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "").rstrip("/") or "/"
        if path in OPEN_PATHS:
            return await self.app(scope, receive, send)
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        if not self._authorised(headers):
            return await self._send_json(
                send, 401, {"error": "missing or invalid API key"}, {"www-authenticate": "Bearer"}
            )
        if path == "/model" and scope.get("method") == "GET":
            described = await _current.describe() if _current is not None else None
            if described is None:
                return await self._send_json(send, 503, {"error": "model not loaded yet"})
            return await self._send_json(send, 200, described)
        if path not in UPLOAD_PATHS:
            return await self.app(scope, receive, send)
        limit = self.max_single if path == "/predict" else self.max_body
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                return await self._send_json(send, 400, {"error": "bad Content-Length"})
            if declared > limit:
                return await self._send_json(
                    send, 413, {"error": f"request body of {declared} bytes is over the limit"}
                )
            return await self.app(scope, receive, _unwrap_errors(send))
        # No Content-Length (chunked): read up to the limit, then replay to the app.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > limit:
                return await self._send_json(send, 413, {"error": "request body over the limit"})
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay_receive() -> Any:
            return replay.pop() if replay else await receive()

        return await self.app(scope, replay_receive, _unwrap_errors(send))


def _unwrap_errors(send: Any) -> Any:
    """BentoML 1.4 answers a 4xx body as ``[{"error": ...}]``; clients get ``{"error": ...}``."""
    held: dict[str, Any] = {}
    chunks: list[bytes] = []

    async def wrapped(message: Any) -> None:
        if message["type"] == "http.response.start" and message.get("status", 200) >= 400:
            held["start"] = message
            return
        if "start" not in held or message["type"] != "http.response.body":
            return await send(message)
        chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = b"".join(chunks)
        try:
            parsed = json.loads(body)
            if isinstance(parsed, list) and len(parsed) == 1 and isinstance(parsed[0], dict):
                body = json.dumps(parsed[0]).encode()
        except ValueError:
            pass
        start = dict(held.pop("start"))
        start["headers"] = [
            (k, str(len(body)).encode() if k.lower() == b"content-length" else v)
            for k, v in start.get("headers", [])
        ]
        await send(start)
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return wrapped


def _http_error(exc: InputError) -> BentoMLException:
    if exc.status == 400:
        return BadInput(str(exc))
    return BentoMLException(str(exc), error_code=HTTPStatus(exc.status))


def _stop_arbiter() -> None:
    """Make ``bentoml serve`` exit when the model cannot load (its process manager, circus,
    would otherwise restart the worker forever and the server would never become ready)."""
    import signal

    ppid = os.getppid()
    try:
        parent = Path(f"/proc/{ppid}/cmdline").read_bytes()
    except OSError:
        return
    if parent.startswith(b"circusd"):
        os.kill(ppid, signal.SIGTERM)


# --------------------------------------------------------------------------------------
@bentoml.service(
    name="mammo_model",
    workers=1,
    traffic={"timeout": REQUEST_TIMEOUT_S},
    metrics={"enabled": True},
)
class MammoModel:
    """The model of one registry version; scores batches of model inputs."""

    def __init__(self) -> None:
        from mammo_pipeline.serving.model_loader import load_served_model

        self.settings = _service_settings()
        self._ready = False
        started = time.perf_counter()
        try:
            self.model, self.model_info = load_served_model(self.settings)
        except Exception:
            logger.exception("cannot load the model to serve; the server exits")
            _stop_arbiter()
            raise
        self.image_size = self.model_info.image_size
        self.threshold = float(self.model_info.decision_threshold)
        s = self.image_size
        for n in (1, 2, self.settings.serve_max_batch_size):  # trace once, batch dim relaxed
            self._probabilities(np.zeros((n, s, s, 1), np.float32))
        self._ready = True
        logger.info(
            "serving %s version %s (bento model %s, threshold %.4f, input %dpx) ready in %.1fs",
            self.model_info.name,
            self.model_info.version,
            self.model_info.bento_tag,
            self.threshold,
            self.image_size,
            time.perf_counter() - started,
        )

    def __is_ready__(self) -> bool:
        return self._ready

    def _probabilities(self, batch: np.ndarray) -> np.ndarray:
        out = self.model.predict_on_batch(batch)
        return np.asarray(out, dtype=np.float64).reshape(-1)

    @bentoml.api
    def describe(self) -> dict[str, Any]:
        """Metadata of the loaded version (:class:`ModelInfo` as a dict)."""
        return self.model_info.to_dict()

    @bentoml.api(
        batchable=True,
        batch_dim=0,
        max_batch_size=_service_settings().serve_max_batch_size,
        max_latency_ms=REQUEST_TIMEOUT_S * 1000,
    )
    def score(self, inputs: np.ndarray) -> np.ndarray:
        """N x S x S x 1 float32 model inputs -> N rows of :data:`SCORE_DTYPE`, in order."""
        s = self.image_size
        if inputs.ndim != 4 or inputs.shape[1:] != (s, s, 1):
            raise BadInput(f"model inputs must be N x {s} x {s} x 1, got {inputs.shape}")
        probs = self._probabilities(inputs.astype(np.float32, copy=False))
        rows = np.empty(len(probs), dtype=SCORE_DTYPE)
        rows["probability"] = probs
        rows["threshold"] = self.threshold
        rows["model_version"] = self.model_info.version
        return rows


# --------------------------------------------------------------------------------------
@bentoml.service(
    name="mammo_classifier",
    workers=1,
    traffic={"timeout": REQUEST_TIMEOUT_S, "max_concurrency": 256},
    endpoints={"livez": "/livez", "readyz": "/readyz"},
    metrics={"enabled": True},
)
class MammoClassifier:
    """HTTP API: decodes and checks each upload, then asks :class:`MammoModel` for scores."""

    model = bentoml.depends(MammoModel)

    def __init__(self) -> None:
        global _current
        self.settings = _service_settings()
        self._info: dict[str, Any] | None = None
        self._info_lock = asyncio.Lock()
        self._limiter = anyio.CapacityLimiter(max(2, os.cpu_count() or 2))
        to_model_input(np.zeros((8, 8, 1), np.uint8), 8)  # warm the TF ops
        _current = self

    async def _model_info(self) -> dict[str, Any] | None:
        """The model worker's :meth:`MammoModel.describe`, fetched once; ``None`` while the
        model worker is not ready yet."""
        if self._info is not None:
            return self._info
        async with self._info_lock:  # one request asks, the others wait for its answer
            if self._info is not None:
                return self._info
            is_ready = getattr(self.model, "is_ready", None)  # a local instance has none
            try:
                if is_ready is not None and not await is_ready(int(INFO_TIMEOUT_S)):
                    return None
                info = await asyncio.wait_for(self.model.to_async.describe(), INFO_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - not ready yet is not an error
                logger.debug("model worker not ready: %s", type(exc).__name__)
                return None
            self._info = dict(info)
            logger.info("API answers for %s version %s", self._info["name"], self._info["version"])
            return self._info

    async def __is_ready__(self) -> bool:
        return await self._model_info() is not None

    async def describe(self) -> dict[str, Any] | None:
        """Metadata of the served version (``GET /model``); ``None`` until it is known."""
        info = await self._model_info()
        if info is None:
            return None
        out = dict(info)
        out["threshold"] = out.pop("decision_threshold")
        out["max_batch_size"] = self.settings.serve_max_batch_size
        return out

    def _answer(self, row: np.void) -> dict[str, Any]:
        probability = float(row["probability"])
        threshold = float(row["threshold"])
        if not (np.isfinite(probability) and 0.0 <= probability <= 1.0):
            logger.error("the model returned a non-finite or out-of-range score")
            raise BentoMLException(
                "the model returned no valid score for this image",
                error_code=HTTPStatus.INTERNAL_SERVER_ERROR,
            )
        return {
            "probability": probability,
            "label": "positive" if probability >= threshold else "negative",
            "threshold": threshold,
            "model_name": self.settings.registered_model_name,
            "model_version": str(row["model_version"]),
        }

    def _prepare(self, path: Path, image_size: int) -> np.ndarray:
        s = self.settings
        try:
            gray = decode_path(path, max_bytes=s.max_upload_bytes, max_pixels=s.max_image_pixels)
            return to_model_input(gray, image_size)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - decoding failures are the upload's fault
            raise InputError(f"cannot use this image: {type(exc).__name__}") from None

    async def _prepare_many(self, paths: list[Path]) -> np.ndarray:
        """Decode + preprocess in a few worker threads (bounded: memory of large images, TF
        contention) -> N x S x S x 1 float32; the first bad upload fails the request."""
        info = await self._model_info()
        if info is None:
            raise ServiceUnavailable("model not loaded yet")
        size = int(info["image_size"])
        out = []
        for i, path in enumerate(paths):
            try:
                out.append(
                    await anyio.to_thread.run_sync(self._prepare, path, size, limiter=self._limiter)
                )
            except InputError as exc:
                if len(paths) > 1:
                    exc = InputError(f"image {i}: {exc}", exc.status)
                raise _http_error(exc) from None
        return np.stack(out)

    async def _score(self, inputs: np.ndarray) -> list[dict[str, Any]]:
        rows = await self.model.to_async.score(inputs)
        if not (
            isinstance(rows, np.ndarray) and rows.dtype == SCORE_DTYPE and len(rows) == len(inputs)
        ):
            logger.error("the model worker's answer does not match %d inputs", len(inputs))
            raise BentoMLException(
                "the model answered an unexpected number of scores",
                error_code=HTTPStatus.INTERNAL_SERVER_ERROR,
            )
        return [self._answer(row) for row in rows]

    @bentoml.api(route="/predict")
    async def predict(self, image: Path) -> dict[str, Any]:
        """One image -> probability and label from the served version."""
        (answer,) = await self._score(await self._prepare_many([image]))
        return answer

    @bentoml.api(route="/predict_batch")
    async def predict_batch(self, images: list[Path]) -> list[dict[str, Any]]:
        """Several images in one request -> one answer each, in order."""
        if not images:
            raise BadInput("send at least one file in the 'images' field")
        if len(images) > self.settings.serve_max_batch_size:
            raise BadInput(
                f"{len(images)} images is over the batch limit of "
                f"{self.settings.serve_max_batch_size}"
            )
        return await self._score(await self._prepare_many(images))


_current: MammoClassifier | None = None

MammoClassifier.add_asgi_middleware(RequestGuard)
