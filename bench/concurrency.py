"""Threads or processes for the app's analyses (decode, detect, classify) on this machine.

The same 512x512 one-face photo is analysed ``--calls`` times by a pool of threads in one
process (as ``fer serve`` does: one model and one set of detector interpreters shared) and by
a pool of processes (each with its own model), at 1, 2 and 4 workers; the table gives
analyses per second, and the resident memory of each worker process.

    uv run --locked python bench/concurrency.py --model PATH/model.keras [--calls 200]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from PIL import Image
from skimage import data

from model.inference.predictor import Predictor
from serving.app import ChampionWatcher, run_analysis
from serving.images import ImageLimits
from serving.metrics import ServingMetrics

_WATCHER: ChampionWatcher | None = None


def _load(model: Path) -> None:
    """Load the model into this process (a worker's initializer, or the main process)."""
    global _WATCHER
    _WATCHER = ChampionWatcher(None, Path(tempfile.mkdtemp()), poll_seconds=3600)
    _WATCHER.serve_local(Predictor.from_file(model, version=model.parent.name))


def _analyse(photo: str) -> int:
    assert _WATCHER is not None
    analysis, _ = run_analysis(_WATCHER, photo, False, ImageLimits(), ServingMetrics(_WATCHER))
    return len(analysis.faces)


def _memory_mb(_: int = 0) -> float:
    """This process's peak resident memory."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rate(pool: Executor, photo: str, calls: int, workers: int) -> float:
    list(pool.map(_analyse, [photo] * (2 * workers)))  # warm every worker
    started = time.perf_counter()
    faces = list(pool.map(_analyse, [photo] * calls))
    elapsed = time.perf_counter() - started
    assert all(count == 1 for count in faces)
    return calls / elapsed


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    photo = Path(tempfile.mkdtemp()) / "astronaut.jpg"
    Image.fromarray(data.astronaut()).save(photo, quality=90)
    _load(args.model)
    print("| workers | threads: analyses/s | processes: analyses/s | memory per process, MB |")
    print("|---|---|---|---|")
    for workers in (1, 2, 4):
        with ThreadPoolExecutor(workers) as threads:
            threaded = _rate(threads, str(photo), args.calls, workers)
        spawn = get_context("spawn")
        with ProcessPoolExecutor(workers, spawn, initializer=_load, initargs=(args.model,)) as pool:
            forked = _rate(pool, str(photo), args.calls, workers)
            memory = max(pool.map(_memory_mb, range(workers)))
        print(f"| {workers} | {threaded:.1f} | {forked:.1f} | {memory:.0f} |", flush=True)
    print(f"\nmain process (threads): {_memory_mb():.0f} MB")


if __name__ == "__main__":
    main()
