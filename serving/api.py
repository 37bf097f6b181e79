"""The HTTP API beside the Gradio page, on the same server and port.

``POST /api/v1/predict`` answers with the JSON of the page's ``predict`` endpoint; ``/healthz``
says the process answers, ``/readyz`` whether a model is loaded and the server is not
draining, ``/api/v1/model`` which model, and ``/metrics`` counts requests, errors, latency and
faces for Prometheus. Every answer carries ``X-Request-ID`` (the caller's, or a new one) and,
once a model is served, ``X-Model-Version``. With credentials (:mod:`serving.access`), the page
and the API ask for them; the probes and the metrics do not.
"""

from __future__ import annotations

import contextvars
import logging
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Annotated

import gradio as gr
from fastapi import FastAPI, File, Form, Request, Response, UploadFile
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from model.errors import InputError, ServiceError
from model.logs import LogFormat, log_formatter
from serving.access import CHALLENGE, OPEN_PATHS, Credentials
from serving.app import (
    CONCURRENCY,
    QUEUE_SIZE,
    ChampionWatcher,
    analyze_upload,
    answer_json,
    make_app,
)
from serving.images import ImageLimits, too_large
from serving.metrics import ServingMetrics

logger = logging.getLogger(__name__)

#: The request being answered, for log lines (see :class:`RequestIdFilter`).
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
#: HTTP status of each kind of refused upload (:attr:`InputError.reason`).
STATUS_OF = {
    "missing": 400,
    "empty": 400,
    "too_large": 413,
    "too_many_pixels": 413,
    "not_an_image": 415,
    "corrupt": 422,
}
#: Bytes read from an upload at a time.
_CHUNK = 1 << 20


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every log record (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: D102
        record.request_id = REQUEST_ID.get()
        return True


def log_request_ids(log_format: LogFormat) -> None:
    """Name the request in every log line: the root handlers get the filter and the format.

    For entry points (``fer serve``), which own the logging configuration.
    """
    for handler in logging.getLogger().handlers:
        handler.addFilter(RequestIdFilter())
        handler.setFormatter(log_formatter(log_format, request_id=True))


class Admission:
    """Bounds the requests analysed at once and waiting, as the page's queue does.

    Args:
        running: analyses at a time.
        waiting: requests that may wait for a turn; one more is refused.
    """

    def __init__(self, running: int = CONCURRENCY, waiting: int = QUEUE_SIZE) -> None:
        self._turns = threading.Semaphore(running)
        self._lock = threading.Lock()
        self._admitted = 0
        self._limit = running + waiting

    def enter(self) -> bool:
        """Take a place (blocking for a turn); False when the queue is full."""
        with self._lock:
            if self._admitted >= self._limit:
                return False
            self._admitted += 1
        self._turns.acquire()
        return True

    @property
    def admitted(self) -> int:
        """Requests running or waiting now."""
        return self._admitted

    def leave(self) -> None:
        """Give the place back."""
        self._turns.release()
        with self._lock:
            self._admitted -= 1


def _problem(status: int, reason: str, message: str) -> JSONResponse:
    return JSONResponse({"error": reason, "detail": message}, status_code=status)


def _save_upload(upload: UploadFile, folder: Path, limits: ImageLimits) -> Path:
    """The upload written to ``folder``, read in chunks up to twice the byte limit.

    Raises:
        InputError: the upload is larger than the limit (the page's message).
    """
    path = folder / "upload"
    size = 0
    with path.open("wb") as out:
        while chunk := upload.file.read(_CHUNK):
            size += len(chunk)
            if size > 2 * limits.max_bytes:  # the page's own cap: stop reading
                raise too_large(size, limits)
            out.write(chunk)
    if size > limits.max_bytes:
        raise too_large(size, limits)
    return path


def _register_probes(
    api: FastAPI,
    watcher: ChampionWatcher,
    metrics: ServingMetrics,
    draining: threading.Event,
    max_stale_seconds: float,
) -> None:
    @api.get("/healthz", tags=["probes"])
    def healthz() -> dict[str, str]:
        """The process answers (liveness)."""
        return {"status": "ok"}

    @api.get("/readyz", tags=["probes"], responses={503: {"description": "not ready, and why"}})
    def readyz() -> JSONResponse:
        """200 once a model is loaded; otherwise 503 with the reason.

        Also 503 while draining, and when the store has been silent too long.
        """
        if draining.is_set():
            return JSONResponse({"ready": False, "reason": "draining: the server is stopping"}, 503)
        served = watcher.served
        if served is None:
            return JSONResponse({"ready": False, "reason": "no model loaded yet"}, 503)
        silent = watcher.store_silent_for()
        if max_stale_seconds and silent is not None and silent > max_stale_seconds:
            reason = (
                f"the model store has not answered for {silent:.0f} s, more than "
                f"FER_SERVE_MAX_STALE_SECONDS ({max_stale_seconds:.0f}): the model served may be "
                "out of date"
            )
            return JSONResponse({"ready": False, "reason": reason}, 503)
        return JSONResponse({"ready": True, "model_version": served.predictor.version})

    @api.get("/api/v1/model", tags=["model"], responses={503: {"description": "no model yet"}})
    def model() -> JSONResponse:
        """The served model: version, runtime, test accuracy and any staleness warning."""
        served = watcher.served
        if served is None:
            return _problem(503, "no_model", "no model has been promoted yet")
        return JSONResponse(
            {
                "model_version": served.predictor.version,
                "runtime": served.predictor.runtime,
                "test_accuracy": served.accuracy,
                "classes": list(served.predictor.classes),
                "warning": watcher.staleness(),
            }
        )

    @api.get("/metrics", tags=["probes"])
    def prometheus() -> Response:
        """Requests, errors, latency, faces, the served version, the store's last answer."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)


def _register_predict(
    api: FastAPI, watcher: ChampionWatcher, limits: ImageLimits, metrics: ServingMetrics
) -> None:
    admission = Admission()

    @api.post(
        "/api/v1/predict",
        tags=["model"],
        responses={
            400: {"description": "no photo, or an empty file"},
            413: {"description": "too many bytes or pixels"},
            415: {"description": "not an image"},
            422: {"description": "corrupt or truncated image data"},
            429: {"description": "too many requests waiting"},
            503: {"description": "no model promoted yet"},
        },
    )
    def predict(
        request: Request,
        image: Annotated[UploadFile, File(description="The photo: JPEG, PNG, WebP, BMP, GIF.")],
        whole_image: Annotated[bool, Form(description="The whole image is one face.")] = False,
    ) -> JSONResponse:
        """Find the faces in a photo; each with its box, label and seven probabilities."""
        if not admission.enter():
            metrics.refused("predict", "overloaded")
            return _problem(429, "overloaded", "too many requests waiting; retry in a moment")
        try:
            with tempfile.TemporaryDirectory(prefix="fer-upload-") as folder:
                path = _save_upload(image, Path(folder), limits)
                started = time.perf_counter()
                analysis, _ = analyze_upload(watcher, path, whole_image, limits)
        except InputError as error:
            metrics.refused("predict", error.reason)
            return _problem(STATUS_OF.get(error.reason, 400), error.reason, str(error))
        except ServiceError as error:
            metrics.refused("predict", "no_model")
            return _problem(503, "no_model", str(error))
        finally:
            admission.leave()
        metrics.analysed(analysis, time.perf_counter() - started)
        request.state.model_version = analysis.model_version
        return JSONResponse(answer_json(watcher, analysis))


class RefuseOversizedBodies:
    """Refuse a predict request whose declared body is far above the limit, before it is read.

    The form parser would otherwise spool the whole upload to disk first. Plain ASGI, as the
    other two middlewares here: the messages pass through as they are, the page's event
    streams included, where Starlette's ``BaseHTTPMiddleware`` would relay each response
    through a memory stream and a task of its own.
    """

    def __init__(self, app: ASGIApp, limits: ImageLimits, metrics: ServingMetrics) -> None:
        self.app, self.limits, self.metrics = app, limits, metrics
        self.most = 2 * limits.max_bytes + (1 << 16)  # the page's cap, plus the form's parts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: D102
        if scope["type"] == "http" and scope["path"] == "/api/v1/predict":
            declared = Headers(scope=scope).get("content-length", "")
            if declared.isdigit() and int(declared) > self.most:
                self.metrics.refused("predict", "too_large")
                error = too_large(int(declared), self.limits)
                await _problem(413, error.reason, str(error))(scope, receive, send)
                return
        await self.app(scope, receive, send)


class RequireCredentials:
    """Refuse requests without valid credentials (401), except the probes and metrics."""

    def __init__(self, app: ASGIApp, credentials: Credentials, metrics: ServingMetrics) -> None:
        self.app, self.credentials, self.metrics = app, credentials, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: D102
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if self.credentials.allow(Headers(scope=scope).get("authorization")):
            await self.app(scope, receive, send)
            return
        self.metrics.refused(_endpoint(scope["path"]), "unauthorized")
        refusal = _problem(
            401, "unauthorized",
            "credentials missing or wrong: send Authorization: Bearer <token>, or HTTP Basic "
            "user:password, as set in FER_SERVE_AUTH",
        )  # fmt: skip
        refusal.headers["WWW-Authenticate"] = CHALLENGE
        await refusal(scope, receive, send)


class TrackRequests:
    """Name, count and time each request.

    The caller's ``X-Request-ID`` (or a new one) is echoed and written in every log line of the
    request; ``X-Model-Version`` names the model that answered, or the one served now.
    """

    def __init__(self, app: ASGIApp, watcher: ChampionWatcher, metrics: ServingMetrics) -> None:
        self.app, self.watcher, self.metrics = app, watcher, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: D102
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = Headers(scope=scope).get("x-request-id") or uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status = 500  # what the server answers when the app fails before its own answer
        recorded = False

        def record() -> None:
            nonlocal recorded
            if not recorded:
                recorded = True
                _record(scope, status, time.perf_counter() - started, self.metrics)

        async def answer(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = request_id
                if version := self._version(scope):
                    headers["X-Model-Version"] = version
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                # Counted and logged before the answer's last bytes leave: a caller that
                # reads /metrics or the log right after its answer finds the request there.
                record()
            await send(message)

        try:
            await self.app(scope, receive, answer)
        finally:
            record()  # the app failed, or the caller left, before the answer was complete
            REQUEST_ID.reset(token)

    def _version(self, scope: Scope) -> str | None:
        """The version that answered (set by predict), else the one served now."""
        answered = scope.get("state", {}).get("model_version")
        served = self.watcher.served
        return answered or (served.predictor.version if served else None)


def _record(scope: Scope, status: int, elapsed: float, metrics: ServingMetrics) -> None:
    """Count and time the request; log one line for the API's own endpoints."""
    endpoint = _endpoint(scope["path"])
    metrics.requests.labels(endpoint, str(status)).inc()
    metrics.latency.labels(endpoint).observe(elapsed)
    if endpoint != "page":
        logger.info(
            "%s %s -> %d in %.1f ms", scope["method"], scope["path"], status, 1000 * elapsed
        )


def _endpoint(path: str) -> str:
    """A bounded label for the metrics: the API's own paths, everything else is the page."""
    known = {"/api/v1/predict": "predict", "/api/v1/model": "model", "/healthz": "healthz"}
    known |= {"/readyz": "readyz", "/metrics": "metrics"}
    return known.get(path, "page")


def create_app(
    watcher: ChampionWatcher,
    limits: ImageLimits,
    blocks: gr.Blocks | None = None,
    *,
    credentials: Credentials | None = None,
    draining: threading.Event | None = None,
    max_stale_seconds: float = 0.0,
) -> FastAPI:
    """The API with the Gradio page mounted at ``/``.

    Args:
        watcher: provides the model at request time.
        limits: upload limits, the page's and the API's.
        blocks: the page (default: :func:`serving.app.make_app` on the same watcher).
        credentials: required of every request but the probes and metrics (default: open).
        draining: once set, ``/readyz`` answers 503 (the server is stopping).
        max_stale_seconds: ``/readyz`` answers 503 once the store has not answered for longer
            (0: never).

    Returns:
        The ASGI app, ready for uvicorn.
    """
    api = FastAPI(
        title="Facial emotion recognition",
        summary="Faces in a photo, each with its most likely emotion and all seven probabilities.",
        docs_url="/docs",
    )
    metrics = ServingMetrics(watcher)
    _register_probes(api, watcher, metrics, draining or threading.Event(), max_stale_seconds)
    _register_predict(api, watcher, limits, metrics)
    # Middleware added later runs first: request IDs, then credentials, then the size check.
    api.add_middleware(RefuseOversizedBodies, limits=limits, metrics=metrics)
    if credentials is not None:
        api.add_middleware(RequireCredentials, credentials=credentials, metrics=metrics)
    api.add_middleware(TrackRequests, watcher=watcher, metrics=metrics)
    page = blocks or make_app(watcher, limits, metrics)
    # Gradio's own cap keeps huge uploads off the disk; the app explains smaller ones.
    return gr.mount_gradio_app(api, page, path="/", max_file_size=2 * limits.max_bytes)
