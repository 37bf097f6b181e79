"""Single-face inference latency of each serving path, same model, same process.

Paths (all on one 48 x 48 face unless the batch says otherwise):

* keras-predict     — ``model.predict(x)``, the seed's way;
* keras-call        — calling the Keras model directly (eager);
* keras-tf-function — the call traced once with ``tf.function``;
* tflite-f32-Nt     — a float32 LiteRT (TFLite) export, N interpreter threads;
* tflite-int8w-Nt   — the export with int8 weights (dynamic-range quantization), what
                      training now stores for serving (``TrainConfig.quantize_export``);
* run-export-Nt     — with ``--model``, the run's own ``serving.tflite`` when it has one
                      (BatchNorm folded; float32 or int8 weights as that run chose).

Each path is warmed up, then timed ``--calls`` times; the table gives the median and p90 in
milliseconds per face. With ``--batch 8`` the per-face time of an 8-face batch is added for
the fastest paths (a photo with several faces is one batched call in serving).

    uv run python bench/infer.py                       # the cpu profile's network
    uv run python bench/infer.py --model PATH/model.keras
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def _latencies(call: Callable[[np.ndarray], object], pixels: np.ndarray, calls: int) -> list[float]:
    for _ in range(10):
        call(pixels)
    seconds = []
    for _ in range(calls):
        started = time.perf_counter()
        call(pixels)
        seconds.append(time.perf_counter() - started)
    return [1000 * s / len(pixels) for s in seconds]


def _model(path: Path | None) -> object:
    if path is not None:
        from model.inference.predictor import load_keras_model

        return load_keras_model(path)
    from model.contract import CLASSES, IMAGE_SIZE
    from model.training.config import TrainConfig
    from model.training.network import build_model, with_temperature

    config = TrainConfig.profile("cpu")
    network = build_model(config.network, (IMAGE_SIZE, IMAGE_SIZE, 1), len(CLASSES), 0)
    return with_temperature(network, 1.0, config.test_time_flip)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a model.keras (default: the cpu network)")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()

    import tensorflow as tf

    from model.contract import TFLITE_FILE
    from model.inference.tflite import TFLiteRunner
    from model.training.export import export_tflite
    from model.training.fit import configure_threads

    configure_threads()
    model = _model(args.model)
    rng = np.random.default_rng(0)
    one = rng.integers(0, 256, (1, 48, 48, 1)).astype(np.float32)
    many = rng.integers(0, 256, (args.batch, 48, 48, 1)).astype(np.float32)
    traced = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    folder = Path(tempfile.mkdtemp(prefix="fer-bench-"))
    check = rng.integers(0, 256, (64, 48, 48, 1)).astype(np.float32)
    exports = {"f32": folder / "f32" / TFLITE_FILE, "int8w": folder / "int8w" / TFLITE_FILE}
    for kind, path in exports.items():
        path.parent.mkdir()
        if export_tflite(model, path, check, quantize=kind == "int8w") is None:
            raise SystemExit(f"the {kind} export failed or did not match Keras")
    run_export = args.model.with_name(TFLITE_FILE) if args.model else None
    if run_export is not None and run_export.is_file():
        exports["run-export"] = run_export
    paths: dict[str, Callable[[np.ndarray], object]] = {
        "keras-predict": lambda x: model.predict(x, verbose=0),
        "keras-call": lambda x: model(x, training=False),
        "keras-tf-function": traced,
    }
    for kind, path in exports.items():
        label = kind if kind == "run-export" else f"tflite-{kind}"
        for threads in (1, 2):
            paths[f"{label}-{threads}t"] = TFLiteRunner(path, threads=threads)
    batched = [name for name in paths if name not in ("keras-predict", "keras-call")]
    print(f"inference latency, ms per face, {args.calls} calls each (median / p90)")
    print(f"{'path':<19}{'1 face':>16}{f'{args.batch} faces (per face)':>29}")
    baseline = None
    for name, call in paths.items():
        single = _latencies(call, one, args.calls if name != "keras-predict" else 50)
        median = statistics.median(single)
        baseline = baseline or median
        cells = f"{median:7.2f} / {np.percentile(single, 90):6.2f}"
        if name in batched:
            per_face = _latencies(call, many, args.calls)
            cells += f"   {statistics.median(per_face):7.3f} / {np.percentile(per_face, 90):6.3f}"
        print(f"{name:<19}{cells}   ({baseline / median:.1f}x vs predict)")


if __name__ == "__main__":
    main()
