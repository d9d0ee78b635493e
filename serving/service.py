"""The BentoML prediction service of the champion mammogram classifier (one service class).

Start: ``bentoml serve serving.service:MammoClassifier --port 3000`` (or ``mammo serve``).
At start the service resolves the version to serve (``MAMMO_SERVE_VERSION`` or the
``champion`` alias of ``MAMMO_REGISTERED_MODEL_NAME`` in ``MAMMO_MLFLOW_TRACKING_URI``),
imports it into the BentoML model store under ``MAMMO_BENTOML_HOME`` (tag
``<name>:v<version>``), loads it and logs which version it serves.

Longer than 400 lines because BentoML loads one module: the service class, its ASGI request
guard and the batcher whose measured reason to exist is documented below must live here; the
decoding, limits, form checks and analysis it calls are library modules
(``mammo_pipeline/serving/``, ``mammo_pipeline/analysis/``).

Endpoints:

- ``POST /predict``: multipart field ``image`` (PNG, JPEG, TIFF, PGM, ``.npy`` or DICOM), one
  TILE -> ``{probability, label, threshold, model_name, model_version}``; an image whose
  longer side is over twice the tile (2 x 299 px at 0.1 mm/px, scaled by a DICOM's spacing)
  is a whole mammogram and answers 422 pointing to ``/analyze``;
- ``POST /analyze``: multipart field ``image`` (a whole mammogram, same formats) and optional
  text fields ``pixel_spacing_mm`` (else the DICOM's, else 0.1 mm/px, the training scale),
  ``stride_fraction`` (of the 299-px tile, default 0.5), ``top_k`` (regions, default 5),
  ``heatmap`` (``true``: the picture as base64 PNG in ``heatmap_png_base64``) and
  ``synthetic`` (the client says the image is SYNTHETIC; a PNG carrying the project's
  ``mammo:provenance`` marker counts as said; printed on the picture) -> the score
  (max tile probability, rule named in ``aggregation``), label, top regions as boxes in the
  ORIGINAL pixels, tiles scored, the scale and its source, model name/version
  (:func:`mammo_pipeline.analysis.analyze`);
- ``POST /predict_batch``: multipart fields ``images`` (up to ``serve_max_batch_size``) -> a
  list of the same objects, in order;
- ``GET /model``: name, version, aliases, test metrics, threshold, trained-at;
- ``/livez``, ``/readyz`` (503 until the model is loaded AND has given a finite score on a
  fixed self-check image: a NaN model is never ready), ``/metrics``: BentoML's own plus
  ``mammo_nonfinite_scores_total`` (non-finite model outputs, by endpoint).

Batching: every request is decoded and preprocessed on its own (a bad upload fails only its
own request with a 4xx), then the model-input tensors of all concurrent requests are
coalesced by :class:`AdaptiveBatcher` into one ``predict_on_batch`` call of at most
``serve_max_batch_size`` images, waiting at most ``serve_max_latency_ms`` for requests that
are still being decoded (never when a request is alone). BentoML's own way (a batchable
model service composed with ``bentoml.depends``) was built and measured against it; it was
slower and failed requests under concurrency: the numbers are in :class:`AdaptiveBatcher`.
A non-finite score fails its own request (500), never becomes a label, and is counted.

Memory is bounded by design (docs/serving-bounds.md): one memory budget in bytes
(``MAMMO_SERVE_MEMORY_BUDGET``, :mod:`mammo_pipeline.serving.limits`) is drawn on by every
body the guard buffers (twice its bytes, reserved from Content-Length before reading, chunk
by chunk otherwise) and every image decoded (its pixels, counted from the header before
decoding, at the bytes per pixel measured for tiles and films). The guard streams each body
through the form checks (a file part over ``MAMMO_MAX_UPLOAD_BYTES`` is a 413 as soon as it
passes it) and buffers at most min(files x that limit, ``MAMMO_SERVE_INFLIGHT_BYTES``);
``MAMMO_SERVE_MAX_ANALYSES`` films are analysed at once, and one more is refused before its
body is read. A request with no room waits at most ``MAMMO_SERVE_BUSY_WAIT_S``, then gets
503 with ``Retry-After`` and our message, answered by us (never BentoML's "unexpected error"
or a logged traceback); one that can never fit gets 413. ``/analyze`` checks the film's
resampled size and window count from its header before decoding and stops scoring at
``MAMMO_ANALYSIS_TIME_BUDGET_S``. Freed buffers go back to the system
(:mod:`mammo_pipeline.serving.memory`).

Guarding (:class:`RequestGuard`, an ASGI middleware): the API key (``MAMMO_API_KEY``, sent as
``Authorization: Bearer KEY`` or ``X-API-Key: KEY``) is required on everything but the probes
and ``/metrics``; request bodies over the size limit get 413 before anything is parsed;
``GET /model`` is answered there (BentoML API routes are POST-only); 4xx bodies are always
``{"error": message}``. Upload bodies are checked and their client file names replaced
while they stream, before BentoML parses them (:mod:`mammo_pipeline.serving.upload_form`:
wrong field, too many parts, long or path-like names); BentoML's multipart parsing is
hardened too (no URL fetching for file fields, malformed bodies are 400s:
:mod:`mammo_pipeline.common.compat`). No pixel data and no DICOM patient identifier is
logged or answered.

Authentication fails closed: with ``MAMMO_AUTH=key`` (the default) and no key, ``bentoml
serve`` refuses to start (a deployment hook, before any worker: one line naming
``MAMMO_API_KEY=...`` and ``MAMMO_AUTH=none``, exit 1) and the guard would answer no request;
only an explicit ``MAMMO_AUTH=none`` serves without a key. The start-up log names the setting
that decided (:func:`mammo_pipeline.common.auth.auth_description`).
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
from bentoml.exceptions import BentoMLException

from mammo_pipeline.common.auth import (
    auth_description,
    auth_refusal,
    key_matches,
    presented_key,
)
from mammo_pipeline.common.compat import harden_bentoml_multipart
from mammo_pipeline.config import Settings, describe_validation_error, get_settings
from mammo_pipeline.data.schema import SOURCE_SIZE, TILE_MM_PER_PX
from mammo_pipeline.monitoring.feedback import FeedbackError
from mammo_pipeline.serving import memory
from mammo_pipeline.serving.image_io import (
    InputError,
    decode_upload,
    is_whole_film,
    read_upload,
    tile_side_limit,
    to_model_input,
)
from mammo_pipeline.serving.limits import (
    BODY_COPIES,
    FILM_BYTES_PER_PIXEL,
    MULTIPART_OVERHEAD,
    Admission,
    BusyError,
    PixelBudget,
    body_limit,
    shared_budget,
)
from mammo_pipeline.serving.prediction_log import PredictionMonitor
from mammo_pipeline.serving.upload_form import FormSpec, FormStream
from mammo_pipeline.serving.upload_header import UploadHeader, peek_upload

logger = logging.getLogger("bentoml.mammo")  # under BentoML's configured logger

OPEN_PATHS = frozenset({"/livez", "/healthz", "/readyz", "/metrics"})
#: ``POST /feedback`` takes a few short JSON fields.
FEEDBACK_MAX_BYTES = 16 * 1024
__all__ = ["MULTIPART_OVERHEAD", "MammoClassifier"]
#: A request that held at least this many bytes or pixels returns free memory when it ends.
TRIM_AFTER = 4 * 1024 * 1024
ANALYZE_FIELDS = frozenset({"pixel_spacing_mm", "stride_fraction", "top_k", "heatmap", "synthetic"})
#: Relative difference above which a form spacing contradicts the DICOM's.
SPACING_CONFLICT = 0.02

NONFINITE = bentoml.metrics.Counter(
    name="mammo_nonfinite_scores",
    documentation="Model outputs that were NaN, infinite or outside 0..1 (never a label)",
    labelnames=["endpoint"],
)


harden_bentoml_multipart()  # mammo_pipeline.common.compat: upstream bug, see there


# --------------------------------------------------------------------------------------
class AdaptiveBatcher:
    """Coalesce single-image predictions of concurrent requests into bounded batches.

    Kept hand-written because BentoML's batching was measured worse here. The alternative
    (commit 1c9e5a0: a ``MammoModel`` service with ``@bentoml.api(batchable=True)`` composed
    into this one with ``bentoml.depends``, uploads decoded in the calling API) against this
    class, ``python benchmarks/serving.py --compare 1c9e5a0 --rounds 2`` (same run, same
    machine: 2 busy CPU cores, SYNTHETIC 64 px convnet, batches of at most 32; requests/s,
    p50/p99 ms, failed requests in the two 6 s rounds), two runs:

    ===========  ==========================  ==========================
    concurrency  hand-written (this class)   BentoML batchable + depends
    ===========  ==========================  ==========================
    1            37.2, 27/48, 0              22.0, 72/99, 0
    8            50.4, 156/294, 0            30.0, 245/454, 19 failed
    32           48.7, 614/1494, 0           32.6, 770/1585, 70 failed
    1            26.0, 39/75, 0              12.4, 94/149, 0
    8            35.8, 221/376, 0            29.1, 250/876, 9 failed
    32           37.2, 781/2360, 0           28.3, 783/2244, 71 failed
    ===========  ==========================  ==========================

    Why, measured with the model worker's own metrics: BentoML's dispatcher corks a lone
    request (its wait estimate feeds on its own past waits: 31 ms mean per call at c=1 for a
    ~10 ms ``predict_on_batch``), it batched poorly at c=8 (283 calls in 168 batches), and the
    hop to the model worker (aiohttp over a Unix socket, pickled arrays) adds to every
    request. The failures break a guarantee: BentoML 1.4.39's internal client
    (its ``client/proxy2.py``, ``SessionManager``) replaces its aiohttp session
    every 100 calls and closes the old one while calls on it are still in flight, which the
    caller gets as ``ServerDisconnectedError`` -> 500 (upstream: bentoml/BentoML#4971, open
    PR #5698). Measure again after a BentoML upgrade; switch when the composed service is at
    least as fast at concurrency 8 and 32 and fails nothing.

    Tried on this class and not kept (VGG16 random weights, 64 px, c=32, 2 quiet CPU cores,
    ``benchmarks/serving.py``): closed-loop clients settle into batches of 30 then 2 (the 30
    answered requests are not back when the 2 are taken); capping each batch at half the
    requests in flight made them 16 and 16 but served 63-68 requests/s against 65-68, and two
    single-threaded model calls in parallel 70 against 68 with erratic batches. The model's
    rate there is bounded by the CPU the requests' own handling takes (README, Performance).
    """

    def __init__(self, predict: Any, max_batch_size: int, max_latency_ms: float) -> None:
        self._predict = predict
        self.max_batch_size = max_batch_size
        self.max_latency_s = max_latency_ms / 1000.0
        self._queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future[float]]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self.preparing = 0  # requests being decoded that will submit soon

    def _start(self) -> asyncio.Queue[tuple[np.ndarray, asyncio.Future[float]]]:
        if self._queue is None:
            self._queue = asyncio.Queue()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run())
        return self._queue

    async def submit(self, items: list[np.ndarray]) -> list[float]:
        """Model probabilities for model-input tensors (S x S x 1 float32 each)."""
        queue = self._start()
        loop = asyncio.get_running_loop()
        futures = []
        for x in items:
            fut: asyncio.Future[float] = loop.create_future()
            queue.put_nowait((x, fut))
            futures.append(fut)
        return list(await asyncio.gather(*futures))

    async def _run(self) -> None:
        assert self._queue is not None
        queue = self._queue
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            deadline = loop.time() + self.max_latency_s
            while len(batch) < self.max_batch_size:
                try:
                    batch.append(queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                remaining = deadline - loop.time()
                if self.preparing <= 0 or remaining <= 0:
                    break
                # short polls rather than wait_for(queue.get()), which can lose an item when
                # it arrives just as the timeout cancels the get (Python 3.11)
                await asyncio.sleep(min(remaining, 0.0005))
            live = [(x, f) for x, f in batch if not f.done()]
            if not live:
                continue
            try:
                probs = await anyio.to_thread.run_sync(self._predict, [x for x, _ in live])
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                logger.exception("model prediction failed for a batch of %d", len(live))
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), p in zip(live, probs, strict=True):
                if not fut.done():
                    fut.set_result(float(p))


# --------------------------------------------------------------------------------------
class RequestGuard:
    """ASGI middleware: API key, body limits and the byte budget while streaming, upload form
    checks, film admission and ``GET /model``, before BentoML parses anything."""

    def __init__(self, app: Any) -> None:
        self.app = app
        s = get_settings()
        self.api_key = s.api_key or None
        self.open = s.auth == "none"  # only an explicit MAMMO_AUTH=none serves without a key
        self.retry_after = s.serve_retry_after_s
        self.max_file = s.max_upload_bytes
        self.memory = _memory_budget(s)  # shared with the service's decoding
        self.analyses = Admission(s.serve_max_analyses, "film analyses", self.retry_after)
        budget = min(s.serve_inflight_bytes, s.serve_memory_budget // BODY_COPIES)
        analyze = FormSpec("image", text_fields=ANALYZE_FIELDS)
        batch = FormSpec("images", many=True, max_parts=s.serve_max_batch_size)
        files = {"/predict": 1, "/predict_batch": batch.max_parts, "/analyze": 1}
        self.forms: dict[str, tuple[FormSpec, int, int]] = {
            path: (spec, body_limit(files[path], s.max_upload_bytes, budget), files[path])
            for path, spec in (("/predict", FormSpec("image")), ("/predict_batch", batch),
                               ("/analyze", analyze))
        }  # fmt: skip

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

    async def _refuse(self, send: Any, exc: InputError) -> None:
        await self._send_json(send, exc.status, {"error": str(exc)}, _error_headers(exc))

    def _authorised(self, headers: dict[bytes, bytes]) -> bool:
        if self.open:
            return True
        return self.api_key is not None and key_matches(presented_key(headers), self.api_key)

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
            service = _current
            if service is None or not service.__is_ready__():
                why = service.not_ready_reason if service is not None else "model not loaded yet"
                return await self._send_json(send, 503, {"error": why})
            return await self._send_json(send, 200, service.describe())
        if path == "/feedback" and int(headers.get(b"content-length") or 0) > FEEDBACK_MAX_BYTES:
            exc = InputError(f"a feedback body is at most {FEEDBACK_MAX_BYTES} bytes", 413)
            return await self._refuse(send, exc)
        if path not in self.forms or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        service = _current
        if service is None or not service.__is_ready__():
            # answered here: BentoML replaces the message of any 5xx it answers itself
            why = service.not_ready_reason if service is not None else "model not loaded yet"
            exc = BusyError(f"model not ready: {why}", self.retry_after)
            return await self._refuse(send, exc)
        admission = self.analyses if path == "/analyze" else None
        try:
            if admission is not None:
                admission.enter()  # before a byte of the body is read
        except BusyError as exc:
            return await self._refuse(send, exc)
        held = [0]
        try:
            return await self._guarded(scope, receive, send, path, headers, held)
        finally:
            if admission is not None:
                admission.leave()
            if held[0]:
                self.memory.release(held[0])
            if held[0] >= TRIM_AFTER and self.memory.in_use == 0:
                memory.trim()

    async def _guarded(
        self, scope: Any, receive: Any, send: Any, path: str, headers: Any, held: list[int]
    ) -> None:
        spec, limit, files = self.forms[path]
        too_large = (
            f"over the limit of {limit} bytes for {path} ({files} file(s) x "
            "MAMMO_MAX_UPLOAD_BYTES + form overhead, at most MAMMO_SERVE_INFLIGHT_BYTES)"
        )
        length = headers.get(b"content-length")
        declared = None
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                return await self._send_json(send, 400, {"error": "bad Content-Length"})
            if declared > limit:
                msg = f"request body of {declared} bytes is {too_large}"
                return await self._send_json(send, 413, {"error": msg})
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.memory.wait_s
        try:
            stream = FormStream(content_type, spec, self.max_file)
            if declared:  # the whole body's share before reading any of it
                await self.memory.acquire(BODY_COPIES * declared)
                held[0] = BODY_COPIES * declared
            chunks: list[bytes] = []
            received = 0
            while True:  # stream: every check fires as soon as its bytes arrive
                message = await receive()
                if message["type"] != "http.request":  # the client went away mid-body
                    # Answered although nobody reads it: BentoML's TimeoutMiddleware ends a
                    # request only once something is sent (else after its 60-s timeout),
                    # and a SIGTERM waits for open requests: the backend could not stop.
                    msg = "the client closed the connection before the body ended"
                    return await self._send_json(send, 400, {"error": msg})
                chunk, more = message.get("body", b""), message.get("more_body", False)
                received += len(chunk)
                if received > limit:
                    msg = f"request body is {too_large}"
                    return await self._send_json(send, 413, {"error": msg})
                if declared is None and chunk:  # chunked: reserve as it arrives
                    cost = BODY_COPIES * len(chunk)
                    await self.memory.acquire(cost, max(0.0, deadline - loop.time()))
                    held[0] += cost
                chunks += stream.feed(chunk)
                del chunk, message
                if not more:
                    break
            stream.finish()
        except InputError as exc:
            return await self._refuse(send, exc)
        scope = dict(scope)
        scope["headers"] = [
            (k, v)
            for k, v in scope.get("headers", [])
            if k.lower() not in (b"content-length", b"transfer-encoding")
        ] + [(b"content-length", str(sum(len(c) for c in chunks)).encode())]
        chunks.reverse()  # replayed in order, each dropped once handed on
        replayed = [False]

        async def replay_receive() -> Any:
            if chunks or not replayed[0]:
                replayed[0] = True
                body = chunks.pop() if chunks else b""
                return {"type": "http.request", "body": body, "more_body": bool(chunks)}
            return await receive()

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


_current: MammoClassifier | None = None


def _memory_budget(s: Settings) -> Any:
    """The worker's one memory budget, shared by the request guard and the service."""
    return shared_budget(s.serve_memory_budget, s.serve_busy_wait_s, s.serve_retry_after_s)


def _error_headers(exc: InputError) -> dict[str, str]:
    return {"retry-after": str(exc.retry_after)} if isinstance(exc, BusyError) else {}


def _error_response(exc: InputError) -> Any:
    """Our answer to a refused request, returned (not raised) by an API: BentoML would log
    a traceback at ERROR and replace the message of a 5xx ("An unexpected error ...")."""
    from starlette.responses import JSONResponse

    return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=_error_headers(exc))


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


