"""Decode speed: the seed's naive loop vs a cold and a warm index of the same images.

* naive — the seed's way: listdir + ``Image.open`` + ``np.array`` into Python lists.
* cold  — ``index_dataset`` into an empty platform home: list, hash, describe and decode every
  file in parallel, write manifest and array cache (files in the page cache, as for naive).
* warm  — ``index_dataset`` again (listing checked against the index) plus loading both splits
  from the array cache.

All three run in the same process, interleaved, ``--runs`` times; the table gives the median
and each row's ratio to the naive median.

    uv run python bench/decode.py --dataset ../shared/fer2013 --runs 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from model.contract import SPLITS
from model.data.dataset import arrays_dir, index_dataset, load_split

REPO = Path(__file__).resolve().parent.parent


def naive(root: Path) -> int:
    """The seed's loader: nested listdir, PIL open, np.array, Python lists."""
    images, labels = [], []
    for split in SPLITS:
        for label in sorted(os.listdir(root / split)):
            for name in os.listdir(root / split / label):
                images.append(np.array(Image.open(root / split / label / name)))
                labels.append(label)
    return len(images)


def cold(root: Path) -> int:
    home = Path(tempfile.mkdtemp(prefix="fer-decode-"))
    try:
        ref = index_dataset(root, home, str(root))
        return sum(len(load_split(ref, s, arrays_dir(home))[1]) for s in SPLITS)
    finally:
        shutil.rmtree(home)


def warm(root: Path, home: Path) -> int:
    ref = index_dataset(root, home, str(root))
    return sum(len(load_split(ref, s, arrays_dir(home))[1]) for s in SPLITS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=REPO.parent / "shared" / "fer2013")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    root = args.dataset.resolve()

    warm_home = Path(tempfile.mkdtemp(prefix="fer-decode-warm-"))
    counts = {"naive": naive(root), "warm": warm(root, warm_home)}  # fills page cache + index
    times: dict[str, list[float]] = {"naive": [], "cold": [], "warm": []}
    try:
        for _ in range(args.runs):
            for name, run in (
                ("naive", lambda: naive(root)),
                ("cold", lambda: cold(root)),
                ("warm", lambda: warm(root, warm_home)),
            ):
                started = time.perf_counter()
                counts[name] = run()
                times[name].append(time.perf_counter() - started)
    finally:
        shutil.rmtree(warm_home)

    base = statistics.median(times["naive"])
    print(
        f"\ndecode of {counts['naive']} images in {root}, {args.runs} runs, "
        f"{os.cpu_count()} cores, seconds"
    )
    print(f"{'loader':<8}{'images':>8}{'median':>9}{'min':>8}{'max':>8}{'vs naive':>10}")
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"{name:<8}{counts[name]:>8}{median:>9.3f}{min(values):>8.3f}{max(values):>8.3f}"
            f"{base / median:>9.1f}x"
        )


if __name__ == "__main__":
    main()
