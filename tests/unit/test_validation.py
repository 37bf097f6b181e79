"""Data-quality profile, GX suites and report on tiny synthetic datasets."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pydantic import ValidationError

from model.contract import CLASSES
from model.data.cleaning import CleaningConfig, PixelRecord
from model.data.dataset import ImageRecord, index_dataset
from model.errors import DataQualityError
from tests.unit.helpers import write_fer_tree
from validation.config import QualityConfig
from validation.profile import class_table, image_table
from validation.report import make_offline
from validation.run import raise_on_failure, validate_ref
from validation.suite import build_checks

pytestmark = pytest.mark.unit

#: Count bounds for a dataset of a few images per class; every other bound at its default.
SMALL = QualityConfig(
    min_train_images=1, min_test_images=1, min_class_train_images=1, min_class_test_images=1
)
_REMOTE = re.compile(r"<(?:link|script|img)\b[^>]*\b(?:href|src)=[\"']https?://", re.IGNORECASE)


def _record(split: str, label: str, name: str, mode: str = "L") -> ImageRecord:
    return ImageRecord(
        split, label, f"{split}/{label}/{name}", name.ljust(64, "0"), 1500, 48, 48, mode
    )


def _pixels(record: ImageRecord, digest: str, std: float = 20.0) -> PixelRecord:
    return PixelRecord(record.split, record.label, record.relpath, digest, std)


def test_image_table_flags_leaks_copies_conflicts_blanks_and_unreadable_files() -> None:
    records = [
        _record("test", "happy", "t1.jpg"),
        _record("test", "sad", "t2.jpg"),
        _record("train", "happy", "a.jpg"),  # same pixels as t1: leak
        _record("train", "sad", "b.jpg"),
        _record("train", "sad", "c.jpg"),  # copy of b
        _record("train", "fear", "d.jpg"),  # same pixels as t2, other label
        _record("train", "fear", "e.jpg"),  # blank
        _record("train", "fear", "f.jpg", mode="unreadable"),
    ]
    digests = ["A", "C", "A", "B", "B", "C", "D", ""]
    stds = [20.0, 20.0, 20.0, 20.0, 20.0, 20.0, 0.3, 0.0]
    pixels = [_pixels(r, d, s) for r, d, s in zip(records, digests, stds, strict=True)]
    table = image_table(records, pixels, CleaningConfig().near_blank_std).set_index("relpath")

    assert table.loc["test/happy/t1.jpg", "leaked_from_train"] is True
    assert table.loc["train/happy/a.jpg", "leaked_from_train"] is None  # asked of test only
    assert table.loc["train/sad/c.jpg", "repeats_earlier"] is True
    assert table.loc["train/sad/b.jpg", "repeats_earlier"] is False
    assert table.loc["train/fear/d.jpg", "label_conflict"] is True
    assert table.loc["train/fear/e.jpg", "near_blank"] is True
    unreadable = table.loc["train/fear/f.jpg"]
    assert (
        not unreadable["decodes"]
        and pd.isna(unreadable["width"])
        and unreadable["near_blank"] is None
    )
    # The data are checked as they came: nothing in the table depends on cleaning's plan.
    assert "kept_in_test" not in table.columns


def test_class_table_tells_missing_from_empty_and_unexpected_folders() -> None:
    records = [_record("train", "happy", f"{n}.jpg") for n in range(3)]
    records += [_record("test", "happy", "0.jpg"), _record("train", "contempt", "0.jpg")]
    folders = {("train", "happy"), ("test", "happy"), ("train", "sad"), ("train", "contempt")}

    table = class_table(records, folders, ("happy", "sad")).set_index("label")

    assert table.loc["happy", "train_count"] == 3 and table.loc["happy", "train_share"] == 1.0
    assert table.loc["sad", "train_present"] is True and table.loc["sad", "train_count"] == 0
    assert table.loc["sad", "test_present"] is False and pd.isna(table.loc["sad", "test_count"])
    assert not table.loc["contempt", "expected"]
    assert table.loc["contempt", "train_present"] is None  # an extra folder is its own check
    assert table.loc["happy", "share_shift"] == 0.0


def test_config_rejects_crossed_bounds() -> None:
    with pytest.raises(ValidationError, match="min_class_share"):
        QualityConfig(min_class_share=0.5, max_class_share=0.4)
    with pytest.raises(ValidationError, match="share_shift_warning"):
        QualityConfig(share_shift_warning=0.2, share_shift_critical=0.1)
    with pytest.raises(ValidationError):
        QualityConfig(min_train_image=5)  # type: ignore[call-arg] - a typo is refused


def test_every_check_has_a_unique_name_and_a_message() -> None:
    from validation.suite import MESSAGES

    names = [check.name for check in build_checks(QualityConfig())]
    assert len(names) == len(set(names))
    assert set(names) == set(MESSAGES)
    severities = {check.severity for check in build_checks(QualityConfig())}
    assert severities == {"critical", "warning"}


def test_clean_dataset_passes_and_writes_an_offline_report(tmp_path: Path) -> None:
    root = write_fer_tree(tmp_path / "fer", per_class=3)
    home = tmp_path / "home"
    ref = index_dataset(root, home, str(root))

    report = validate_ref(ref, home, "clean run", SMALL)

    assert report.success and not report.warnings, report.critical_failures + report.warnings
    assert len(report.outcomes) == len(build_checks(SMALL))
    assert report.summary["train_images"] == report.summary["test_images"] == 21
    assert report.summary["imbalance_ratio"] == 1.0
    assert [row["class"] for row in report.classes] == list(CLASSES)
    assert report.report_dir == home / "reports" / "clean-run"
    pages = sorted(report.report_dir.rglob("*.html"))
    assert report.index in pages and len(pages) >= 4  # index, 3 validation pages, suites
    assert len(list((report.report_dir / "validations").rglob("*.html"))) == 3
    for page in pages:
        text = page.read_text()
        assert not _REMOTE.search(text), f"{page} loads something from the network"
    assert (report.report_dir / "static" / "offline.css").is_file()
    front = report.index.read_text()
    assert "PASSED" in front and "validations/" in front
    assert not (ref.manifest_path.parent / "cleaning.json").exists()  # the clean step's file


def test_faults_fail_the_checks_that_name_them(tmp_path: Path) -> None:
    root = write_fer_tree(tmp_path / "fer", per_class=3)
    (root / "train" / "happy" / "notes.jpg").write_text("not an image")
    rng = np.random.default_rng(1)
    big = rng.integers(0, 255, (64, 64), dtype=np.uint8)
    Image.fromarray(big).save(root / "train/sad/big.png")
    rgb = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
    Image.fromarray(rgb, "RGB").save(root / "test/sad/rgb.png")
    home = tmp_path / "home"
    ref = index_dataset(root, home, str(root))

    report = validate_ref(ref, home, "faults", SMALL)

    failed = {o.name for o in report.critical_failures}
    assert failed == {"images_decode", "image_width", "image_height"}
    messages = " ".join(o.message for o in report.critical_failures)
    assert "train/happy/notes.jpg" in messages and "train/sad/big.png" in messages
    assert "width 64 instead of 48" in messages
    warned = {o.name for o in report.warnings}
    assert "images_grayscale" in warned  # converted, reported, not fatal
    assert "test/sad/rgb.png" in next(
        o.message for o in report.warnings if o.name == "images_grayscale"
    )
    with pytest.raises(DataQualityError) as raised:
        raise_on_failure(report, "s3://fer/reports/faults/data_quality/index.html")
    text = str(raised.value)
    assert "images_decode, image_width, image_height" in text
    assert text.endswith("report: s3://fer/reports/faults/data_quality/index.html")
    assert "FAILED" in report.index.read_text()


def test_warnings_alone_do_not_fail(tmp_path: Path) -> None:
    root = write_fer_tree(tmp_path / "fer", per_class=3)
    # A training image replaced by a test image: a leak (1 of 21, under the 10 % bound).
    test_image = root / "test" / "sad" / "test_sad_0.png"
    (root / "train" / "sad" / "train_sad_0.png").write_bytes(test_image.read_bytes())
    home = tmp_path / "home"
    ref = index_dataset(root, home, str(root))

    report = validate_ref(ref, home, "leak", SMALL)

    assert report.success
    assert {o.name for o in report.warnings} == {"leakage_none", "copies_none"}
    raise_on_failure(report)  # does not raise


def test_make_offline_drops_remote_assets_and_links_the_local_stylesheet() -> None:
    page = (
        '<html><head><link rel="stylesheet" href="https://cdn.example/b.css"/>'
        '<script src="https://cdn.example/j.js" integrity="x"></script>'
        '<link rel="shortcut icon" href="../static/images/favicon.ico"/></head>'
        '<body><img src="https://assets.example/logo.png" alt="logo">'
        "<script>var inline = 1;</script></body></html>"
    )

    offline = make_offline(page, "../..")

    assert "https://" not in offline
    assert '<link rel="stylesheet" href="../../static/offline.css"></head>' in offline
    assert 'src="../../static/images/logo-long.png"' in offline
    assert "favicon.ico" in offline and "var inline = 1;" in offline


def test_local_gx_history_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import validation.suite

    monkeypatch.setattr(validation.suite, "KEEP_RUNS", 2)
    root = write_fer_tree(tmp_path / "fer", per_class=2)
    home = tmp_path / "home"
    ref = index_dataset(root, home, str(root))

    for run in ("first", "second", "third"):
        validate_ref(ref, home, run, SMALL)

    site = next((home / "gx").rglob("local_site"))
    assert sorted(p.name for p in (site / "validations" / "fer_images").iterdir()) == [
        "second",
        "third",
    ]
    results = list((home / "gx").rglob("uncommitted/validations/**/*.json"))
    assert len(results) == 2 * 3  # two runs, three tables each
