"""One-shot GPU training run on a lent device machine, and the pack it needs to travel.

Two steps (docs/training.md gives the exact calls and what comes back):

    uv run python bench/device_train.py pack     # here: fills .device/ (about 45 MB)
    device run: bash bench/device_train.sh, carry [".device"], timeout_s 600

``pack`` writes ``.device/fer2013.tar.gz`` (the original JPEG files of ``train/`` and
``test/``; the device decodes them) and the wheels the device lacks into ``.device/wheels``
(``keras`` and its small pure-Python needs, ``pydantic``), for its Python 3.12.

``train`` (started by ``bench/device_train.sh`` on the device, under ``KERAS_BACKEND=jax``)
indexes and cleans the dataset as a retrain does, trains a profile (``gpu``) under a time
budget with the platform's own ``train_model``, scores the public test split with the model
file it ships, and writes to ``--out``: ``model.keras`` (float16 weights), ``manifest.json``
(the training record ``fer models import`` reads), ``metrics.json`` (test metrics,
throughput, wall times), ``history.json``, ``training_curves.png``, ``test_probabilities.npy``
and ``model_card.md``; the wrapper adds ``train.log``. The test split plays no part in
training or model selection: the best epoch and the temperature come from the validation
split carved from train.

The CPU dry run in the tests runs both steps on a tiny subset with a tiny budget.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

#: What the device's Python 3.12 lacks of the training path's imports (its image has numpy,
#: Pillow, scikit-learn, SciPy, OpenCV, h5py, ml-dtypes, rich, absl-py, tqdm, matplotlib);
#: versions are this environment's, so both ends run the locked Keras.
WHEELS = (
    "keras",
    "namex",
    "optree",
    "pydantic",
    "pydantic_core",
    "annotated_types",
    "typing_inspection",
    # pydantic needs a recent one; the image's version is not known ahead.
    "typing_extensions",
)
DEVICE_PYTHON = "3.12"
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)
#: bf16 matrix-product rate measured on an H200 of this workplace (769-798 TFLOP/s on random
#: data; the datasheet says ~990 dense): the ceiling the throughput is compared with.
H200_BF16_TFLOPS = 790.0


# ---------------------------------------------------------------------------------------- pack
def pack_dataset(data: Path, dest: Path) -> Path:
    """Archive a FER-layout folder's ``train/`` and ``test/`` as ``fer2013/...`` (tar.gz).

    Args:
        data: the dataset folder.
        dest: the archive to write.

    Returns:
        ``dest``.
    """
    for split in ("train", "test"):
        if not (data / split).is_dir():
            raise SystemExit(f"{data} has no {split}/ folder; pass --data <FER-layout folder>")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    with tarfile.open(partial, "w:gz", compresslevel=6) as archive:
        for split in ("train", "test"):
            for path in sorted((data / split).rglob("*")):
                if path.is_file():
                    archive.add(path, f"fer2013/{path.relative_to(data)}", recursive=False)
    partial.replace(dest)
    return dest


def _pip() -> list[str]:
    """A pip to download with: this interpreter's, else the system ``python3``'s."""
    for python in (sys.executable, "python3"):
        probe = subprocess.run([python, "-m", "pip", "--version"], capture_output=True)
        if probe.returncode == 0:
            return [python, "-m", "pip"]
    raise SystemExit("no pip found to download the device's wheels; install pip for python3")


def download_wheels(dest: Path) -> list[Path]:
    """Download the wheels in :data:`WHEELS` for the device's Python, at this env's versions.

    Args:
        dest: folder for the wheels (emptied first).

    Returns:
        The wheel files.
    """
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in WHEELS]
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    command = [
        *_pip(),
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        DEVICE_PYTHON,
        "--implementation",
        "cp",
        *platforms,
        "-d",
        str(dest),
        *pins,
    ]
    subprocess.run(command, check=True)
    return sorted(dest.glob("*.whl"))


def pack(args: argparse.Namespace) -> None:
    """Fill the pack folder with the dataset archive and (unless --no-wheels) the wheels."""
    started = time.perf_counter()
    archive = pack_dataset(args.data, args.dest / "fer2013.tar.gz")
    wheels = [] if args.no_wheels else download_wheels(args.dest / "wheels")
    total = sum(p.stat().st_size for p in [archive, *wheels])
    print(
        f"packed {archive} ({archive.stat().st_size / 1e6:.1f} MB) and {len(wheels)} wheels "
        f"in {time.perf_counter() - started:.0f} s: {total / 1e6:.1f} MB to carry"
    )
    print('device run: command "bash bench/device_train.sh", carry [".device"], timeout_s 600')


# --------------------------------------------------------------------------------------- train
def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``update`` laid over it, nested dicts merged key by key."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def build_config(profile: str, overrides: dict[str, Any], budget_minutes: float | None) -> Any:
    """The profile's TrainConfig with the overrides (validated) and the time budget."""
    from model.training.config import TrainConfig

    merged = deep_merge(TrainConfig.profile(profile).model_dump(), overrides)  # type: ignore[arg-type]
    if budget_minutes is not None:
        merged["time_budget_minutes"] = budget_minutes
    return TrainConfig.model_validate(merged)


