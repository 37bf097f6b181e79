"""Gradio app serving the champion model; a watcher swaps in newly promoted versions."""

from __future__ import annotations

import html
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from model.contract import IMAGE_SIZE, MODEL_FILE, TFLITE_FILE
from model.errors import (
    InputError,
    IntegrityError,
    RegistryError,
    ServiceError,
    StoreUnavailable,
)
from model.inference.predictor import Predictor
from model.registry.store import ModelRegistry
from model.settings import Settings
from serving.cache import ServedRecord, cached_model, prune_cache, remember_served
from serving.faces import Analysis, analyze, annotate
from serving.images import ImageLimits, load_image
from serving.metrics import ServingMetrics

logger = logging.getLogger(__name__)

PredictorLoader = Callable[[Path, str], Predictor]
#: Requests of one event that may run at once: face detection (OpenCV) runs in parallel and
#: the TFLite call is serialised inside the runner, so a few in flight keep both cores busy.
CONCURRENCY = 4
#: Requests that may wait in the queue before new ones are turned away.
QUEUE_SIZE = 64


@dataclass(frozen=True)
class Served:
    """The model being served and what users are told about it; replaced as a whole."""

    predictor: Predictor
    accuracy: float | None


class ChampionWatcher:
    """Holds the champion's predictor and replaces it when the champion pointer moves.

    A new champion is downloaded (sha256-verified), loaded and warmed up before one attribute
    assignment swaps it in: a request holds the :class:`Served` it started with, so requests
    in flight finish on the old model. A failed refresh keeps the current model and is
    remembered, so the app can say how stale its view of the store is.

    Args:
        registry: where the champion pointer and versions live (None: a local model only).
        cache_dir: local folder for downloaded model files.
        poll_seconds: interval between checks of the pointer.
        loader: builds a predictor from a verified model file.
    """

    def __init__(
        self,
        registry: ModelRegistry | None,
        cache_dir: Path,
        poll_seconds: float,
        loader: PredictorLoader = Predictor.from_file,
    ) -> None:
        self.registry = registry
        self.cache_dir = cache_dir
        self.poll_seconds = poll_seconds
        self.loader = loader
        self._served: Served | None = None
        self.started = time.time()
        self.last_checked: float | None = None
        self.last_error: str | None = None
        #: The champion (version, sha256) that failed verification, and why.
        self.refused: tuple[tuple[str, str], str] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def served(self) -> Served | None:
        """The current model and its test accuracy, or None before the first promotion."""
        return self._served

    @property
    def predictor(self) -> Predictor | None:
        """The predictor of the current champion, or None before the first promotion."""
        return self._served.predictor if self._served else None

    def refresh(self) -> bool:
        """Load the champion if it differs from the model being served.

        A champion whose files do not verify is refused once and remembered, so it is not
        downloaded again at every poll; the current model goes on serving.

        Returns:
            True when a new model was swapped in.

        Raises:
            StoreUnavailable: if the store cannot be reached.
            IntegrityError: if the champion is refused (its files do not verify).
            RegistryError: if the store refuses the requests.
        """
        if self.registry is None:
            return False
        pointer = self.registry.champion()
        self.last_checked, self.last_error = time.time(), None
        current = self._served
        if pointer is None or (current and current.predictor.version == pointer.version):
            self.refused = None
            return False
        if self.refused is not None and self.refused[0] == (pointer.version, pointer.sha256):
            return False
        try:
            served, record = self._load(pointer.version, pointer.sha256)
        except IntegrityError as error:
            self.refused = ((pointer.version, pointer.sha256), str(error))
            raise
        self._swap_in(served, record)
        return True

    def _load(self, version: str, sha256: str) -> tuple[Served, ServedRecord]:
        """Download (verified), load and warm up a version; nothing is swapped in yet."""
        assert self.registry is not None
        manifest = self.registry.read_manifest(version)
        # The TFLite export, when the version has one, lands beside the model and is served.
        path = self.registry.download_served(version, self.cache_dir, sha256)
        files = {
            name: entry["sha256"]
            for name, entry in manifest["files"].items()
            if name in (MODEL_FILE, TFLITE_FILE)
        }
        accuracy = manifest.get("metrics", {}).get("accuracy")
        record = ServedRecord(version, {**files, MODEL_FILE: sha256}, accuracy)
        return Served(self._warm(self.loader(path, version)), accuracy), record

    @staticmethod
    def _warm(predictor: Predictor) -> Predictor:
        # Allocations and first-call setup happen before any request sees the model.
        predictor.predict_batch(np.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 1), dtype=np.uint8))
        return predictor

    def _swap_in(self, served: Served, record: ServedRecord) -> None:
        previous = self._served
        self._served = served
        self.refused = None
        logger.info("serving model version %s", record.version)
        keep = {record.version} | ({previous.predictor.version} if previous else set())
        try:
            remember_served(self.cache_dir, record)
            prune_cache(self.cache_dir, keep)
        except OSError as error:  # the swap is done; only the cache's housekeeping failed
            logger.warning("model cache %s: %s", self.cache_dir, error)

    def serve_cached(self, unavailable: StoreUnavailable | None) -> bool:
        """Serve the last verified model from the local cache.

        For a start while the store is down, or while its champion is refused.

        Args:
            unavailable: why the store could not be asked, shown until it answers again;
                None when it answered (with a champion that was refused).

        Returns:
            Whether a verified cached model is now served.
        """
        found = cached_model(self.cache_dir)
        if found is None:
            return False
        path, record = found
        self._served = Served(self._warm(self.loader(path, record.version)), record.accuracy)
        if unavailable is not None:
            self.last_checked, self.last_error = time.time(), str(unavailable)
        logger.warning("serving the verified cached model %s: %s", record.version, self.staleness())
        return True

    def serve_local(self, predictor: Predictor, accuracy: float | None = None) -> None:
        """Serve a model loaded from a local file (benchmarks, demos); do not :meth:`start`.

        Args:
            predictor: the loaded model.
            accuracy: its test accuracy, if known, shown to users.
        """
        self._served = Served(self._warm(predictor), accuracy)

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception as error:  # a bad refresh must never take serving down
                self.last_error = str(error)
                logger.exception("champion refresh failed; still serving the previous model")

    def start(self) -> None:
        """Poll the champion pointer in a daemon thread until :meth:`stop`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="champion-watcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop polling."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def store_silent_for(self, now: float | None = None) -> float | None:
        """Seconds since the store last answered, while it does not answer (None: it does)."""
        if self.last_error is None:
            return None
        return (now or time.time()) - (self.last_checked or self.started)

    def staleness(self, now: float | None = None) -> str | None:
        """A warning when the store has not answered lately or the champion was refused.

        Returns:
            The warning, or None when all is well.
        """
        warnings = []
        if self.refused is not None:
            (version, _), reason = self.refused
            warnings.append(
                f"champion {version} was refused ({reason}); still serving the verified model below"
            )
        since = self.store_silent_for(now)
        if since is not None:
            warnings.append(
                f"the model store has not answered for {since:.0f} s ({self.last_error}); "
                "still serving the model below, a new champion is loaded once the store is back"
            )
        return " ".join(warnings) or None


def describe(watcher: ChampionWatcher) -> str:
    """Markdown naming the model being served, its test accuracy and any staleness."""
    served = watcher.served
    if served is None:
        return "No model promoted yet: run `fer retrain`, then reload this page."
    accuracy = f", test accuracy {served.accuracy:.1%}" if served.accuracy is not None else ""
    text = f"Model version `{served.predictor.version}` ({served.predictor.runtime}{accuracy})"
    stale = watcher.staleness()
    return text + (f"\n\n**Warning:** {stale}" if stale else "")


#: What a request without a photo is told (the page and the API alike).
NO_PHOTO = "Upload a photo (or take one with the webcam, or paste one) first."
#: What a request is told before the first promotion.
NO_MODEL = "No model has been promoted yet: run `fer retrain`, then try again."


def analyze_upload(
    watcher: ChampionWatcher, path: Path | None, whole_image: bool, limits: ImageLimits
) -> tuple[Analysis, Image.Image]:
    """Load an upload, find faces and classify them with the model current at the start.

    Returns:
        The analysis and the image it was made on (RGB, downscaled when large).

    Raises:
        InputError: for a missing or unusable image, the reason in its message.
        ServiceError: when no model is served yet.
    """
    if path is None:
        raise InputError(NO_PHOTO, "missing")
    served = watcher.served
    if served is None:
        raise ServiceError(NO_MODEL)
    loaded = load_image(path, limits)
    stale = watcher.staleness()
    notes = loaded.notes + ((stale,) if stale else ())
    analysis = analyze(loaded.image, served.predictor, whole_image, notes, limits.detect_side)
    return analysis, loaded.image


def answer_json(watcher: ChampionWatcher, analysis: Analysis) -> dict[str, Any]:
    """The JSON answer: model version, notes, faces; and the test accuracy of that version."""
    answer = analysis.to_json()
    served = watcher.served
    # A swap may have happened since the analysis: only the same version's accuracy.
    same = served is not None and served.predictor.version == answer["model_version"]
    answer["model_test_accuracy"] = served.accuracy if same else None
    return answer


def run_analysis(
    watcher: ChampionWatcher,
    path: str | None,
    whole_image: bool,
    limits: ImageLimits,
    metrics: ServingMetrics,
) -> tuple[Analysis, Image.Image]:
    """:func:`analyze_upload` for the Gradio page, counted in ``metrics`` (endpoint ``page``).

    Raises:
        gr.Error: with the reason, for a missing or unusable image or when no model is served.
    """
    started = time.perf_counter()
    try:
        found = analyze_upload(watcher, None if path is None else Path(path), whole_image, limits)
    except InputError as error:
        metrics.refused("page", error.reason)
        raise gr.Error(str(error)) from error
    except ServiceError as error:
        metrics.refused("page", "no_model")
        raise gr.Error(str(error)) from error
    metrics.analysed(found[0], time.perf_counter() - started)
    return found


def bars_html(analysis: Analysis) -> str:
    """Per-face probability bars as HTML (one block per face, numbered as in the image)."""
    blocks = []
    for number, face in enumerate(analysis.faces, start=1):
        rows = "".join(
            f"<div style='display:flex;align-items:center;gap:8px'>"
            f"<span style='width:70px'>{html.escape(name)}</span>"
            f"<span style='flex:1;background:#e5e7eb;height:12px'>"
            f"<span style='display:block;height:12px;width:{p:.1%};background:#16a34a'></span>"
            f"</span><span style='width:48px;text-align:right'>{p:.1%}</span></div>"
            for name, p in sorted(face.probabilities.items(), key=lambda item: -item[1])
        )
        blocks.append(
            f"<div class='fer-face'><b>Face {number}: {html.escape(face.label)}</b>{rows}</div>"
        )
    return "".join(blocks)


#: The UI's handler: the annotated image, the probability bars and the summary.
_ShowHandler = Callable[[str | None, bool], tuple[Image.Image, str, str]]
#: The JSON API's handler: the analysis as JSON, with the model's test accuracy.
_PredictHandler = Callable[[str | None, bool], dict[str, Any]]


def _analysis_handlers(
    watcher: ChampionWatcher, limits: ImageLimits, metrics: ServingMetrics
) -> tuple[_ShowHandler, _PredictHandler]:
    """The UI's and the API's event handlers, both reading the model current per request.

    Args:
        watcher: provides the model at request time.
        limits: upload limits.
        metrics: where analyses and refusals are counted.

    Returns:
        ``show`` for the UI and ``predict`` for the JSON API.
    """

    # Closures keep the (path, whole_image) signature Gradio inspects for its API description.
    def show(path: str | None, whole_image: bool) -> tuple[Image.Image, str, str]:
        analysis, image = run_analysis(watcher, path, whole_image, limits, metrics)
        drawn = annotate(image, analysis)
        found = f"{len(analysis.faces)} face(s)" if analysis.faces else "No face found"
        lines = [f"**{found}** · model `{analysis.model_version}`", *analysis.notes]
        return drawn, bars_html(analysis), "\n\n".join(lines)

    def predict(path: str | None, whole_image: bool) -> dict[str, Any]:
        return answer_json(watcher, run_analysis(watcher, path, whole_image, limits, metrics)[0])

    return show, predict


def _input_column() -> tuple[gr.Image, gr.Checkbox, gr.Button]:
    """Add the column where the user gives a photo and starts the analysis.

    Returns:
        The photo input, the whole-image checkbox and the analyse button.
    """
    with gr.Column():
        # image_mode=None: the file reaches the handler as uploaded (16-bit, CMYK,
        # animated...), and the handler explains what it did with it.
        image = gr.Image(
            type="filepath",
            image_mode=None,
            sources=["upload", "webcam", "clipboard"],
            label="Photo",
        )
        whole = gr.Checkbox(label="Treat the whole image as one face", value=False)
        button = gr.Button("Find faces and emotions", variant="primary")
    return image, whole, button


def _output_column() -> tuple[gr.Image, gr.Markdown, gr.HTML]:
    """Add the column showing the analysis.

    Returns:
        The annotated image, the summary and the per-face probability bars.
    """
    with gr.Column():
        drawn = gr.Image(label="Faces", type="pil", interactive=False, format="png")
        summary = gr.Markdown()
        bars = gr.HTML()
    return drawn, summary, bars


def _add_predict_api(predict: _PredictHandler, whole: gr.Checkbox, answer: gr.JSON) -> None:
    """Add the hidden ``/predict`` endpoint: the same analysis, boxes and probabilities per face.

    Its input is a plain file, so even a broken upload reaches the handler and gets a clear
    message (gr.Image would fail on it inside Gradio, before the handler runs).

    Args:
        predict: the JSON API's handler.
        whole: the whole-image checkbox, shared with the UI.
        answer: the hidden JSON output.
    """
    upload = gr.File(visible=False, type="filepath")
    api_trigger = gr.Button(visible=False)
    api_trigger.click(
        predict,
        inputs=[upload, whole],
        outputs=answer,
        api_name="predict",
        concurrency_limit=CONCURRENCY,
        concurrency_id="inference",
    )


def _keep_status_current(app: gr.Blocks, watcher: ChampionWatcher, status: gr.Markdown) -> None:
    """Describe the served model on page load and every 5 s, so a swap or staleness shows.

    Args:
        app: the Blocks being built.
        watcher: provides the model to describe.
        status: where the description goes.
    """
    app.load(lambda: describe(watcher), outputs=status, api_name=False)
    gr.Timer(5).tick(lambda: describe(watcher), outputs=status, api_name=False)


def make_app(
    watcher: ChampionWatcher,
    limits: ImageLimits | None = None,
    metrics: ServingMetrics | None = None,
) -> gr.Blocks:
    """Build the Gradio UI and the ``/predict`` API around the watcher's current model.

    Args:
        watcher: provides the model at request time.
        limits: upload limits (default: :class:`ImageLimits`).
        metrics: where the page's analyses are counted (default: metrics of its own, which
            nothing shows).

    Returns:
        The (not yet launched) Blocks app, its queue configured.
    """
    show, predict = _analysis_handlers(
        watcher, limits or ImageLimits(), metrics or ServingMetrics(watcher)
    )
    # Components and events are created in a fixed order: Gradio numbers them by it.
    with gr.Blocks(title="Facial emotion recognition", analytics_enabled=False) as app:
        gr.Markdown(
            "# Facial emotion recognition\nUpload a photo, take one with the webcam or paste "
            "one: each face found gets a box, its most likely emotion and the probability of "
            "all seven."
        )
        status = gr.Markdown()
        with gr.Row():
            image, whole, button = _input_column()
            drawn, summary, bars = _output_column()
        answer = gr.JSON(visible=False)
        button.click(
            show,
            inputs=[image, whole],
            outputs=[drawn, bars, summary],
            api_name="analyze",
            concurrency_limit=CONCURRENCY,
            concurrency_id="inference",
        )
        _add_predict_api(predict, whole, answer)
        _keep_status_current(app, watcher, status)
    app.queue(max_size=QUEUE_SIZE)
    return app


def start_watcher(settings: Settings) -> ChampionWatcher:
    """Load the current champion and start watching for promotions.

    Args:
        settings: platform settings (store, home, poll interval).

    Returns:
        The running watcher.

    Raises:
        RegistryError: if no champion exists yet or it cannot be loaded.
    """
    poll = settings.champion_poll_seconds
    # Polls come again soon: a hung store is noticed within the interval, not minutes later.
    registry = ModelRegistry.from_settings(settings, timeout=max(1.0, poll / 2))
    cache_dir = settings.home_dir / "serving" / "models"
    cache_dir.mkdir(parents=True, exist_ok=True)
    watcher = ChampionWatcher(registry, cache_dir, poll)
    try:
        watcher.refresh()
    except StoreUnavailable as error:
        if not watcher.serve_cached(error):
            raise StoreUnavailable(
                f"{error}; and no verified model in the local cache {cache_dir} to serve meanwhile"
            ) from error
    except IntegrityError:  # the champion was refused: the last verified one serves
        if not watcher.serve_cached(None):
            raise
    if watcher.served is None:
        raise RegistryError(
            f"no champion model in s3://{settings.s3_bucket}/models/champion.json yet; "
            "run `fer retrain` (or `fer up`) first"
        )
    watcher.start()
    return watcher


def image_limits(settings: Settings) -> ImageLimits:
    """The upload limits from the settings."""
    return ImageLimits(
        max_bytes=settings.serve_max_upload_bytes,
        max_pixels=settings.serve_max_pixels,
        reject_pixels=settings.serve_reject_pixels,
        detect_side=settings.serve_detect_side,
    )
