"""The data-quality report people read: a summary page plus GX's Data Docs, readable offline.

:func:`write_report` puts one folder together per run: ``index.html`` (self-contained: inline
CSS, no scripts) with the verdict, the checks, class counts and dataset-wide figures, and
beside it this run's GX Data Docs pages. GX's pages link Bootstrap, jQuery and more from CDNs;
the copies here link a local stylesheet (``static/offline.css``) instead and load no remote
scripts, so the folder reads the same from the S3 store, a laptop or an air-gapped cluster.
"""

from __future__ import annotations

import html
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from validation.suite import Outcome

OFFLINE_CSS = Path(__file__).with_name("static") / "offline.css"
_REMOTE_TAG = re.compile(
    r"<link\b[^>]*\bhref=[\"']https?://[^>]*>|<script\b[^>]*\bsrc=[\"']https?://[^>]*>\s*</script>",
    re.IGNORECASE,
)
_REMOTE_IMG = re.compile(r"(<img\b[^>]*\bsrc=)[\"']https?://[^\"']*[\"']", re.IGNORECASE)


@dataclass(frozen=True)
class QualityReport:
    """Outcome of validating one dataset (small: it travels between Prefect tasks).

    Attributes:
        run_name: name of the validation run (the flow run's name in the flow).
        fingerprint: the dataset's fingerprint.
        root: the dataset folder.
        outcomes: one per check, passed or not.
        classes: per class: label, images and share per split.
        summary: dataset-wide figures (totals, imbalance, leakage, copies, near-blank).
        report_dir: local folder with ``index.html`` and the Data Docs pages, or None.
    """

    run_name: str
    fingerprint: str
    root: str
    outcomes: tuple[Outcome, ...]
    classes: tuple[dict[str, Any], ...]
    summary: dict[str, Any]
    report_dir: Path | None = None

    @property
    def critical_failures(self) -> tuple[Outcome, ...]:
        """Failed critical checks: any one fails the run."""
        return tuple(o for o in self.outcomes if not o.success and o.severity == "critical")

    @property
    def warnings(self) -> tuple[Outcome, ...]:
        """Failed warning checks: reported only."""
        return tuple(o for o in self.outcomes if not o.success and o.severity == "warning")

    @property
    def success(self) -> bool:
        """True when no critical check failed."""
        return not self.critical_failures

    @property
    def index(self) -> Path | None:
        """The report's front page, if it was written."""
        return None if self.report_dir is None else self.report_dir / "index.html"


def class_rows(classes: pd.DataFrame) -> tuple[dict[str, Any], ...]:
    """Per-class rows for tables and artifacts.

    Args:
        classes: :func:`validation.profile.class_table`.

    Returns:
        One dict per class: ``class``, ``train``, ``test`` (None where the folder is missing),
        ``train share`` and ``test share`` (rounded, None where undefined).
    """
    rows = []
    for record in classes.to_dict("records"):
        rows.append(
            {
                "class": record["label"],
                "train": None if pd.isna(record["train_count"]) else int(record["train_count"]),
                "test": None if pd.isna(record["test_count"]) else int(record["test_count"]),
                "train share": _rounded(record["train_share"]),
                "test share": _rounded(record["test_share"]),
            }
        )
    return tuple(rows)


def _rounded(value: Any) -> float | None:
    return None if pd.isna(value) else round(float(value), 4)


def plain_summary(summary: pd.DataFrame) -> dict[str, Any]:
    """The one-row summary table as plain Python values (JSON-ready).

    Args:
        summary: :func:`validation.profile.summary_table`.

    Returns:
        Column name to value; floats rounded to 4 places, missing values as None.
    """
    values: dict[str, Any] = {}
    for key, value in summary.to_dict("records")[0].items():
        if pd.isna(value):
            values[str(key)] = None
        elif isinstance(value, float):
            values[str(key)] = round(value, 4)
        else:
            values[str(key)] = value.item() if hasattr(value, "item") else value
    return values