def forward_flops(network: Any) -> float:
    """Floating-point operations of one forward pass of one image (convolutions and dense).

    Counted from the layers' static shapes (2 per multiply-add); BatchNorm, pooling and
    activations are left out (a few percent).
    """
    from keras import layers

    total = 0.0
    for layer in network._flatten_layers():
        if isinstance(layer, layers.Conv2D):
            _, height, width, _ = layer.output.shape
            k_h, k_w, c_in, c_out = layer.kernel.shape
            total += 2.0 * height * width * k_h * k_w * c_in * c_out
        elif isinstance(layer, layers.Dense):
            total += 2.0 * layer.kernel.shape[0] * layer.kernel.shape[1]
    return total


def throughput(
    history: dict[str, list[float]], train_images: int, flops: float, peak_tflops: float | None
) -> dict[str, Any]:
    """Training images/s over the epochs after the first (which compiles), and the FLOP rate.

    Args:
        history: per-epoch metrics with ``epoch_seconds`` (training plus validation).
        train_images: images per epoch.
        flops: forward FLOPs per training image; a training step costs about three times it.
        peak_tflops: the chip's ceiling to compare with, or None (the CPU).

    Returns:
        Figures for ``metrics.json``.
    """
    seconds = history.get("epoch_seconds", [])
    steady = seconds[1:] or seconds
    if not steady:
        return {}
    per_epoch = statistics.median(steady)
    rate = train_images / per_epoch
    achieved = 3 * flops * rate / 1e12
    return {
        "train_images_per_epoch": train_images,
        "first_epoch_seconds": seconds[0],
        "median_epoch_seconds": per_epoch,
        "images_per_second": rate,
        "forward_gflop_per_image": flops / 1e9,
        "training_tflops": achieved,
        "peak_tflops": peak_tflops,
        "fraction_of_peak": achieved / peak_tflops if peak_tflops else None,
    }


def _record(
    ref: Any, config: Any, result: Any, history: dict[str, Any], metrics: Any, speed: dict
) -> dict[str, Any]:
    """The training record ``fer models import`` reads (``manifest.json``)."""
    from model.contract import CLASSES
    from model.registry.lineage import cleaning_summary
    from model.version import code_version

    return {
        "classes": list(CLASSES),
        "dataset": {"fingerprint": ref.fingerprint, "source": ref.source},
        "train_config": config.model_dump(mode="json"),
        "training": {
            "epochs_run": result.epochs_run,
            "precision": result.precision,
            "backend": result.backend,
            "hardware": result.hardware,
            "best_val_accuracy": result.best_val_accuracy,
            "temperature": result.temperature,
            "throughput": speed,
            "history": history,
        },
        "cleaning": cleaning_summary(result, "(left on the device)"),
        "metrics": metrics.model_dump(),
        "code_version": code_version(),
    }


def ship_model(result: Any, ref: Any, home: Path, out: Path) -> Any:
    """Write the compact model file, then score exactly that file on the public test split.

    Args:
        result: the training run.
        ref: the dataset.
        home: the platform home of the run (decoded arrays).
        out: the results folder.

    Returns:
        The shipped model's test metrics (its probabilities go to ``test_probabilities.npy``).
    """
    import numpy as np

    from model.data.dataset import arrays_dir, load_split
    from model.evaluation.metrics import score_model
    from model.inference.predictor import load_keras_model, save_compact

    save_compact(load_keras_model(result.model_path), out / "model.keras")
    shipped = load_keras_model(out / "model.keras")
    x, y = load_split(ref, "test", arrays_dir(home))
    metrics = score_model(shipped, None, x, y, ref.fingerprint)
    probabilities = shipped.predict(np.asarray(x, np.float32), batch_size=1024, verbose=0)
    np.save(out / "test_probabilities.npy", probabilities.astype(np.float32))
    return metrics


def write_record(out: Path, ref: Any, config: Any, result: Any, metrics: Any) -> dict[str, Any]:
    """Write the training record, history, curves and model card; return the throughput."""
    from model.registry.card import model_card
    from model.training.hardware import gpu_info
    from model.training.network import build_model

    history = json.loads(result.history_path.read_text())
    network = build_model(config.network, (48, 48, 1), 7, config.seed)
    peak = H200_BF16_TFLOPS if gpu_info() is not None else None
    speed = throughput(history, result.train_images, forward_flops(network), peak)
    record = _record(ref, config, result, history, metrics, speed)
    (out / "manifest.json").write_text(json.dumps(record, indent=2))
    (out / "history.json").write_text(json.dumps(history, indent=2))
    (out / "model_card.md").write_text(model_card(record))
    shutil.copy(result.run_dir / "training_curves.png", out / "training_curves.png")
    return speed


