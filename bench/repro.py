"""Reproducibility: the same data, config and seed, trained twice in fresh processes.

Trains the ``cpu`` profile (its network, augmentation and precision; no time budget) for
``--epochs`` epochs on a deterministic subset of the cleaned training split, twice, each in
its own process, then prints both runs' validation accuracy per epoch and the largest
difference. A different ``--seed`` for a third run shows how much the seed alone moves it.

    uv run python bench/repro.py --images 8000 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def train_once(args: argparse.Namespace) -> dict[str, list[float]]:
    """One run in this process; its per-epoch validation accuracy and training loss."""
    from model.data.cleaning import CleaningConfig, clean_dataset, cleaned_train_arrays
    from model.data.dataset import index_dataset
    from model.training.config import TrainConfig
    from model.training.fit import fit_model

    ref = index_dataset(args.dataset.resolve(), args.home, str(args.dataset))
    x, y = cleaned_train_arrays(ref, args.home, clean_dataset(ref, args.home, CleaningConfig()))
    pick = np.sort(np.random.default_rng(0).permutation(len(y))[: args.images])
    config = TrainConfig.profile("cpu").model_copy(
        update={"epochs": args.epochs, "time_budget_minutes": None, "seed": args.seed}
    )
    with tempfile.TemporaryDirectory() as run_dir:
        result = fit_model(np.ascontiguousarray(x[pick]), y[pick], config, Path(run_dir))
        history = json.loads(result.history_path.read_text())
    return {"val_accuracy": history["val_accuracy"], "loss": history["loss"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=REPO.parent / "shared" / "fer2013")
    parser.add_argument("--home", type=Path, default=Path.home() / ".fer")
    parser.add_argument("--images", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(train_once(args)))
        return

    def child(seed: int) -> dict[str, list[float]]:
        argv = [a for a in sys.argv[1:] if not a.startswith("--seed")]
        done = subprocess.run(
            [sys.executable, __file__, *argv, "--seed", str(seed), "--child"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return json.loads(done.stdout.strip().splitlines()[-1])

    runs = {"seed A": child(args.seed), "seed A again": child(args.seed)}
    runs["seed B"] = child(args.seed + 1)
    print(f"validation accuracy per epoch, {args.images} images, {args.epochs} epochs")
    for name, run in runs.items():
        print(f"{name:<14}" + " ".join(f"{v:.4f}" for v in run["val_accuracy"]))
    for other in ("seed A again", "seed B"):
        gap = np.abs(np.subtract(runs["seed A"]["val_accuracy"], runs[other]["val_accuracy"]))
        loss = np.abs(np.subtract(runs["seed A"]["loss"], runs[other]["loss"]))
        print(f"seed A vs {other}: max |val acc diff| {gap.max():.4f}, max |loss diff| "
              f"{loss.max():.2e}")  # fmt: skip


if __name__ == "__main__":
    main()
