from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.contract import CLASSES
from model.data.dataset import (
    arrays_dir,
    compute_fingerprint,
    find_layout_root,
    index_dataset,
    load_split,
    read_manifest,
)
from model.errors import DatasetError
from tests.unit.helpers import scan, write_fer_tree

pytestmark = pytest.mark.unit


def test_scan_lists_every_image_with_its_facts(tmp_path: Path) -> None:
    root = write_fer_tree(tmp_path / "fer", per_class=2)
    records = scan(root)
    assert len(records) == 2 * 2 * len(CLASSES)
    first = records[0]
    assert (first.split, first.label) == ("test", "angry")
    assert (first.width, first.height, first.mode) == (48, 48, "L")
    assert len(first.sha256) == 64 and first.bytes > 0


def test_unreadable_file_is_recorded_not_raised(tmp_path: Path) -> None:
    root = write_fer_tree(tmp_path / "fer", per_class=1)
    (root / "train" / "happy" / "broken.jpg").write_bytes(b"not an image")
    broken = [r for r in scan(root) if r.relpath.endswith("broken.jpg")]
    assert broken and broken[0].mode == "unreadable" and broken[0].width == 0


def test_fingerprint_is_stable_and_tracks_content(tmp_path: Path) -> None:
    root = write_fer_tree(tmp_path / "fer", per_class=1)
    before = compute_fingerprint(scan(root))
    assert before == compute_fingerprint(reversed(scan(root)))
    target = root / "train" / "sad" / "train_sad_0.png"
    target.write_bytes((root / "train" / "happy" / "train_happy_0.png").read_bytes())
    assert compute_fingerprint(scan(root)) != before


def test_nested_layout_is_found(tmp_path: Path) -> None:
    write_fer_tree(tmp_path / "archive", per_class=1)
    assert find_layout_root(tmp_path) == tmp_path / "archive"


def test_wrong_layout_lists_what_was_found(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels.csv").write_text("x")
    with pytest.raises(DatasetError) as error:
        find_layout_root(tmp_path)
    assert "images/" in str(error.value) and "labels.csv" in str(error.value)
    assert "train/" in str(error.value) and "FER_DATASET" in str(error.value)


def test_missing_folder_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="FER_DATASET"):
        find_layout_root(tmp_path / "nowhere")


def test_index_writes_manifest_and_load_split_caches(tmp_path: Path) -> None:
    root = write_fer_tree(tmp_path / "fer", per_class=2)
    home = tmp_path / "home"
    ref = index_dataset(root, home, source=str(root))
    assert ref.manifest_path.is_file()
    assert len(read_manifest(ref.manifest_path)) == 28
    x, y = load_split(ref, "train", home / "cache")
    assert x.shape == (14, 48, 48, 1) and x.dtype == np.uint8
    assert sorted(set(y.tolist())) == list(range(len(CLASSES)))
    # The class is encoded in brightness: decoded pixels must follow the labels.
    assert np.all(np.diff([x[y == k].mean() for k in range(len(CLASSES))]) > 0)
    # A second load reads the cache: it still works with the source gone.
    for path in (root / "train").rglob("*.png"):
        path.unlink()
    x2, y2 = load_split(ref, "train", home / "cache")
    assert np.array_equal(x, x2) and np.array_equal(y, y2)


def test_non_48_and_colour_images_are_converted(tmp_path: Path) -> None:
    root = write_fer_tree(tmp_path / "fer", per_class=1, size=64, mode="RGB")
    ref = index_dataset(root, tmp_path / "home", source=str(root))
    x, _ = load_split(ref, "test", tmp_path / "home" / "cache")
    assert x.shape == (7, 48, 48, 1)


def test_unknown_split_is_rejected(tmp_path: Path) -> None:
    root = write_fer_tree(tmp_path / "fer", per_class=1)
    ref = index_dataset(root, tmp_path / "home", source=str(root))
    with pytest.raises(DatasetError, match="unknown split"):
        load_split(ref, "validation", tmp_path / "cache")


def test_second_index_of_unchanged_files_reads_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import model.data.dataset as dataset

    root = write_fer_tree(tmp_path / "fer", per_class=2)
    first = index_dataset(root, tmp_path / "home", source="a")

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("the warm path must not read or decode files")

    # The one function that reads and decodes the files on the cold path.
    monkeypatch.setattr(dataset, "decode_into", no_decoding)
    second = index_dataset(root, tmp_path / "home", source="b")
    assert (second.fingerprint, second.manifest_path) == (first.fingerprint, first.manifest_path)
    assert second.source == "b"
    # The guard can fire: a changed file sends the next index down the decoding path.
    changed = next((root / "train").rglob("*.png"))
    changed.write_bytes(changed.read_bytes() + b"\0")
    with pytest.raises(AssertionError, match="warm path"):
        index_dataset(root, tmp_path / "home", source="c")


def test_changed_file_is_noticed_on_the_next_index(tmp_path: Path) -> None:
    root = write_fer_tree(tmp_path / "fer", per_class=2)
    first = index_dataset(root, tmp_path / "home", source="x")
    target = root / "test" / "fear" / "test_fear_0.png"
    target.write_bytes((root / "test" / "happy" / "test_happy_0.png").read_bytes())
    second = index_dataset(root, tmp_path / "home", source="x")
    assert second.fingerprint != first.fingerprint
    x, y = load_split(second, "test", arrays_dir(tmp_path / "home"))
    fear = CLASSES.index("fear")
    means = x[y == fear].mean(axis=(1, 2, 3))  # fear images are ~80, happy ones ~110
    assert len(y) == 14 and means.min() < 90 and means.max() > 100


def test_split_and_class_folders_match_in_any_case(tmp_path: Path) -> None:
    root = write_fer_tree(tmp_path / "fer", per_class=1)
    (root / "train").rename(root / "Train")
    (root / "Train" / "happy").rename(root / "Train" / "HAPPY")
    (tmp_path / "fer" / "__MACOSX").mkdir()
    assert find_layout_root(tmp_path) == root
    records = scan(root)
    happy = [r for r in records if r.split == "train" and r.label == "happy"]
    assert happy and happy[0].relpath.startswith("Train/HAPPY/")


def test_worker_processes_give_the_same_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import model.data.dataset as dataset

    root = write_fer_tree(tmp_path / "fer", per_class=3, mode="RGB")
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    records_one = dataset.decode_into(root, tmp_path / "one", workers=1)
    monkeypatch.setattr(dataset, "IN_PROCESS_BELOW", 0)
    records_two = dataset.decode_into(root, tmp_path / "two", workers=2)
    assert records_one == records_two
    for name in ("train_x.npy", "test_x.npy"):
        assert np.array_equal(np.load(tmp_path / "one" / name), np.load(tmp_path / "two" / name))
    assert {r.mode for r in records_two} == {"RGB"}


def test_missing_array_cache_is_rebuilt_or_refused_when_files_changed(tmp_path: Path) -> None:
    import shutil

    root = write_fer_tree(tmp_path / "fer", per_class=1)
    home = tmp_path / "home"
    ref = index_dataset(root, home, source="x")
    shutil.rmtree(arrays_dir(home))
    x, _ = load_split(ref, "train", arrays_dir(home))
    assert x.shape == (7, 48, 48, 1)
    shutil.rmtree(arrays_dir(home))
    (root / "train" / "sad" / "train_sad_0.png").unlink()
    with pytest.raises(DatasetError, match="changed since it was indexed"):
        load_split(ref, "train", arrays_dir(home))