def _service_settings() -> Settings:
    return get_settings()


# --------------------------------------------------------------------------------------
@bentoml.service(
    name="mammo_classifier",
    workers=1,
    traffic={"timeout": 60, "max_concurrency": 256},
    endpoints={"livez": "/livez", "readyz": "/readyz"},
    metrics={"enabled": True},
)
class MammoClassifier:
    """Serves one registry version of the classifier (reported in every answer)."""

    @bentoml.on_deployment
    def refuse_without_auth() -> None:
        """Once, in the ``bentoml serve`` process before any worker starts: with
        authentication on and no key (or invalid settings), nothing starts; one line, exit 1."""
        from pydantic import ValidationError

        try:
            problem = auth_refusal(_service_settings())
        except ValidationError as exc:
            problem = describe_validation_error(exc)
        if problem:
            raise SystemExit(f"error: {problem}")

    def __init__(self) -> None:
        from mammo_pipeline.serving.model_loader import load_served_model

        global _current
        self.settings = _service_settings()
        self._ready = False
        self.not_ready_reason = "model not loaded yet"
        started = time.perf_counter()
        self._log_auth()
        try:
            self.model, self.info = load_served_model(self.settings)
        except Exception:
            logger.exception("cannot load the model to serve; the server exits")
            _stop_arbiter()
            raise
        self.image_size = self.info.image_size
        self.threshold = float(self.info.decision_threshold)
        # request ids, the prediction log and its metrics (docs/monitoring.md); never blocks
        self.monitor = PredictionMonitor(self.settings, self.info.name, str(self.info.version))
        self.weights = self._weights_note()
        self._limiter = anyio.CapacityLimiter(max(2, os.cpu_count() or 2))
        # the guard admits at most serve_max_analyses films (503 beyond), so this never queues
        self._analysis_limiter = anyio.CapacityLimiter(self.settings.serve_max_analyses)
        s = self.settings
        self.pixel_budget = PixelBudget(_memory_budget(s), per_request=s.max_image_pixels)
        memory.configure()  # large buffers go back to the system when freed (serving/memory.py)
        self.batcher = AdaptiveBatcher(
            self._infer,
            self.settings.serve_max_batch_size,
            self.settings.serve_max_latency_ms,
        )
        for n in (1, 2, self.settings.serve_max_batch_size):  # trace once, batch dim relaxed
            self._predict_array(np.zeros((n, self.image_size, self.image_size, 1), np.float32))
        to_model_input(np.zeros((8, 8, 1), np.uint8), self.image_size)  # warm the TF ops
        _current = self
        problem = self._self_check()
        if problem:
            self.not_ready_reason = problem
            logger.error("self-check failed, /readyz stays 503: %s", problem)
            return
        self._ready = True
        self.not_ready_reason = ""
        logger.info(
            "serving %s version %s (bento model %s, threshold %.4f, input %dpx, %s) ready in %.1fs",
            self.info.name,
            self.info.version,
            self.info.bento_tag,
            self.threshold,
            self.image_size,
            self.weights,
            time.perf_counter() - started,
        )

    def _log_auth(self) -> None:
        level = logging.INFO if self.settings.auth_enabled else logging.WARNING
        logger.log(level, auth_description(self.settings))

    def _weights_note(self) -> str:
        """What the registry says about the weights (``weights_source``, ``synthetic`` tags)."""
        try:
            from mammo_pipeline.common.mlflow_access import mlflow_client

            mv = mlflow_client(self.settings).get_model_version(self.info.name, self.info.version)
            tags = mv.tags or {}
        except Exception:  # noqa: BLE001 - a caption detail, never a reason not to serve
            return "weights: unknown"
        parts = []
        if tags.get("weights_source"):
            parts.append(f"weights: {tags['weights_source']}")
        if str(tags.get("synthetic", "")).lower() == "true":
            parts.append("trained on SYNTHETIC data")
        return ", ".join(parts) or "weights: not recorded"

    def _self_check(self) -> str:
        """'' when the model gives a probability on the fixed smoke image, else the problem."""
        from mammo_pipeline.serving.smoke import smoke_image

        gray = decode_upload(
            smoke_image(), max_bytes=1 << 20, max_pixels=self.settings.max_image_pixels
        ).gray
        p = float(self._predict_array(to_model_input(gray, self.image_size)[np.newaxis])[0])
        if not (np.isfinite(p) and 0.0 <= p <= 1.0):
            NONFINITE.labels(endpoint="self_check").inc()
            return f"model outputs {p} on the self-check image (not a probability)"
        return ""

    def __is_ready__(self) -> bool:
        return self._ready

    def _infer(self, inputs: list[np.ndarray]) -> np.ndarray:
        """Model-input tensors (S x S x 1 float32) -> probabilities, in one model call."""
        return self._predict_array(np.stack(inputs))

    def _predict_array(self, batch: np.ndarray) -> np.ndarray:
        out = self.model.predict_on_batch(batch)
        return np.asarray(out, dtype=np.float64).reshape(-1)

    def describe(self) -> dict[str, Any]:
        """Metadata of the served version (``GET /model``)."""
        info = self.info.to_dict()
        info["threshold"] = info.pop("decision_threshold")
        info["max_batch_size"] = self.settings.serve_max_batch_size
        info["weights"] = self.weights
        return info

    def _answer(self, probability: float, endpoint: str = "predict") -> dict[str, Any]:
        if not (np.isfinite(probability) and 0.0 <= probability <= 1.0):
            # never a label from a score that is not one; only this image's request fails
            NONFINITE.labels(endpoint=endpoint).inc()
            logger.error("the model returned a non-finite or out-of-range score")
            raise BentoMLException(
                "the model returned no valid score for this image (non-finite output)",
                error_code=HTTPStatus.INTERNAL_SERVER_ERROR,
            )
        return {
            "probability": probability,
            "label": "positive" if probability >= self.threshold else "negative",
            "threshold": self.threshold,
            "model_name": self.info.name,
            "model_version": self.info.version,
        }

    def _check_ready(self) -> None:
        if not self._ready:
            raise BentoMLException(
                f"model not ready: {self.not_ready_reason}",
                error_code=HTTPStatus.SERVICE_UNAVAILABLE,
            )

    def _prepare(self, path: Path, dicom: bool) -> np.ndarray:
        s = self.settings
        try:
            data = read_upload(path, s.max_upload_bytes)
            decoded = decode_upload(
                data, max_bytes=s.max_upload_bytes, max_pixels=s.max_image_pixels, dicom=dicom
            )
            del data
            h, w = decoded.shape
            self._check_tile_sized(w, h, decoded.pixel_spacing_mm)
            assert decoded.gray is not None  # a tile
            return to_model_input(decoded.gray, self.image_size)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - decoding failures are the upload's fault
            raise InputError(f"cannot use this image: {type(exc).__name__}") from None

    @staticmethod
    def _check_tile_sized(w: int, h: int, spacing_mm: float | None) -> None:
        """422 for a whole mammogram sent to /predict (longer side > 2 tiles at its scale)."""
        if is_whole_film(w, h, spacing_mm):
            spacing = spacing_mm or TILE_MM_PER_PX
            raise InputError(
                f"image of {w}x{h} px is larger than a tile (limit "
                f"{tile_side_limit(spacing_mm):.0f} px on the longer side at "
                f"{spacing:g} mm/px): /predict scores one {SOURCE_SIZE}-px tile; send whole "
                "mammograms to POST /analyze",
                status=422,
            )

    def _peek(self, path: Path) -> UploadHeader:
        """The header of an uploaded file (format, size, DICOM spacing); nothing decoded."""
        s = self.settings
        dicom = path.name.endswith(".dcm")
        return peek_upload(path, max_bytes=s.max_upload_bytes, max_pixels=s.max_image_pixels,
                           dicom=dicom)  # fmt: skip

    async def _prepare_many(self, paths: list[Path]) -> tuple[list[np.ndarray], list[UploadHeader]]:
        """Headers first (sizes, tile check: nothing decoded), the pixel budget, then decode
        + preprocess one file at a time in worker threads; the batcher knows how many are
        coming. Returns the model inputs and the headers."""
        n = len(paths)
        heads = []
        for i, path in enumerate(paths):
            try:
                head = await anyio.to_thread.run_sync(self._peek, path)
                self._check_tile_sized(head.width, head.height, head.pixel_spacing_mm)
            except InputError as exc:
                raise _numbered(exc, i, n) from None
            heads.append(head)
        total = sum(h.pixels for h in heads)
        self.pixel_budget.check_request(total)
        self.batcher.preparing += n
        done = 0
        try:
            out = []
            async with self.pixel_budget.hold(total):
                for i, path in enumerate(paths):
                    dicom = path.name.endswith(".dcm")
                    try:
                        x = await anyio.to_thread.run_sync(
                            self._prepare, path, dicom, limiter=self._limiter
                        )
                    except InputError as exc:
                        raise _numbered(exc, i, n) from None
                    finally:
                        done += 1
                        self.batcher.preparing -= 1
                    out.append(x)
            return out, heads
        finally:
            self.batcher.preparing -= n - done
            if total >= TRIM_AFTER and self.pixel_budget.memory.in_use == 0:
                memory.trim()

    @bentoml.api(route="/predict")
    async def predict(self, image: Path) -> dict[str, Any]:
        """One tile -> probability and label from the served version."""
        self._check_ready()
        started = time.perf_counter()
        try:
            x, heads = await self._prepare_many([image])
        except InputError as exc:
            return _error_response(exc)
        (p,) = await self.batcher.submit(x)
        rid = self._record("predict", p, x[0], heads[0], started)
        return {**self._answer(p), "request_id": rid}

    @bentoml.api(route="/predict_batch")
    async def predict_batch(self, images: list[Path]) -> list[dict[str, Any]]:
        """Several tiles in one request -> one answer each, in order."""
        self._check_ready()
        try:
            if not images:
                raise InputError("send at least one file in the 'images' field")
            if len(images) > self.settings.serve_max_batch_size:
                raise InputError(
                    f"{len(images)} images is over the batch limit of "
                    f"{self.settings.serve_max_batch_size}"
                )
            started = time.perf_counter()
            xs, heads = await self._prepare_many(images)
        except InputError as exc:
            return _error_response(exc)
        probs = await self.batcher.submit(xs)
        scored = zip(probs, xs, heads, strict=True)
        rids = [self._record("predict_batch", p, x, h, started) for p, x, h in scored]
        answers = zip(probs, rids, strict=True)
        return [{**self._answer(p, "predict_batch"), "request_id": r} for p, r in answers]

    def _record(
        self, endpoint: str, p: float, x: np.ndarray, head: UploadHeader, started: float
    ) -> str:
        """Log one scored tile (its record and metrics); its request id."""
        return self.monitor.record(
            endpoint,
            score=p,
            threshold=self.threshold,
            latency_ms=(time.perf_counter() - started) * 1000.0,
            model_input=x,
            width=head.width,
            height=head.height,
            pixel_spacing_mm=head.pixel_spacing_mm,
            spacing_source="dicom" if head.pixel_spacing_mm is not None else None,
        )

    @bentoml.api(route="/feedback")
    async def feedback(
        self, request_id: str, outcome: str, source: str, who: str | None = None
    ) -> dict[str, Any]:
        """The known outcome of an answered image: ``outcome`` malignant | benign | normal,
        ``source`` biopsy | follow-up | reader. Idempotent per ``request_id``; 404 for an
        unknown id, 409 for a different outcome already recorded, 422 for a bad value."""
        sender = "API key" if self.settings.auth_enabled else "no authentication"
        body = {"request_id": request_id, "outcome": outcome, "source": source, "who": who}
        try:
            return await anyio.to_thread.run_sync(self.monitor.feedback, body, sender)
        except FeedbackError as exc:
            return _error_response(InputError(str(exc), status=exc.status))

    @bentoml.api(route="/analyze")
    async def analyze(
        self,
        image: Path,
        pixel_spacing_mm: float | None = None,
        stride_fraction: float = 0.5,
        top_k: int = 5,
        heatmap: bool = False,
        synthetic: bool = False,
    ) -> dict[str, Any]:
        """A whole mammogram -> image score (max tile probability), top regions, heatmap."""
        self._check_ready()
        try:
            if not (0.05 <= stride_fraction <= 1.0):
                raise InputError(f"stride_fraction must be within 0.05..1, got {stride_fraction}")
            if not (1 <= top_k <= 50):
                raise InputError(f"top_k must be within 1..50, got {top_k}")
            head = await anyio.to_thread.run_sync(self._peek, image)
            spacing, source = _choose_spacing(head.pixel_spacing_mm, pixel_spacing_mm)
            weight = self._film_weight(head, spacing, source, stride_fraction)
            cap = max(self.settings.max_image_pixels, self.settings.analysis_max_pixels)
            async with self.pixel_budget.hold(weight, cap, FILM_BYTES_PER_PIXEL):
                return await anyio.to_thread.run_sync(
                    self._analyze_sync,
                    image,
                    head.fmt == "dicom",
                    pixel_spacing_mm,
                    stride_fraction,
                    top_k,
                    heatmap,
                    synthetic,
                    limiter=self._analysis_limiter,
                )
        except InputError as exc:
            return _error_response(exc)
        finally:
            if self.pixel_budget.memory.in_use == 0:
                memory.trim()

    def _film_weight(
        self, head: UploadHeader, spacing: float | None, source: str | None, stride: float
    ) -> int:
        """Pixels the analysis holds (the larger of the decoded and the resampled film), after
        the analysis bounds, checked from the header before anything is decoded."""
        from mammo_pipeline.analysis import AnalysisError, check_film_bounds
        from mammo_pipeline.analysis.analyze import resolve_spacing

        s = self.settings
        try:
            mm, src = resolve_spacing(spacing, source)  # type: ignore[arg-type]
            rows, cols, _ = check_film_bounds(
                head.width,
                head.height,
                mm,
                stride,
                max_pixels=s.analysis_max_pixels,
                max_windows=s.analysis_max_windows,
                spacing_source=src,
            )
        except AnalysisError as exc:
            raise InputError(str(exc), status=exc.status) from None
        return max(head.pixels, rows * cols)

    def _predict_tiles(self, batch: np.ndarray) -> np.ndarray:
        return self._predict_array(batch)

    def _analyze_sync(
        self,
        path: Path,
        dicom: bool,
        form_spacing: float | None,
        stride_fraction: float,
        top_k: int,
        heatmap: bool,
        synthetic: bool,
    ) -> dict[str, Any]:
        from mammo_pipeline.analysis import AnalysisError, NonFiniteScoreError, analyze

        s = self.settings
        data = read_upload(path, s.max_upload_bytes)
        try:
            decoded = decode_upload(
                data,
                max_bytes=s.max_upload_bytes,
                max_pixels=s.max_image_pixels,
                dicom=dicom,
                whole_image=True,
            )
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - decoding failures are the upload's fault
            raise InputError(f"cannot use this image: {type(exc).__name__}") from None
        provenance = _provenance(data, synthetic)  # the client's word, else the file's marker
        del data
        spacing, source = _choose_spacing(decoded.pixel_spacing_mm, form_spacing)
        film = decoded.intensities  # raw intensities: analyze prepares them as for training
        started = time.perf_counter()
        try:
            result = analyze(
                film,
                predict_batch=self._predict_tiles,
                image_size=self.image_size,
                threshold=self.info.film_operating_point()["threshold"],  # the film's, not tile's
                pixel_spacing_mm=spacing,
                spacing_source=source,
                stride_fraction=stride_fraction,
                top_k=top_k,
                batch_size=s.serve_max_batch_size,
                max_pixels=s.analysis_max_pixels,
                max_windows=s.analysis_max_windows,
                time_budget_s=s.analysis_time_budget_s,
            )
        except NonFiniteScoreError as exc:
            NONFINITE.labels(endpoint="analyze").inc()
            logger.error("analyze: %s", exc)
            self.monitor.record("analyze", score=None, threshold=None, latency_ms=None,
                                model_input=None, width=decoded.shape[1],
                                height=decoded.shape[0])  # fmt: skip
            raise InputError(f"the model returned no valid score: {exc}", status=500) from None
        except AnalysisError as exc:
            raise InputError(str(exc), status=exc.status) from None
        answer = result.to_dict()
        answer.update(
            request_id=self.monitor.record(
                "analyze",
                score=result.score,
                threshold=result.threshold,
                latency_ms=(time.perf_counter() - started) * 1000.0,
                model_input=None,  # the windows are not kept: input statistics unknown
                width=result.image_width,
                height=result.image_height,
                pixel_spacing_mm=result.pixel_spacing_mm,
                spacing_source=result.spacing_source,
                tiles_scored=result.tiles_scored,
                synthetic=provenance.startswith("SYNTHETIC") or None,
            ),
            model_name=self.info.name,
            model_version=self.info.version,
            weights=self.weights,
            image_format=decoded.fmt,
            data=provenance,
            analysis_seconds=round(time.perf_counter() - started, 3),
            operating_point=self.info.film_operating_point(),
        )
        if heatmap:
            import base64

            from mammo_pipeline.analysis import render_heatmap

            caption = (
                f"model {self.info.name} v{self.info.version}, {self.image_size}px input, "
                f"film threshold {result.threshold:.3f}; {self.weights}"
            )
            png = render_heatmap(
                film, result, caption=caption, synthetic=provenance.startswith("SYNTHETIC")
            )
            answer["heatmap_png_base64"] = base64.b64encode(png).decode("ascii")
            answer["heatmap_caption"] = caption
        return answer


