"""Seconds per stage of the full retrain loop on the whole shared FER2013 copy.

Runs the real `retrain` flow (Prefect server + SeaweedFS on loopback, started here in a
throw-away home unless --home is given) with 1 epoch, reads each task run's duration back
from the Prefect API, and prints a table: one column per run and the median. The first run
decodes the images; later runs read the decoded-array cache (same fingerprint).

    uv run python bench/loop.py --dataset ../shared/fer2013 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def _task_durations(api_url: str, flow_run_id: Any) -> dict[str, float]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def read() -> dict[str, float]:
        async with get_client() as client:
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            flow_run = await client.read_flow_run(flow_run_id)
        ordered = sorted(runs, key=lambda run: run.start_time or run.expected_start_time)
        durations = {
            run.name.rsplit("-", 1)[0]: run.total_run_time.total_seconds() for run in ordered
        }
        durations["flow total"] = flow_run.total_run_time.total_seconds()
        return durations

    with temporary_settings({PREFECT_API_URL: api_url}):
        return asyncio.run(read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset",
        default=str(REPO.parent / "shared" / "fer2013"),
        help="FER-layout folder (default: ../shared/fer2013)",
    )
    parser.add_argument("--runs", type=int, default=3, help="flow runs to time (default 3)")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs (default 1)")
    parser.add_argument("--home", help="platform home (default: a temporary folder)")
    args = parser.parse_args()

    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    home = args.home or tempfile.mkdtemp(prefix="fer-bench-")
    from infra.services import free_port

    os.environ.update(
        {"FER_HOME": home, "FER_PREFECT_PORT": str(free_port()), "FER_S3_PORT": str(free_port())}
    )

    from infra.services import services_down, services_up
    from model.evaluation.gate import GateConfig
    from model.settings import get_settings
    from model.training.config import TrainConfig

    settings = get_settings()
    started = time.perf_counter()
    services_up(settings)
    services_seconds = time.perf_counter() - started
    columns: list[dict[str, float]] = []
    try:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        from flows.retrain import retrain

        for _ in range(args.runs):
            with temporary_settings({PREFECT_API_URL: settings.prefect_url}):
                wall = time.perf_counter()
                state = retrain(
                    dataset=args.dataset,
                    train_config=TrainConfig(epochs=args.epochs),
                    gate_config=GateConfig(min_accuracy=0.0),
                    return_state=True,
                )
                wall = time.perf_counter() - wall
            state.result()
            durations = _task_durations(settings.prefect_url, state.state_details.flow_run_id)
            durations["wall (incl. Prefect overhead)"] = wall
            columns.append(durations)
    finally:
        services_down(settings)

    stages = list(columns[0])
    header = ["stage"] + [f"run {i + 1}" for i in range(len(columns))] + ["median"]
    rows = [
        [stage]
        + [f"{c.get(stage, float('nan')):.1f}" for c in columns]
        + [f"{statistics.median(c.get(stage, float('nan')) for c in columns):.1f}"]
        for stage in stages
    ]
    rows.insert(
        0, ["services up (once)", f"{services_seconds:.1f}"] + [""] * (len(columns) - 1) + [""]
    )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(f"\nretrain loop, {args.epochs} epoch(s), dataset {args.dataset}, seconds")
    for row in [header, ["-" * w for w in widths], *rows]:
        print(
            "  ".join(
                cell.rjust(w) if i else cell.ljust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )


if __name__ == "__main__":
    main()
