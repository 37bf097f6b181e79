"""Training recipes at equal wall time: public-test accuracy of each within one time budget.

Each recipe is a training profile with a JSON overlay of ``TrainConfig`` fields; every recipe
gets the same ``--budget-minutes`` (the budget machinery plans the epochs, so a cheaper
network simply runs more of them). Each runs in a fresh process on the cleaned training
split of ``--dataset``, one after the other, and is scored as the platform scores a
challenger (``model.evaluation.metrics.evaluate_model``: the served export on the public test
split).

``--isa avx2`` caps oneDNN at AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2``) and trains in float32: what
``precision="auto"`` does on a CPU without native bfloat16. It is an emulation of such a
machine on this one (the same cores without AVX512 and AMX kernels), not the machine itself.

    uv run python bench/recipes.py --budget-minutes 3 --isa avx2 \\
        --recipe 'quick' --recipe 'cpu' \\
        --recipe 'cpu-small=cpu:{"network": {"filters": [16, 32, 64, 128]}}'

A recipe is ``PROFILE`` or ``NAME=PROFILE:JSON``. The table gives epochs, training seconds,
best validation accuracy and public-test accuracy of each, with the CPU model and flags.

``--chain N`` runs each recipe N times in a row, each run warm-started from the one before
(``TrainConfig.warm_start``, as consecutive nightly runs do from the champion); the table has
a row per link. Compounding against a single run from scratch at the same budget:

    uv run python bench/recipes.py --budget-minutes 10 --isa avx2 --chain 3 --recipe cpu
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def parse_recipe(spec: str) -> tuple[str, str, dict[str, Any]]:
    """``NAME=PROFILE:JSON`` or ``PROFILE`` -> (name, profile, overlay)."""
    name, _, rest = spec.partition("=")
    if not rest:
        return name, name, {}
    profile, _, overlay = rest.partition(":")
    return name, profile, json.loads(overlay or "{}")


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    """Train and score one recipe in this process."""
    from device_train import build_config  # bench/ is this script's folder, on sys.path

    from model.data.dataset import index_dataset
    from model.evaluation.metrics import evaluate_model
    from model.training.fit import train_model
    from model.training.warmstart import Parent

    name, profile, changes = parse_recipe(args.recipe[0])
    changes.setdefault("epochs", 1000)
    if args.isa == "avx2":
        changes["precision"] = "float32"
    parent = Parent("previous link", args.parent) if args.parent else None
    changes["warm_start"] = parent is not None
    config = build_config(profile, changes, args.budget_minutes)
    ref = index_dataset(args.dataset.resolve(), args.home, str(args.dataset))
    started = time.perf_counter()
    result = train_model(ref, config, args.home, parent=parent, no_parent_reason="first link")
    trained = time.perf_counter() - started
    metrics = evaluate_model(result.model_path, ref, args.home, result.run_dir)
    return {
        "name": name,
        "epochs": result.epochs_run,
        "train_seconds": trained,
        "val": result.best_val_accuracy,
        "test": metrics.accuracy,
        "runtime": metrics.runtime,
        "precision": result.precision,
        "model_path": str(result.model_path),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=REPO.parent / "shared" / "fer2013")
    parser.add_argument("--home", type=Path, default=None, help="default: a fresh temp dir")
    parser.add_argument("--budget-minutes", type=float, required=True)
    parser.add_argument("--isa", choices=("native", "avx2"), default="native")
    parser.add_argument("--recipe", action="append", required=True)
    parser.add_argument("--chain", type=int, default=1, help="warm-started runs per recipe")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--parent", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args)))
        return
    home = args.home or Path(tempfile.mkdtemp(prefix="fer-recipes-"))
    env = dict(os.environ)
    if args.isa == "avx2":
        env["ONEDNN_MAX_CPU_ISA"] = "AVX2"
    rows = []
    for spec in args.recipe:
        parent = None
        for link in range(1, args.chain + 1):
            command = [sys.executable, __file__, "--one", "--recipe", spec, "--home", str(home)]
            command += ["--dataset", str(args.dataset), "--isa", args.isa]
            command += ["--budget-minutes", str(args.budget_minutes)]
            command += ["--parent", parent] if parent else []
            child = subprocess.run(command, capture_output=True, text=True, env=env)
            if child.returncode:
                sys.exit(f"recipe {spec!r} failed:\n{child.stderr[-3000:]}")
            row = json.loads(child.stdout.strip().splitlines()[-1])
            if args.chain > 1:
                row["name"] = f"{row['name']} #{link}"
            parent = row["model_path"]
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    from model.training.hardware import cpu_flags, cpu_model

    flags = sorted(f for f in cpu_flags() if f in {"avx2", "avx512f", "avx512_bf16", "amx_bf16"})
    print(f"recipes at {args.budget_minutes:g} training minutes each, isa {args.isa}; CPU: "
          f"{cpu_model()} ({os.cpu_count()} cores; {', '.join(flags)})")  # fmt: skip
    print(f"{'recipe':<28}{'epochs':>7}{'train s':>9}{'best val':>10}{'test':>8}  runtime")
    for row in rows:
        print(
            f"{row['name']:<28}{row['epochs']:>7}{row['train_seconds']:>9.0f}"
            f"{row['val']:>10.4f}{row['test']:>8.4f}  {row['runtime']} ({row['precision']})"
        )


if __name__ == "__main__":
    main()