def _provenance(data: bytes, declared: bool) -> str:
    """What /analyze says about the image's origin: SYNTHETIC when the client says so or the
    file carries the project's marker (:mod:`mammo_pipeline.data.provenance`); otherwise
    "provenance not declared" (never "real": nothing here can know that)."""
    from mammo_pipeline.data.provenance import NOT_DECLARED, SYNTHETIC, png_provenance

    if declared:
        return "SYNTHETIC (declared by the client)"
    if png_provenance(data) == SYNTHETIC:
        return "SYNTHETIC (marked in the file)"
    return NOT_DECLARED


def _choose_spacing(
    dicom_mm: float | None, form_mm: float | None
) -> tuple[float | None, str | None]:
    """(spacing, source): the DICOM's, else the form field's, else None (the documented
    default of :func:`mammo_pipeline.analysis.analyze`); a contradiction is a 422."""
    if dicom_mm is not None:
        if form_mm is not None and abs(form_mm - dicom_mm) > SPACING_CONFLICT * dicom_mm:
            raise InputError(
                f"pixel_spacing_mm {form_mm:g} contradicts the DICOM's pixel spacing "
                f"{dicom_mm:g} mm",
                status=422,
            )
        return dicom_mm, "dicom"
    if form_mm is not None:
        return form_mm, "form"
    return None, None


def _numbered(exc: InputError, i: int, n: int) -> InputError:
    return InputError(f"image {i}: {exc}", exc.status) if n > 1 else exc


MammoClassifier.add_asgi_middleware(RequestGuard)
