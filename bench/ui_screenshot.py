"""Screenshot a finished run's page in the Prefect UI, artifacts tab open, and its artifacts.

Drives Debian's Chromium headless through Playwright (no browser download):

    apt-get install -y chromium          # once; provides /usr/bin/chromium
    uv run --locked python bench/ui_screenshot.py [--flow retrain|health] [--run NAME_OR_ID]

Without ``--run`` it takes the newest completed run of the flow (``retrain`` by default; ``health``
for the daily health report) on the configured Prefect server. The PNGs go under the platform
home (``<FER_HOME>/screenshots/``), never into git.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path
from typing import Any

from infra.browser import CHROMIUM, CHROMIUM_ARGS
from model.settings import get_settings

logger = logging.getLogger("ui_screenshot")

#: Per flow: the artifact key whose card shows the tab is drawn, and the artifacts whose own
#: pages are photographed too.
ARTIFACTS = {
    "retrain": ("gate-decision", ("confusion-matrix",)),
    "health": ("fer-health", ("fer-health", "fer-health-chart")),
}


async def _find_run(run: str | None, flow: str) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterName,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    async with get_client() as client:
        if run is not None:
            try:
                from uuid import UUID

                return await client.read_flow_run(UUID(run))
            except ValueError:
                runs = await client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[run]))
                )
        else:
            runs = await client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[flow])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(
                        type=FlowRunFilterStateType(any_=[StateType.COMPLETED])
                    )
                ),
                sort=FlowRunSort.START_TIME_DESC,
                limit=1,
            )
        if not runs:
            raise SystemExit(f"no {'run named ' + run if run else f'completed {flow} run'} found")
        return runs[0]


def screenshot(url: str, out: Path, chromium: str, flow: str) -> list[Path]:
    """Open ``url`` in headless Chromium and save the run's and its artifacts' pages.

    ``out``: the run's page with the Artifacts tab open; ``<out stem>-<key>.png``: each
    artifact's own page (an image artifact with its image loaded from the store).

    Returns:
        The PNGs written.
    """
    from playwright.sync_api import sync_playwright

    marker, pages = ARTIFACTS[flow]
    out.parent.mkdir(parents=True, exist_ok=True)
    written = [out]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=list(CHROMIUM_ARGS))
        page = browser.new_page(viewport={"width": 1600, "height": 1200})
        _open_artifacts_tab(page, url, marker)
        page.screenshot(path=str(out), full_page=True)
        for key in pages:
            _open_artifacts_tab(page, url, marker)
            page.get_by_text(key, exact=True).last.click()
            page.wait_for_load_state("networkidle")
            page.wait_for_timeout(2_000)  # tables and images finish drawing
            written.append(out.with_name(f"{out.stem}-{key}.png"))
            page.screenshot(path=str(written[-1]), full_page=True)
        browser.close()
    return written


def _open_artifacts_tab(page: Any, url: str, marker: str) -> None:
    page.goto(url, wait_until="networkidle", timeout=60_000)
    page.get_by_text("Artifacts", exact=True).first.click()
    # The artifact cards are drawn after the API answers; their keys mark them.
    page.get_by_text(marker).last.wait_for(timeout=30_000)
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(2_000)  # images from the store finish drawing


def main() -> None:
    """Find the run, open its artifacts tab, write the screenshot, print its path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flow", choices=sorted(ARTIFACTS), default="retrain", help="the flow")
    parser.add_argument("--run", help="flow run name or id (default: the flow's newest completed)")
    parser.add_argument("--out", type=Path, help="PNG path (default: under the platform home)")
    parser.add_argument("--chromium", default=CHROMIUM, help="Chromium executable")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from prefect.settings import PREFECT_API_URL, temporary_settings

    settings = get_settings()
    with temporary_settings({PREFECT_API_URL: settings.prefect_url}):
        run = asyncio.run(_find_run(args.run, args.flow))
    url = f"{settings.prefect_ui_url}/runs/flow-run/{run.id}"
    out = args.out or settings.home_dir / "screenshots" / f"flow-run-{run.name}.png"
    if not Path(args.chromium).exists():
        raise SystemExit(f"{args.chromium} not found: `apt-get install -y chromium` installs it")
    written = screenshot(url, out, args.chromium, args.flow)
    print(
        f"| run | state | page | screenshots |\n|---|---|---|---|\n"
        f"| {run.name} | {run.state.name if run.state else '-'} | {url} | "
        f"{', '.join(map(str, written))} |"
    )


if __name__ == "__main__":
    main()
