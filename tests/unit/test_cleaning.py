from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.data.cleaning import (
    CleaningConfig,
    PixelRecord,
    clean_dataset,
    clean_train,
    cleaned_train_arrays,
    duplicate_stats,
    read_cleaning,
    verify_plan,
)
from model.data.dataset import arrays_dir, index_dataset, load_split
from model.errors import DatasetError
from tests.unit.helpers import write_fer_tree

pytestmark = pytest.mark.unit


def _record(split: str, label: str, name: str, pixels: str, std: float = 20.0) -> PixelRecord:
    return PixelRecord(split, label, f"{split}/{label}/{name}", pixels, std)


def test_rules_and_raw_figures() -> None:
    records = [
        _record("test", "happy", "t1.jpg", "A"),
        _record("train", "happy", "a.jpg", "A"),  # copy of a test image
        _record("train", "sad", "b.jpg", "B"),
        _record("train", "sad", "c.jpg", "B"),  # duplicate within train
        _record("train", "fear", "d.jpg", "C"),
        _record("train", "angry", "e.jpg", "C"),  # same pixels, other label
        _record("train", "happy", "f.jpg", "D", std=0.4),  # blank
        _record("train", "happy", "g.jpg", "", std=0.0),  # unreadable
        _record("train", "sad", "h.jpg", "E"),
    ]
    report = clean_train(records, CleaningConfig())
    assert report.removed == {
        "unreadable": ["train/happy/g.jpg"],
        "near_blank": ["train/happy/f.jpg"],
        "label_conflict": ["train/angry/e.jpg", "train/fear/d.jpg"],
        "in_test": ["train/happy/a.jpg"],
        "duplicate": ["train/sad/c.jpg"],
    }
    assert (report.train_before, report.train_after) == (8, 2)
    stats = duplicate_stats(records, CleaningConfig().near_blank_std)
    assert (stats.groups, stats.extra_copies, stats.cross_split_groups) == (3, 3, 1)
    assert (stats.leaked_test_images, stats.conflicting_label_groups, stats.near_blank) == (1, 1, 1)


def test_training_set_shares_no_pixels_with_test(tmp_path: Path) -> None:
    root = write_fer_tree(tmp_path / "fer", per_class=3)
    # Leak: test images copied into train under other names (and as JPEG-free PNG copies).
    for index, path in enumerate(sorted((root / "test").rglob("*.png"))[:5]):
        shutil.copy(path, root / "train" / path.parent.name / f"leak_{index}.png")
    shutil.copy(root / "train/sad/train_sad_0.png", root / "train/sad/copy.png")
    Image.fromarray(np.full((48, 48), 9, np.uint8)).save(root / "train/fear/blank.png")
    home = tmp_path / "home"
    ref = index_dataset(root, home, str(root))

    cleaned = clean_dataset(ref, home, CleaningConfig())
    x, y = cleaned_train_arrays(ref, home, cleaned)
    report = read_cleaning(cleaned.report_path)

    def hashes(pixels: np.ndarray) -> set[str]:
        return {hashlib.sha256(row.tobytes()).hexdigest() for row in pixels[..., 0]}

    x_test, _ = load_split(ref, "test", arrays_dir(home))
    assert hashes(x) & hashes(x_test) == set()
    assert len(hashes(x)) == len(x)  # no duplicates either
    assert report.removed_counts == {
        "unreadable": 0,
        "near_blank": 1,
        "label_conflict": 0,
        "in_test": 5,
        "duplicate": 1,
    }
    assert len(y) == report.train_after == 21
    stored = json.loads((ref.manifest_path.parent / "cleaning.json").read_text())
    assert sorted(stored["removed"]["in_test"]) == sorted(
        f"train/{p.parent.name}/{p.name}" for p in (root / "train").rglob("leak_*.png")
    )
    assert cleaned.train_after == 21 and cleaned.removed_counts == report.removed_counts


def test_the_plan_is_checked_independently_of_its_rules() -> None:
    """A plan that kept a test image (a broken rule) is refused before anything trains on it."""
    records = [
        _record("test", "sad", "t.jpg", "A"),
        _record("train", "sad", "leak.jpg", "A"),
        _record("train", "sad", "ok.jpg", "B"),
    ]
    good = clean_train(records, CleaningConfig())
    verify_plan(records, good)  # the rules removed the leak
    broken = good.model_copy(update={"removed": {**good.removed, "in_test": []}})
    with pytest.raises(DatasetError, match=r"1 training image\(s\) kept by cleaning.*leak.jpg"):
        verify_plan(records, broken)


def test_training_reads_the_plan_and_refuses_one_for_other_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_fer_tree(tmp_path / "fer", per_class=2)
    shutil.copy(root / "train/sad/train_sad_0.png", root / "train/sad/copy.png")
    home = tmp_path / "home"
    ref = index_dataset(root, home, str(root))
    cleaned = clean_dataset(ref, home, CleaningConfig())

    def hashing_again(*_: object) -> None:
        raise AssertionError("training hashed the pixels again instead of reading the plan")

    import model.data.cleaning

    monkeypatch.setattr(model.data.cleaning, "pixel_records", hashing_again)
    monkeypatch.setattr(model.data.cleaning, "clean_train", hashing_again)
    x, _ = cleaned_train_arrays(ref, home, cleaned)
    assert len(x) == cleaned.train_after == cleaned.train_before - 1

    other = cleaned.model_copy(update={"fingerprint": "0" * 64})
    with pytest.raises(DatasetError, match="is for dataset 000000000000.*clean this dataset"):
        cleaned_train_arrays(ref, home, other)
    # Another run rewrote the plan (other thresholds) after this one's clean step.
    monkeypatch.undo()
    clean_dataset(ref, home, CleaningConfig(near_blank_std=200.0))
    with pytest.raises(DatasetError, match="changed since the clean step wrote it"):
        cleaned_train_arrays(ref, home, cleaned)
    cleaned.report_path.write_text("{}")
    with pytest.raises(DatasetError, match="cannot read the cleaning plan"):
        read_cleaning(cleaned.report_path)