def train(args: argparse.Namespace) -> None:
    """Index, train, ship and score, and write the results to ``--out``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    started = time.perf_counter()
    # Keras (and with it JAX's threads) only after the dataset was decoded in forked workers.
    from model.data.dataset import index_dataset

    config = build_config(args.profile, json.loads(args.set), args.budget_minutes)
    home = args.work / "home"
    ref = index_dataset(args.data, home, source=args.source)
    indexed = time.perf_counter()
    import keras

    from model.training.fit import train_model

    result = train_model(ref, config, home)
    trained = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    metrics = ship_model(result, ref, home, args.out)
    speed = write_record(args.out, ref, config, result, metrics)
    finished = time.perf_counter()
    summary = {
        "keras": keras.__version__,
        "backend": result.backend,
        "hardware": result.hardware,
        "precision": result.precision,
        "epochs_run": result.epochs_run,
        "best_val_accuracy": result.best_val_accuracy,
        **speed,
        "index_seconds": indexed - started,
        "train_seconds": trained - indexed,
        "score_and_save_seconds": finished - trained,
        "total_seconds": finished - started,
    }
    (args.out / "metrics.json").write_text(
        json.dumps({"test": metrics.model_dump(), "run": summary}, indent=2)
    )
    _print_summary(summary, metrics)


def _print_summary(summary: dict[str, Any], metrics: Any) -> None:
    """The table that ends the output (the device tool returns the output's tail)."""
    recall = " ".join(f"{name} {m.recall:.2f}" for name, m in metrics.per_class.items())
    lines = [
        ("hardware", f"{summary['hardware']} ({summary['backend']}, {summary['precision']})"),
        ("epochs", f"{summary['epochs_run']} in {summary['train_seconds']:.0f} s of training"),
        (
            "images/s",
            f"{summary.get('images_per_second', 0):,.0f} "
            f"({summary.get('training_tflops', 0):.1f} TFLOP/s"
            + (
                f", {summary['fraction_of_peak']:.1%} of {summary['peak_tflops']:.0f}"
                if summary.get("fraction_of_peak")
                else ""
            )
            + ")",
        ),
        ("validation accuracy", f"{summary['best_val_accuracy']:.4f} (best epoch)"),
        (
            "public test accuracy",
            f"{metrics.accuracy:.4f} (macro F1 {metrics.macro_f1:.4f}, {metrics.n_test} images)",
        ),
        ("test recall", recall),
        ("wall", f"{summary['total_seconds']:.0f} s in all"),
    ]
    print("\n== device training run ==")
    for name, value in lines:
        print(f"{name:>22}  {value}")


# ----------------------------------------------------------------------------------------- cli
def main() -> None:
    """Parse the command line and run ``pack`` or ``train``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack", help="Fill .device/ with the dataset and wheels.")
    packing.add_argument(
        "--data",
        type=Path,
        default=REPO.parent / "shared" / "fer2013",
        help="FER-layout folder to pack (default: ../shared/fer2013).",
    )
    packing.add_argument(
        "--dest",
        type=Path,
        default=REPO / ".device",
        help="Pack folder (default: .device, git-ignored; carry it).",
    )
    packing.add_argument(
        "--no-wheels",
        action="store_true",
        help="Only the dataset (for a dry run where Keras is installed).",
    )
    training = commands.add_parser("train", help="Train and score (on the device).")
    training.add_argument("--data", type=Path, required=True, help="FER-layout folder.")
    training.add_argument("--out", type=Path, required=True, help="Results folder ($OUT).")
    training.add_argument(
        "--work",
        type=Path,
        default=Path("/tmp/fer-device"),
        help="Scratch folder (platform home, decoded arrays).",
    )
    training.add_argument("--profile", default="gpu", choices=("quick", "cpu", "gpu"))
    training.add_argument(
        "--budget-minutes",
        type=float,
        default=None,
        help="Training time budget (default: the profile's).",
    )
    training.add_argument(
        "--set",
        default="{}",
        help="JSON laid over the profile's TrainConfig, e.g. "
        '\'{"epochs": 2, "network": {"filters": [8, 16]}}\'.',
    )
    training.add_argument(
        "--source",
        default="device run: fer2013.tar.gz",
        help="Where the data came from, for the record.",
    )
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    pack(args) if args.command == "pack" else train(args)


if __name__ == "__main__":
    main()
