"""Data-quality validation time on the full dataset, cold and warm, as a user pays it.

Each measurement is a fresh Python process (imports included, as for `fer data validate`):

* cold — an empty platform home: index the dataset (list, hash, decode, array cache), then
  profile, run the GX suites (creating the GX context) and write the report;
* warm — the same home again: the index is reused (listing unchanged), then the same
  validation steps.

Cold and warm runs are interleaved ``--runs`` times; the table gives per-stage medians and
each total's ratio to the cold median.

    uv run python bench/validate.py --dataset ../shared/fer2013 --runs 5
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STAGES = ("imports", "index", "profile", "suites", "report", "total")


def one_run(root: Path, home: Path) -> dict[str, float]:
    """Validate once, timing each stage (runs in the child process)."""
    started = time.perf_counter()
    from model.data.cleaning import pixel_records
    from model.data.dataset import index_dataset, read_manifest
    from validation.config import QualityConfig
    from validation.profile import profile_dataset
    from validation.report import QualityReport, class_rows, plain_summary, write_report
    from validation.suite import run_suites

    times = {"imports": time.perf_counter() - started}
    mark = time.perf_counter()
    ref = index_dataset(root, home, str(root))
    times["index"] = time.perf_counter() - mark
    mark = time.perf_counter()
    profile = profile_dataset(
        ref.root,
        read_manifest(ref.manifest_path),
        pixel_records(ref, home),
        QualityConfig().near_blank_std,
    )
    times["profile"] = time.perf_counter() - mark
    mark = time.perf_counter()
    config = QualityConfig()
    run = run_suites(profile, config, home / "gx", f"bench-{time.time_ns()}")
    times["suites"] = time.perf_counter() - mark
    mark = time.perf_counter()
    report = QualityReport(
        "bench", ref.fingerprint, str(root), run.outcomes,
        class_rows(profile.classes), plain_summary(profile.summary),
    )  # fmt: skip
    write_report(report, home / "reports" / "bench", run.docs_index, run.pages)
    times["report"] = time.perf_counter() - mark
    times["total"] = time.perf_counter() - started
    assert report.success, [o.message for o in report.critical_failures]
    return times


def _child(root: Path, home: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--one", str(home), "--dataset", str(root)],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=REPO.parent / "shared" / "fer2013")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    root = args.dataset.resolve()
    if args.one:
        print(json.dumps(one_run(root, args.one)))
        return

    results: dict[str, list[dict[str, float]]] = {"cold": [], "warm": []}
    for _ in range(args.runs):
        home = Path(tempfile.mkdtemp(prefix="fer-validate-bench-"))
        try:
            results["cold"].append(_child(root, home))
            results["warm"].append(_child(root, home))
        finally:
            shutil.rmtree(home)

    cold_total = statistics.median(r["total"] for r in results["cold"])
    print(f"validation of {root} ({args.runs} runs each; seconds, median)")
    print(f"{'run':<6}" + "".join(f"{s:>9}" for s in STAGES) + f"{'vs cold':>9}")
    for name, runs in results.items():
        medians = [statistics.median(r[s] for r in runs) for s in STAGES]
        cells = "".join(f"{m:>9.2f}" for m in medians)
        print(f"{name:<6}{cells}{medians[-1] / cold_total:>8.2f}x")
    spread = {n: [round(r["total"], 2) for r in runs] for n, runs in results.items()}
    print(f"totals per run: {spread}")


if __name__ == "__main__":
    main()