# --- the front page ------------------------------------------------------------------------

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#212529;max-width:75rem}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}
th,td{border:1px solid #ccc;padding:.25rem .6rem;text-align:left;vertical-align:top}
th{background:#f1f3f5}.ok{color:#1e7e34}.critical{color:#c82333;font-weight:600}
.warning{color:#9c6500}.verdict{font-size:1.3rem}
"""


def _table(headers: list[str], rows: list[list[Any]], markup: int | None = None) -> str:
    """An HTML table; every cell is escaped except column ``markup`` (our own markup)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = [
            cell if i == markup else html.escape("" if cell is None else str(cell))
            for i, cell in enumerate(row)
        ]
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_index(report: QualityReport, pages: list[str]) -> str:
    """The report's front page as one self-contained HTML document.

    Args:
        report: the validation outcome.
        pages: relative links to this run's Data Docs pages.

    Returns:
        HTML with inline CSS and no scripts or remote resources.
    """
    critical, warnings = report.critical_failures, report.warnings
    verdict = (
        f'<p class="verdict critical">FAILED: {len(critical)} critical check(s) failed</p>'
        if critical
        else f'<p class="verdict ok">PASSED, with {len(warnings)} warning(s)</p>'
    )
    checks = [
        [
            o.name,
            o.severity,
            f'<span class="{"ok" if o.success else o.severity}">'
            f"{'passed' if o.success else 'FAILED'}</span>",
            o.observed,
            o.message.split(": ", 1)[-1] if o.message else "",
        ]
        for o in report.outcomes
    ]
    checks_html = _table(["check", "severity", "status", "observed", "details"], checks, 2)
    classes = _table(
        ["class", "train", "test", "train share", "test share"],
        [list(row.values()) for row in report.classes],
    )
    summary = _table(["figure", "value"], [[k, v] for k, v in report.summary.items()])
    links = "".join(
        f'<li><a href="{html.escape(page)}">{html.escape(page)}</a></li>' for page in pages
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>Data quality: {html.escape(report.run_name)}</title>"
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>Data quality: {html.escape(report.run_name)}</h1>{verdict}"
        f"<p>Dataset <code>{html.escape(report.fingerprint[:12])}</code> at "
        f"<code>{html.escape(report.root)}</code></p>"
        f"<h2>Checks</h2>{checks_html}<h2>Classes</h2>{classes}"
        f"<h2>Figures</h2>{summary}"
        f"<h2>Great Expectations Data Docs</h2><ul>{links}</ul>"
        "</body></html>"
    )


# --- offline copies of the Data Docs pages -------------------------------------------------


def make_offline(page_html: str, site_root: str) -> str:
    """Rewrite a Data Docs page to load nothing from the network.

    Remote stylesheets and scripts are dropped, the local stand-in stylesheet is linked, and
    remote images (GX's logo) point at the copy GX ships.

    Args:
        page_html: the page as GX wrote it.
        site_root: relative path from the page to the site root (``../..``).

    Returns:
        The rewritten page.
    """
    page_html = _REMOTE_TAG.sub("", page_html)
    page_html = _REMOTE_IMG.sub(rf'\1"{site_root}/static/images/logo-long.png"', page_html)
    stylesheet = f'<link rel="stylesheet" href="{site_root}/static/offline.css">'
    return page_html.replace("</head>", f"{stylesheet}</head>", 1)


def _copy_page(page: Path, site: Path, out: Path) -> str:
    relative = page.relative_to(site)
    target = out / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    root = os.path.relpath(out, target.parent)
    target.write_text(make_offline(page.read_text(encoding="utf-8"), root), encoding="utf-8")
    return relative.as_posix()


#: What the pages use of GX's ``static/`` (the rest is ~4 MB of fonts and tutorial GIFs).
_STATIC_FILES = ("images/logo-long.png", "images/favicon.ico")


def _copy_static(source: Path, target: Path) -> None:
    target.mkdir(parents=True)
    if (source / "styles").is_dir():
        shutil.copytree(source / "styles", target / "styles")
    for name in _STATIC_FILES:
        if (source / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / name, target / name)
    shutil.copyfile(OFFLINE_CSS, target / "offline.css")


def write_report(
    report: QualityReport, out: Path, docs_index: Path | None, pages: tuple[Path, ...]
) -> Path:
    """Write the run's report folder: front page, Data Docs pages, local static files.

    Args:
        report: the validation outcome.
        out: the folder (replaced if it exists).
        docs_index: the local GX site's index page (its folder is the site root), or None.
        pages: this run's validation result pages in that site.

    Returns:
        The front page, ``out/index.html``.
    """
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    links: list[str] = []
    if docs_index is not None:
        site = docs_index.parent
        _copy_static(site / "static", out / "static")
        links = [_copy_page(page, site, out) for page in pages]
        for suite_page in sorted((site / "expectations").glob("*.html")):
            _copy_page(suite_page, site, out)
    index = out / "index.html"
    index.write_text(render_index(report, links), encoding="utf-8")
    return index
