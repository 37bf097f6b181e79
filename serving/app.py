"""Gradio app serving the champion model; a watcher swaps in newly promoted versions."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import gradio as gr
from PIL import Image

from model.errors import RegistryError
from model.predict import Predictor
from model.registry import ModelRegistry
from model.settings import Settings

logger = logging.getLogger(__name__)

PredictorLoader = Callable[[Path, str], Predictor]


class ChampionWatcher:
    """Holds the champion's predictor and replaces it when the champion pointer moves.

    The swap is a single attribute assignment, so requests see either the old or the new
    model, never a half-loaded one. A failed refresh keeps the current model.

    Args:
        registry: where the champion pointer and versions live.
        cache_dir: local folder for downloaded model files.
        poll_seconds: interval between checks of the pointer.
        loader: builds a predictor from a verified model file.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        cache_dir: Path,
        poll_seconds: float,
        loader: PredictorLoader = Predictor.from_file,
    ) -> None:
        self.registry = registry
        self.cache_dir = cache_dir
        self.poll_seconds = poll_seconds
        self.loader = loader
        self._predictor: Predictor | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def predictor(self) -> Predictor | None:
        """The predictor of the current champion, or None before the first promotion."""
        return self._predictor

    def refresh(self) -> bool:
        """Load the champion if it differs from the model being served.

        Returns:
            True when a new model was swapped in.

        Raises:
            RegistryError: if the store cannot be read or the model fails verification.
        """
        pointer = self.registry.champion()
        if pointer is None or (
            self._predictor is not None and self._predictor.version == pointer.version
        ):
            return False
        # The TFLite export, when the version has one, lands beside the model and is served.
        path = self.registry.download_served(pointer.version, self.cache_dir, pointer.sha256)
        self._predictor = self.loader(path, pointer.version)
        logger.info("serving model version %s", pointer.version)
        return True

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception:  # a bad refresh must never take serving down
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


def classify(watcher: ChampionWatcher, image: Image.Image | None) -> dict[str, float]:
    """Per-emotion probabilities for an uploaded image, using the current champion.

    Args:
        watcher: source of the current predictor.
        image: the upload, any size or mode.

    Returns:
        ``{emotion: probability}``.

    Raises:
        gr.Error: with a message for the user when there is no image or no model yet.
    """
    if image is None:
        raise gr.Error("Upload an image of a face first.")
    predictor = watcher.predictor
    if predictor is None:
        raise gr.Error("No model has been promoted yet: run `fer retrain`, then try again.")
    return predictor.predict(image)


def describe(watcher: ChampionWatcher) -> str:
    """One line of Markdown naming the model being served.

    Args:
        watcher: source of the current predictor.

    Returns:
        The text.
    """
    predictor = watcher.predictor
    return f"Model version: `{predictor.version}`" if predictor else "No model promoted yet."


def make_app(watcher: ChampionWatcher) -> gr.Blocks:
    """Build the Gradio UI around the watcher's current predictor.

    The API endpoint ``/predict`` takes one image and returns the 7 class probabilities.

    Args:
        watcher: provides the predictor at request time.

    Returns:
        The (not yet launched) Blocks app.
    """
    with gr.Blocks(title="Facial emotion recognition", analytics_enabled=False) as app:
        gr.Markdown(
            "# Facial emotion recognition\nUpload a face photo to see each emotion's probability."
        )
        version = gr.Markdown()
        with gr.Row():
            image = gr.Image(type="pil", label="Face image", sources=["upload", "webcam"])
            label = gr.Label(num_top_classes=7, label="Emotion probabilities")
        button = gr.Button("Classify", variant="primary")
        button.click(
            lambda img: classify(watcher, img), inputs=image, outputs=label, api_name="predict"
        )
        app.load(lambda: describe(watcher), outputs=version, api_name=False)
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
    registry = ModelRegistry.from_settings(settings)
    watcher = ChampionWatcher(
        registry, settings.home_dir / "serving" / "models", settings.champion_poll_seconds
    )
    if not watcher.refresh():
        raise RegistryError(
            f"no champion model in s3://{settings.s3_bucket}/models/champion.json yet; "
            "run `fer retrain` (or `fer up`) first"
        )
    watcher.start()
    return watcher
