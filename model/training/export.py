"""Fast inference export: the trained Keras model as a LiteRT (TFLite) flatbuffer.

The export is the calibrated model (temperature included), by default with int8 weights
(dynamic-range quantization: activations are quantized on the fly, so no calibration data is
needed), checked against Keras on real images before it is kept. Serving runs it through the
LiteRT interpreter (XNNPACK on CPU), several times faster than the float32 export and far
faster than a Keras call (``bench/infer.py``; figures in bench/RESULTS.md). Evaluation scores
the export itself, so the gate judges exactly what serves.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from model.contract import EXPORT_FILE
from model.inference.tflite import TFLiteRunner

logger = logging.getLogger(__name__)

# float32 kernels differ from TensorFlow's only by summation order: far below this.
MAX_ABS_DIFFERENCE = 1e-4
# int8 weights move a trained model's probabilities by a few hundredths (docs/model.md); more
# than this means the conversion went wrong.
MAX_QUANTIZED_DIFFERENCE = 0.05


def export_tflite(
    model: Any,
    dest: Path,
    check_pixels: np.ndarray,
    reference: Any = None,
    quantize: bool = False,
) -> dict[str, Any] | None:
    """Write ``model`` as a TFLite file and check it matches Keras on ``check_pixels``.

    Args:
        model: the Keras model to export (float32).
        dest: the ``.tflite`` path to write.
        check_pixels: N x 48 x 48 x 1 images to compare the two on.
        reference: the Keras model the export must match (default ``model``): the saved
            serving model when ``model`` is a rewritten equivalent of it (BatchNorm folded).
        quantize: store int8 weights (dynamic-range quantization); the outputs may then
            differ by up to :data:`MAX_QUANTIZED_DIFFERENCE` instead of
            :data:`MAX_ABS_DIFFERENCE`.

    Returns:
        ``{"file", "quantization", "max_abs_difference", "top1_agreement",
        "checked_images"}``, also written to ``export.json`` beside ``dest``; None (and no
        file) when the Keras backend cannot export to TFLite, the converter fails, or the
        outputs differ by more than the tolerance, in which case serving uses the Keras model.
    """
    if not _convert(model, dest, quantize):
        return None
    pixels = check_pixels.astype(np.float32)
    checked = model if reference is None else reference
    expected = np.asarray(checked(pixels, training=False))
    got = TFLiteRunner(dest)(pixels)
    difference = float(np.abs(got - expected).max())
    tolerance = MAX_QUANTIZED_DIFFERENCE if quantize else MAX_ABS_DIFFERENCE
    if difference > tolerance:
        logger.warning(
            "TFLite export differs from Keras by %.2e (> %.0e); not kept", difference, tolerance
        )
        dest.unlink()
        return None
    report = {
        "file": dest.name,
        "quantization": "dynamic-range int8 weights" if quantize else "none (float32)",
        "max_abs_difference": difference,
        "top1_agreement": float(np.mean(got.argmax(axis=1) == expected.argmax(axis=1))),
        "checked_images": len(pixels),
    }
    (dest.parent / EXPORT_FILE).write_text(json.dumps(report, indent=2))
    logger.info("exported %s (max abs difference %.2e on %d images)", dest, difference, len(pixels))
    return report


def _convert(model: Any, dest: Path, quantize: bool) -> bool:
    """Write the LiteRT flatbuffer; False (logged, no file) when it cannot be made."""
    import keras

    if keras.backend.backend() != "tensorflow":
        logger.warning("no TFLite export under the %s backend", keras.backend.backend())
        return False
    converter: dict[str, Any] = {}
    if quantize:
        import tensorflow as tf

        converter["optimizations"] = [tf.lite.Optimize.DEFAULT]
    try:
        model.export(str(dest), format="litert", verbose=False, **converter)
    except Exception:  # a converter failure must not throw away an hour of training
        logger.exception("TFLite export failed; serving will use the Keras model")
        dest.unlink(missing_ok=True)
        return False
    return True
