"""Temperature scaling, ECE, and scoring labelled images from a folder or a CSV."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from model.contract import CLASSES
from model.errors import DatasetError
from model.evaluation.metrics import load_labelled_images
from model.training.calibration import expected_calibration_error, fit_temperature, softmax
from tests.unit.helpers import write_fer_tree

pytestmark = pytest.mark.unit


def _overconfident(n: int = 20_000, temperature: float = 2.5) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose labels are drawn from softmax(logits / temperature)."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (n, 7))
    p = softmax(logits, temperature)
    labels = np.array([rng.choice(7, p=row) for row in p])
    return logits, labels


def test_temperature_is_recovered_and_fixes_calibration() -> None:
    logits, labels = _overconfident()
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(2.5, rel=0.05)
    before = expected_calibration_error(softmax(logits), labels)
    after = expected_calibration_error(softmax(logits, temperature), labels)
    assert before > 0.1 and after < 0.02


def test_ece_of_a_perfect_and_a_wrong_classifier() -> None:
    labels = np.array([0, 1, 2, 3])
    assert expected_calibration_error(np.eye(7)[labels], labels) == 0.0
    assert expected_calibration_error(np.eye(7)[(labels + 1) % 7], labels) == 1.0
    assert expected_calibration_error(np.zeros((0, 7)), np.array([])) == 0.0


def test_model_with_temperature_divides_the_logits() -> None:
    from model.training.network import NetworkConfig, build_model, logits_model, with_temperature

    model = build_model(NetworkConfig(filters=(4,), dense_units=8), (48, 48, 1), 7)
    x = np.random.default_rng(0).integers(0, 255, (3, 48, 48, 1)).astype(np.float32)
    logits = np.asarray(logits_model(model)(x))
    calibrated = np.asarray(with_temperature(model, 3.0)(x))
    assert np.allclose(calibrated, softmax(logits, 3.0), atol=1e-5)
    assert np.allclose(np.asarray(model(x)), softmax(logits), atol=1e-5)


def test_labelled_images_from_folders_and_csv(tmp_path: Path) -> None:
    root = write_fer_tree(tmp_path / "fer", per_class=2)
    x, y = load_labelled_images(root)  # DIR/test/<class>/
    assert x.shape == (14, 48, 48, 1) and np.bincount(y).tolist() == [2] * 7
    x, y = load_labelled_images(root / "train")  # DIR/<class>/
    assert len(y) == 14
    csv = tmp_path / "labels.csv"
    csv.write_text(
        "Path,Emotion\n"
        f"{root}/test/happy/test_happy_0.png,happy\n"
        "fer/test/sad/test_sad_1.png,5\n"  # relative to the CSV's folder; an index
    )
    x, y = load_labelled_images(csv)
    assert y.tolist() == [CLASSES.index("happy"), CLASSES.index("sad")]


def test_bad_labelled_input_is_named(tmp_path: Path) -> None:
    csv = tmp_path / "labels.csv"
    csv.write_text("file,label\nx.png,contempt\n")
    with pytest.raises(DatasetError, match=r"labels.csv:2: label 'contempt' is neither"):
        load_labelled_images(csv)
    csv.write_text("name,score\nx.png,1\n")
    with pytest.raises(DatasetError, match="needs a header with a path column"):
        load_labelled_images(csv)
    with pytest.raises(DatasetError, match="neither a folder"):
        load_labelled_images(tmp_path / "missing")


def test_fer_evaluate_prints_metrics_as_json(tmp_path: Path) -> None:
    from flows.cli import app
    from model.training.config import TrainConfig
    from model.training.fit import fit_model
    from model.training.network import NetworkConfig

    root = write_fer_tree(tmp_path / "fer", per_class=6)
    x, y = load_labelled_images(root / "train")
    config = TrainConfig(
        epochs=2, batch_size=16, network=NetworkConfig(filters=(8,), dense_units=16)
    )
    trained = fit_model(x, y, config, tmp_path)

    result = CliRunner().invoke(
        app, ["evaluate", "--model", str(trained.model_path), "--data", str(root)]
    )

    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["n_test"] == 42 and 0 <= report["accuracy"] <= 1
    assert set(report["per_class"]) == set(CLASSES)
    assert report["ece"] is not None and report["ece_uncalibrated"] is not None
