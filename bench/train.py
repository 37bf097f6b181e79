"""Training throughput: the platform's input pipeline vs a seed-style ``fit`` on Python lists.

Same network (the ``cpu`` profile's, with Keras's own BatchNorm layers except in the
``fused-bn`` variants), same images (a deterministic subset of the
cleaned training split), same batch size:

* seed    — the seed's way: a Python list of float32 images, ``np.array`` of it, one-hot
  labels, ``model.fit(x, y, shuffle=True)`` (Keras's array adapter), float32;
* platform-f32  — ``model.training.fit``'s pipeline (uint8 kept in memory, a shuffled index per
  epoch, one gather and cast per batch), float32;
* platform-bf16 — the same pipeline with the ``cpu`` profile's mixed_bfloat16 compute;
* platform-bf16-tf-threads — the bf16 pipeline with TensorFlow's default thread pools
  instead of ``model.training.fit.configure_threads`` (one op at a time, every core inside it);
* platform-bf16-fused-bn — the bf16 pipeline with ``NetworkConfig.fused_batch_norm``
  (TensorFlow's fused BatchNorm kernel instead of Keras 3's separate ops): the ``cpu``
  profile as the nightly run trains it on a CPU with native bfloat16;
* platform-f32-fused-bn — the same in float32: the ``cpu`` profile on a CPU without it
  (``precision="auto"``);
* platform-bf16-fused-bn-keras-aug — platform-bf16-fused-bn with Keras's ``RandomRotation``
  and ``RandomZoom`` (two warps, no jit support) instead of ``model.inference.layers.RandomAffine``
  (one warp): the ``cpu`` profile before the GPU path's jit-safe augmentation.

Each variant runs in a fresh process (thread pools are fixed once TensorFlow starts), one
after the other, and trains ``--epochs`` epochs; the first (tracing) is dropped and the table
gives the median images/s of the others, the ratio to the seed, and the CPU cores used
(process CPU time / wall time). The header says whether the CPU has native bfloat16.

    uv run python bench/train.py --images 6000 --epochs 3
    uv run python bench/train.py --variants platform-bf16-fused-bn,platform-bf16-fused-bn-keras-aug
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def _timer() -> object:
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch: int, logs: object = None) -> None:
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: object = None) -> None:
            self.seconds.append(time.perf_counter() - self.started)

    return EpochTimer()


def _keras_rotation_and_zoom(
    rotate_degrees: float, zoom: float, translate: float, seed: int, name: str
) -> object:
    """The augmentation ``model.inference.layers.RandomAffine`` replaced: Keras's two layers."""
    import keras

    return keras.Sequential(
        [
            keras.layers.RandomRotation(rotate_degrees / 360, seed=seed),
            keras.layers.RandomZoom(zoom, seed=seed + 1),
        ],
        name=name,
    )


def run(variant: str, x: np.ndarray, y: np.ndarray, epochs: int) -> list[float]:
    """Train one variant; return images/s of each epoch after the first."""
    import keras

    import model.inference.layers
    from model.training.config import TrainConfig
    from model.training.fit import build_network, input_pipeline, make_optimizer

    if variant.endswith("-keras-aug"):
        model.inference.layers.RandomAffine = _keras_rotation_and_zoom  # type: ignore[assignment,misc]
        variant = variant.removesuffix("-keras-aug")
    config = TrainConfig.profile("cpu")
    fused = variant.endswith("-fused-bn")
    network = config.network.model_copy(update={"fused_batch_norm": fused})
    config = config.model_copy(update={"network": network})
    precision = "mixed_bfloat16" if variant.startswith("platform-bf16") else "float32"
    keras.utils.set_random_seed(config.seed)
    model = build_network(config, precision)
    model.compile(optimizer=make_optimizer(config), loss="categorical_crossentropy")
    one_hot = np.eye(7, dtype=np.float32)[y]
    timer = _timer()
    if variant == "seed":
        images = [image.astype(np.float32) for image in x]  # the seed's list of arrays
        model.fit(
            np.array(images), one_hot, batch_size=config.batch_size, epochs=epochs,
            shuffle=True, callbacks=[timer], verbose=0,
        )  # fmt: skip
    else:
        data, steps = input_pipeline(x, one_hot, config.batch_size, config.seed)
        model.fit(data, steps_per_epoch=steps, epochs=epochs, callbacks=[timer], verbose=0)
    return [len(x) / s for s in timer.seconds[1:]]


VARIANTS = (
    "seed",
    "platform-f32",
    "platform-bf16",
    "platform-bf16-tf-threads",
    "platform-bf16-fused-bn",
    "platform-f32-fused-bn",
    "platform-bf16-fused-bn-keras-aug",
)


def measure(args: argparse.Namespace) -> dict[str, float | list[float]]:
    """Train ``args.variant`` in this process; images/s per timed epoch and cores used."""
    from model.data.cleaning import CleaningConfig, clean_dataset, cleaned_train_arrays
    from model.data.dataset import index_dataset
    from model.training.fit import configure_threads

    if not args.variant.endswith("tf-threads"):
        configure_threads()
    ref = index_dataset(args.dataset.resolve(), args.home, str(args.dataset))
    x, y = cleaned_train_arrays(ref, args.home, clean_dataset(ref, args.home, CleaningConfig()))
    pick = np.sort(np.random.default_rng(0).permutation(len(y))[: args.images])
    x, y = np.ascontiguousarray(x[pick]), y[pick]
    variant = args.variant.removesuffix("-tf-threads")
    wall, cpu = time.perf_counter(), time.process_time()
    rates = run(variant, x, y, args.epochs)
    cores = (time.process_time() - cpu) / (time.perf_counter() - wall)
    return {"rates": rates, "cores": cores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=REPO.parent / "shared" / "fer2013")
    parser.add_argument("--home", type=Path, default=Path.home() / ".fer")
    parser.add_argument("--images", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help="Comma-separated variants to run."
    )
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure(args)))
        return

    results = {}
    chosen = args.variants.split(",")
    if unknown := set(chosen) - set(VARIANTS):
        parser.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    for variant in chosen:
        child = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--variant", variant],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        results[variant] = json.loads(child.stdout.strip().splitlines()[-1])
    from model.training.hardware import cpu_flags, native_bfloat16

    baseline = "seed" if "seed" in results else chosen[0]
    seed = statistics.median(results[baseline]["rates"])
    native = "native" if native_bfloat16(cpu_flags()) else "no native (emulated)"
    print(
        f"training throughput, {args.images} images, {args.epochs - 1} timed epochs (median); "
        f"{native} bfloat16 on this CPU"
    )
    print(f"{'variant':<34}{'images/s':>9}{'vs ' + baseline[:6]:>11}{'cores':>7}   per epoch")
    for name, result in results.items():
        median = statistics.median(result["rates"])
        each = ", ".join(f"{r:.0f}" for r in result["rates"])
        print(f"{name:<34}{median:>9.0f}{median / seed:>10.2f}x{result['cores']:>7.2f}   {each}")


if __name__ == "__main__":
    main()
