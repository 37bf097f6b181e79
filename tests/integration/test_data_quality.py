"""Data-quality checks on the full real FER2013 copy, with the default bounds, and on faults.

Each fault is injected into a *view* of the real dataset: a tree of symbolic links to the
read-only files (nothing is copied), in which a few entries are replaced, added or removed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from model.contract import CLASSES, SPLITS
from model.data.cleaning import CleaningConfig, clean_dataset, cleaned_train_arrays
from model.data.dataset import arrays_dir, index_dataset, load_split
from validation.config import QualityConfig
from validation.report import QualityReport
from validation.run import validate_ref

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One platform home for the module: the GX context is made once."""
    return tmp_path_factory.mktemp("dq_home")


@pytest.fixture(scope="module")
def real_report(fer2013_root: Path, home: Path) -> QualityReport:
    ref = index_dataset(fer2013_root, home, str(fer2013_root))
    return validate_ref(ref, home, "real-fer2013", QualityConfig())


def _view(source: Path, target: Path) -> Path:
    """Link every file of ``source`` into a fresh tree at ``target``."""
    for split in SPLITS:
        for label in CLASSES:
            folder = target / split / label
            folder.mkdir(parents=True)
            with os.scandir(source / split / label) as entries:
                for entry in entries:
                    os.symlink(entry.path, folder / entry.name)
    return target


def _files(folder: Path) -> list[Path]:
    return sorted(folder.iterdir())


def corrupt_jpeg(root: Path) -> None:
    victim = _files(root / "train" / "happy")[0]
    data = victim.read_bytes()
    victim.unlink()
    victim.write_bytes(data[: len(data) // 2])  # a download cut short


def text_named_jpg(root: Path) -> None:
    (root / "test" / "fear" / "README.jpg").write_text("these are not the images you want\n")


def image_64x64(root: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "train" / "sad" / "big.jpg")


def empty_class(root: Path) -> None:
    for path in _files(root / "train" / "disgust"):
        path.unlink()


def missing_class(root: Path) -> None:
    shutil.rmtree(root / "test" / "surprise")


def train_copies_in_test(root: Path) -> None:
    # Copies of train images added to test until they are 20 % of it, class by class.
    for label in CLASSES:
        test_count = len(_files(root / "test" / label))
        for path in _files(root / "train" / label)[: test_count // 4]:  # n / (n + test) = 0.2
            os.symlink(path.resolve(), root / "test" / label / f"copy_{path.name}")


def imbalance_10x_worse(root: Path) -> None:
    files = _files(root / "train" / "disgust")
    for path in files[len(files) // 10 :]:
        path.unlink()


FAULTS = {
    corrupt_jpeg: {"images_decode"},
    text_named_jpg: {"images_decode"},
    image_64x64: {"image_width", "image_height"},
    empty_class: {"train_class_counts", "train_class_shares"},
    missing_class: {"test_classes_present"},
    train_copies_in_test: {"leakage_bounded"},
    imbalance_10x_worse: {"imbalance_ratio", "train_class_counts", "train_class_shares"},
}


def test_real_dataset_passes_with_the_documented_figures(real_report: QualityReport) -> None:
    assert real_report.success, [o.message for o in real_report.critical_failures]
    summary = real_report.summary
    assert (summary["train_images"], summary["test_images"]) == (28_709, 3_589)
    assert summary["imbalance_ratio"] == pytest.approx(16.55, abs=0.01)
    assert (summary["duplicate_groups"], summary["extra_copies"]) == (1_273, 1_532)
    assert (summary["cross_split_groups"], summary["leaked_test_images"]) == (270, 280)
    assert (summary["conflicting_label_groups"], summary["near_blank_images"]) == (47, 13)
    # Leakage under the bound, copies, conflicts and blank frames are reported, not fatal.
    assert {o.name for o in real_report.warnings} == {
        "leakage_none",
        "copies_none",
        "label_conflicts_none",
        "near_blank_none",
    }
    leak = next(o for o in real_report.warnings if o.name == "leakage_none")
    assert leak.message.startswith("leakage_none: 280 of 3,589 (7.8%) test images")


@pytest.mark.parametrize("fault", list(FAULTS), ids=lambda fault: fault.__name__)
def test_each_fault_fails_the_check_that_names_it(
    fault: object, fer2013_root: Path, home: Path, tmp_path: Path
) -> None:
    root = _view(fer2013_root, tmp_path / "view")
    fault(root)  # type: ignore[operator]
    ref = index_dataset(root, home, str(root))

    report = validate_ref(ref, home, fault.__name__, QualityConfig())  # type: ignore[attr-defined]

    assert not report.success
    assert {o.name for o in report.critical_failures} == FAULTS[fault]  # type: ignore[index]


def test_training_set_handed_to_train_shares_no_pixels_with_test(
    fer2013_root: Path, home: Path
) -> None:
    ref = index_dataset(fer2013_root, home, str(fer2013_root))

    cleaned = clean_dataset(ref, home, CleaningConfig())
    x, _ = cleaned_train_arrays(ref, home, cleaned)

    x_test, _ = load_split(ref, "test", arrays_dir(home))
    train_hashes = {hashlib.sha256(image.tobytes()).digest() for image in x}
    test_hashes = {hashlib.sha256(image.tobytes()).digest() for image in x_test}
    assert len(x) == cleaned.train_after == 27_169
    assert train_hashes.isdisjoint(test_hashes)
    assert len(train_hashes) == len(x)


def test_cli_validate_prints_the_table_and_exits_1_on_a_critical_failure(
    fer2013_root: Path, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.cli import app

    monkeypatch.setenv("FER_HOME", str(home))
    runner = CliRunner()

    good = runner.invoke(app, ["data", "validate", str(fer2013_root)])

    assert good.exit_code == 0, good.output
    assert "happy" in good.output and "7,215" in good.output and "25.1%" in good.output
    assert "WARNING  leakage_none: 280 of 3,589" in good.output
    assert "report: " in good.output and "data quality passed" in good.output
    assert "cleaning keeps 27,169 of 28,709 training images" in good.output
    report = Path(good.output.split("report: ")[1].split()[0])
    assert report.is_file() and report.name == "index.html"

    root = _view(fer2013_root, tmp_path / "view")
    missing_class(root)
    bad = runner.invoke(app, ["data", "validate", str(root)])

    assert bad.exit_code == 1
    assert "CRITICAL test_classes_present: class folder(s) test/surprise/ missing" in bad.output
    assert "FAILED critical check(s): test_classes_present" in bad.output


def test_cli_rejects_a_bad_quality_config(tmp_path: Path) -> None:
    from flows.cli import app

    config = tmp_path / "quality.json"
    config.write_text('{"max_imbalance_ratio": 0.5}')

    result = CliRunner().invoke(
        app, ["data", "validate", str(tmp_path), "--quality-config", str(config)]
    )

    assert result.exit_code == 1
    assert "is not a valid QualityConfig (max_imbalance_ratio:" in result.output
