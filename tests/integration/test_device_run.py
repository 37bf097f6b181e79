"""The one-shot device run, dry-run on the CPU, and `fer models import` of what it made.

The dry run is the real script (``bench/device_train.py`` packed, ``bench/device_train.sh``
run) under Keras's JAX backend on the 30/10-per-class subset with a tiny network and budget,
so it cannot rot between the sessions that are lent a GPU.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from flows.cli import app
from model.registry.store import ModelRegistry

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TINY = {"epochs": 3, "batch_size": 32, "network": {"filters": [8, 16], "dense_units": 16}}
#: What the device tool brings back: at most 8 files of at most 16 MB.
RESULTS = {
    "model.keras",
    "manifest.json",
    "metrics.json",
    "history.json",
    "training_curves.png",
    "test_probabilities.npy",
    "model_card.md",
    "train.log",
}


@pytest.fixture(scope="module")
def device_run(tmp_path_factory: pytest.TempPathFactory, fer_subset: Path) -> Path:
    """``pack`` the subset (no wheels: Keras is installed here), then run the wrapper."""
    root = tmp_path_factory.mktemp("device")
    pack, out = root / "pack", root / "out"
    # The device has no TensorFlow: make importing it fail, as it would there.
    blocker = root / "no-tensorflow" / "tensorflow"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('no TensorFlow on the device')\n")
    subprocess.run(
        [sys.executable, "bench/device_train.py", "pack", "--data", str(fer_subset),
         "--dest", str(pack), "--no-wheels"],
        cwd=ROOT, check=True, timeout=120,
    )  # fmt: skip
    env = {
        **os.environ,
        "OUT": str(out),
        "FER_DEVICE_PACK": str(pack),
        "FER_DEVICE_WORK": str(root / "work"),
        "FER_DEVICE_PYTHON": sys.executable,
        "KERAS_BACKEND": "jax",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(blocker.parent),
    }
    done = subprocess.run(
        ["bash", "bench/device_train.sh", "--budget-minutes", "2", "--set", json.dumps(TINY)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return out


def test_the_dry_run_brings_back_every_result_within_the_transfer_limits(
    device_run: Path,
) -> None:
    files = {path.name: path.stat().st_size for path in device_run.iterdir()}
    assert set(files) == RESULTS
    assert len(files) <= 8 and max(files.values()) <= 16 * 1024**2
    log = (device_run / "train.log").read_text()
    assert "== device training run ==" in log and "public test accuracy" in log


def test_the_dry_run_trained_under_jax_and_its_loss_fell(device_run: Path) -> None:
    record = json.loads((device_run / "manifest.json").read_text())
    training = record["training"]
    assert training["backend"] == "jax" and training["epochs_run"] == 3
    assert training["history"]["loss"][-1] < training["history"]["loss"][0]
    assert record["train_config"]["network"]["filters"] == [8, 16]
    assert record["train_config"]["test_time_shifts"] is True  # the gpu profile's ten crops
    run = json.loads((device_run / "metrics.json").read_text())["run"]
    assert run["images_per_second"] > 0 and run["forward_gflop_per_image"] > 0
    assert run["peak_tflops"] is None  # no GPU here: no fraction of a chip is claimed
    assert record["metrics"]["n_test"] == 70


def test_the_jax_model_loads_under_tensorflow_with_the_same_predictions(
    device_run: Path, fer_subset: Path, tmp_path: Path
) -> None:
    import keras

    from model.data.dataset import arrays_dir, index_dataset, load_split
    from model.inference.predictor import load_keras_model

    assert keras.backend.backend() == "tensorflow"
    ref = index_dataset(fer_subset, tmp_path, "subset")
    record = json.loads((device_run / "manifest.json").read_text())
    assert record["dataset"]["fingerprint"] == ref.fingerprint
    x, y = load_split(ref, "test", arrays_dir(tmp_path))
    model = load_keras_model(device_run / "model.keras")
    here = np.asarray(model(np.asarray(x, np.float32), training=False))
    there = np.load(device_run / "test_probabilities.npy")
    assert np.abs(here - there).max() < 1e-4
    accuracy = float(np.mean(here.argmax(axis=1) == y))
    assert accuracy == pytest.approx(record["metrics"]["accuracy"])


def _import(model: Path, dataset: Path, *gate: str) -> tuple[int, str]:
    args = ["models", "import", str(model), "--source", "dry run", "--dataset", str(dataset)]
    result = CliRunner().invoke(app, [*args, *gate])
    return result.exit_code, result.output


def test_import_publishes_and_promotes_and_a_failed_gate_keeps_the_champion(
    registry: ModelRegistry, device_run: Path, fer_subset: Path
) -> None:
    code, output = _import(device_run / "model.keras", fer_subset, "--min-accuracy", "0")
    assert code == 0, output
    version = output.strip().splitlines()[-1].removeprefix("promoted model version ")
    assert registry.champion().version == version
    manifest = registry.read_manifest(version)
    device = json.loads((device_run / "manifest.json").read_text())
    assert manifest["dataset"]["fingerprint"] == device["dataset"]["fingerprint"]
    assert manifest["training"]["backend"] == "jax" and manifest["training"]["source"] == "dry run"
    assert manifest["training"]["hardware"] == device["training"]["hardware"]
    assert manifest["imported"]["file"] == "model.keras"
    assert manifest["train_config"] == device["train_config"]
    assert {"model.keras", "serving.tflite", "model_card.md"} <= set(manifest["files"])
    assert manifest["metrics"]["runtime"] == "tflite" and manifest["metrics"]["n_test"] == 70
    assert registry.verify_version(version) == dict.fromkeys(manifest["files"], "ok")

    # The same model against a floor it cannot reach: nothing new, the champion stays.
    code, output = _import(device_run / "model.keras", fer_subset, "--min-accuracy", "0.99")
    assert code == 1 and "gate failed" in output and "below the floor 0.9900" in output
    assert registry.list_versions() == [version]
    assert registry.champion().version == version


def _refused_model(kind: str, device_run: Path, folder: Path) -> Path:
    """A model folder that must be refused, and what it holds."""
    import keras

    folder.mkdir()
    model = folder / "model.keras"
    record = json.loads((device_run / "manifest.json").read_text())
    inputs = keras.Input((48, 48, 1))
    flat = keras.layers.Flatten()
    if kind == "not keras":
        model.write_bytes(b"this is not a model" * 100)
    elif kind == "input shape":
        small = keras.Input((32, 32, 1))
        keras.Model(small, keras.layers.Dense(7, "softmax")(flat(small))).save(model)
    elif kind == "class count":
        keras.Model(inputs, keras.layers.Dense(5, "softmax")(flat(inputs))).save(model)
    elif kind == "lambda":
        doubled = keras.layers.Lambda(lambda t: t * 2)(inputs)
        keras.Model(inputs, keras.layers.Dense(7, "softmax")(flat(doubled))).save(model)
    else:
        shutil.copy(device_run / "model.keras", model)
    if kind == "other data":
        record["dataset"]["fingerprint"] = "0" * 64
    if kind == "incomplete record":
        del record["train_config"]
    if kind != "no record":
        (folder / "manifest.json").write_text(json.dumps(record))
    return model


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("not keras", "is not a Keras model file (a .keras zip archive)"),
        ("input shape", "maps (None, 32, 32, 1) to (None, 7)"),
        ("class count", "maps (None, 48, 48, 1) to (None, 5)"),
        ("lambda", "safe mode refused it: it holds a Lambda layer"),
        ("other data", "was trained on dataset 000000000000 but the configured dataset"),
        ("no record", "manifest.json not found"),
        ("incomplete record", "manifest.json lacks train_config"),
    ],
)
def test_import_refuses_a_wrong_file_and_publishes_nothing(
    registry: ModelRegistry,
    device_run: Path,
    fer_subset: Path,
    tmp_path: Path,
    kind: str,
    message: str,
) -> None:
    model = _refused_model(kind, device_run, tmp_path / "candidate")
    code, output = _import(model, fer_subset, "--min-accuracy", "0")
    assert code == 1 and message in " ".join(output.split()), output
    assert registry.list_versions() == [] and registry.champion() is None
