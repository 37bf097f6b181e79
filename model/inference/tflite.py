"""The LiteRT (TFLite) export that serving runs, as a function from pixels to probabilities."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np


class TFLiteRunner:
    """A LiteRT interpreter as a function from pixels to probabilities.

    The interpreter is not thread-safe, so calls are serialised; it is resized only when the
    batch size changes.

    Args:
        path: the ``.tflite`` file.
        threads: CPU threads for the interpreter (None: LiteRT's default).
    """

    def __init__(self, path: Path, threads: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.path = path
        self._interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._batch = int(self._interpreter.get_input_details()[0]["shape"][0])
        self._lock = threading.Lock()

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """Probabilities for a batch.

        Args:
            pixels: N x 48 x 48 x 1 pixel values (any numeric dtype).

        Returns:
            float32 array N x classes.
        """
        batch = np.ascontiguousarray(pixels, dtype=np.float32)
        with self._lock:
            if batch.shape[0] != self._batch:
                self._interpreter.resize_tensor_input(self._input, batch.shape, strict=False)
                self._interpreter.allocate_tensors()
                self._batch = batch.shape[0]
            self._interpreter.set_tensor(self._input, batch)
            self._interpreter.invoke()
            return np.array(self._interpreter.get_tensor(self._output))
