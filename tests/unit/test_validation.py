"""Great Expectations data-quality suites on tiny in-code manifests (no images needed)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from validation.suite import QualityReport, count_table, validate_dataset

pytestmark = pytest.mark.unit

CLASSES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
SPLITS = ("train", "test")


def _row(split: str, label: str, n: int, size: int = 48, mode: str = "L") -> dict[str, object]:
    return {
        "split": split,
        "label": label,
        "relpath": f"{split}/{label}/{n}.jpg",
        "sha256": f"{split}-{label}-{n}".ljust(64, "0"),
        "bytes": 1500,
        "width": size,
        "height": size,
        "mode": mode,
    }


def _manifest(per_class: int = 2, classes: tuple[str, ...] = CLASSES) -> pd.DataFrame:
    return pd.DataFrame([_row(s, c, n) for s in SPLITS for c in classes for n in range(per_class)])


def _validate(
    manifest: pd.DataFrame, context_dir: Path, run_name: str = "test", **kwargs: int
) -> QualityReport:
    return validate_dataset(manifest, CLASSES, SPLITS, context_dir, run_name, **kwargs)


def _one_line_with(report: QualityReport, *needles: str) -> str:
    lines = [line for line in report.failures if all(n in line for n in needles)]
    assert len(lines) == 1, f"no single failure line with {needles}: {report.failures}"
    return lines[0]


def test_count_table_lists_every_expected_pair_and_flags_unexpected_ones() -> None:
    manifest = _manifest(per_class=2)
    manifest = manifest[manifest["label"] != "disgust"]
    manifest = pd.concat([manifest, pd.DataFrame([_row("train", "contempt", 0)])])

    table = count_table(manifest, CLASSES, SPLITS)

    assert list(table.columns) == ["split", "label", "count", "expected"]
    assert len(table) == len(SPLITS) * len(CLASSES) + 1
    expected = table[table["expected"]]
    assert list(zip(expected["split"], expected["label"], strict=True)) == [
        (s, c) for s in SPLITS for c in CLASSES
    ]
    counts = {
        (s, c): n for s, c, n in zip(table["split"], table["label"], table["count"], strict=True)
    }
    assert counts[("train", "disgust")] == 0 and counts[("test", "disgust")] == 0
    assert counts[("train", "angry")] == 2
    extra = table[~table["expected"]]
    assert extra[["split", "label", "count"]].values.tolist() == [["train", "contempt", 1]]


def test_count_table_of_an_empty_manifest_has_zero_counts() -> None:
    table = count_table(pd.DataFrame(), CLASSES, SPLITS)
    assert len(table) == len(SPLITS) * len(CLASSES)
    assert (table["count"] == 0).all() and table["expected"].all()


def test_good_manifest_passes_and_builds_data_docs(tmp_path: Path) -> None:
    report = _validate(_manifest(), tmp_path / "gx")

    assert report.success, report.failures
    assert report.failures == ()
    assert report.evaluated >= 7
    assert report.docs_index is not None and report.docs_index.is_file()
    assert report.docs_index.name == "index.html"
    assert tmp_path / "gx" in report.docs_index.parents


def test_missing_class_fails_naming_the_folder(tmp_path: Path) -> None:
    manifest = _manifest()
    manifest = manifest[~((manifest["split"] == "test") & (manifest["label"] == "disgust"))]

    report = _validate(manifest, tmp_path)

    assert not report.success
    line = _one_line_with(report, "test/disgust", "0 images")
    assert "expected at least 1" in line
    assert len(report.failures) == 1


def test_unexpected_class_folder_fails_naming_it(tmp_path: Path) -> None:
    manifest = pd.concat(
        [_manifest(), pd.DataFrame([_row("train", "contempt", n) for n in range(3)])],
        ignore_index=True,
    )

    report = _validate(manifest, tmp_path)

    assert not report.success
    line = _one_line_with(report, "train/contempt")
    assert "unexpected" in line and "3 images" in line
    assert len(report.failures) == 1


def test_unexpected_split_fails(tmp_path: Path) -> None:
    manifest = pd.concat([_manifest(), pd.DataFrame([_row("val", "happy", 0)])], ignore_index=True)

    report = _validate(manifest, tmp_path)

    assert not report.success
    _one_line_with(report, "unexpected split", "val")
    _one_line_with(report, "val/happy")


def test_wrong_size_image_fails_with_its_path(tmp_path: Path) -> None:
    manifest = _manifest()
    manifest.loc[3, "width"] = 47
    bad_path = manifest.loc[3, "relpath"]

    report = _validate(manifest, tmp_path)

    assert not report.success
    line = _one_line_with(report, "not 48x48")
    assert bad_path in line and "47" in line and "1 image is" in line
    assert len(report.failures) == 1


def test_many_wrong_size_images_quote_a_few_examples(tmp_path: Path) -> None:
    manifest = _manifest()
    manifest.loc[:11, "height"] = 40

    report = _validate(manifest, tmp_path)

    line = _one_line_with(report, "12 images are not 48x48")
    assert "height is 40" in line
    assert sum(path in line for path in manifest["relpath"]) == 5
    assert "(7 more)" in line


def test_rgb_image_fails_as_not_grayscale(tmp_path: Path) -> None:
    manifest = _manifest()
    manifest.loc[5, "mode"] = "RGB"

    report = _validate(manifest, tmp_path)

    assert not report.success
    line = _one_line_with(report, "not grayscale")
    assert "RGB" in line and manifest.loc[5, "relpath"] in line
    assert len(report.failures) == 1


def test_image_size_is_configurable(tmp_path: Path) -> None:
    manifest = _manifest()
    manifest[["width", "height"]] = 64

    assert _validate(manifest, tmp_path, image_size=64).success
    report = _validate(manifest, tmp_path, image_size=48)
    assert not report.success
    _one_line_with(report, "not 48x48", "width")
    _one_line_with(report, "not 48x48", "height")


def test_running_twice_in_the_same_context_dir_works(tmp_path: Path) -> None:
    context_dir = tmp_path / "ctx"
    bad = _manifest()
    bad.loc[0, "mode"] = "RGB"

    first = _validate(_manifest(), context_dir, "first")
    second = _validate(bad, context_dir, "second")
    third = _validate(_manifest(), context_dir, "first")

    assert first.success and third.success
    assert not second.success and len(second.failures) == 1
    assert first.evaluated == second.evaluated == third.evaluated
    assert third.docs_index is not None and third.docs_index.is_file()


@pytest.mark.parametrize(
    "manifest",
    [pd.DataFrame(), _manifest().iloc[0:0]],
    ids=["no-columns", "no-rows"],
)
def test_empty_manifest_fails_clearly(tmp_path: Path, manifest: pd.DataFrame) -> None:
    report = _validate(manifest, tmp_path)

    assert not report.success
    assert "manifest has 0 images" in report.failures[0]
    _one_line_with(report, "14 class folders have 0 images")


def test_manifest_without_required_columns_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode"):
        _validate(_manifest().drop(columns=["mode"]), tmp_path)
