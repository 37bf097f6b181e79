"""Great Expectations data-quality suites for an image dataset in FER2013 layout.

GX has no image type, so the dataset is validated through two DataFrames derived from the
per-image manifest (one row per image: ``split``, ``label``, ``relpath``, ``sha256``,
``bytes``, ``width``, ``height``, ``mode``):

* the *counts* table (:func:`count_table`): one row per (split, class) folder, checked for
  unexpected class folders, empty or missing classes and unexpected or missing splits;
* the manifest itself: checked for a non-empty dataset, the image size and grayscale mode.

Both run in a GX *file* data context through checkpoints that also update the local Data
Docs site. ``great_expectations`` is imported lazily inside :func:`validate_dataset`: its
import takes seconds and the serving path must not pay for it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import pandas as pd

logger = logging.getLogger(__name__)

#: Columns a manifest must have (an empty manifest may have none of them).
MANIFEST_COLUMNS: tuple[str, ...] = (
    "split",
    "label",
    "relpath",
    "sha256",
    "bytes",
    "width",
    "height",
    "mode",
)
#: PIL modes accepted as grayscale.
GRAYSCALE_MODES: tuple[str, ...] = ("L",)
#: Number of example paths or folders quoted in one failure line.
MAX_EXAMPLES = 5

_DATASOURCE = "fer_dataset"
_COUNTS = "fer_counts"
_IMAGES = "fer_images"
_BATCH = "whole_dataframe"
_RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": 20}
_INT_COLUMNS = frozenset({"bytes", "width", "height"})


@dataclass(frozen=True)
class QualityReport:
    """Outcome of :func:`validate_dataset`.

    Attributes:
        success: True when every expectation passed.
        failures: One human-readable line per failed expectation: what is wrong, examples,
            and what to do about it.
        evaluated: Number of expectations evaluated.
        docs_index: Path to the built Data Docs ``index.html``, or None if it was not built.
    """

    success: bool
    failures: tuple[str, ...]
    evaluated: int
    docs_index: Path | None


def count_table(
    manifest: pd.DataFrame, classes: Sequence[str], splits: Sequence[str]
) -> pd.DataFrame:
    """Count images per (split, class) folder.

    Args:
        manifest: One row per image with at least the ``split`` and ``label`` columns (an
            empty manifest may have no columns at all).
        classes: Expected class names.
        splits: Expected split names.

    Returns:
        One row per expected (split, label) pair, in ``splits`` x ``classes`` order and with
        ``count`` 0 when absent, followed by one row per unexpected (split, label) pair found
        in the manifest (sorted). Columns: ``split`` (str), ``label`` (str), ``count`` (int)
        and ``expected`` (bool).

    Raises:
        ValueError: If a non-empty manifest lacks the ``split`` or ``label`` column.
    """
    expected_splits = list(dict.fromkeys(str(s) for s in splits))
    expected_classes = list(dict.fromkeys(str(c) for c in classes))
    observed: dict[tuple[str, str], int] = {}
    if len(manifest):
        missing = [c for c in ("split", "label") if c not in manifest.columns]
        if missing:
            raise ValueError(f"manifest lacks column(s) {missing}")
        keys = manifest[["split", "label"]].astype(str)
        for (split, label), size in keys.groupby(["split", "label"], sort=True).size().items():
            observed[(str(split), str(label))] = int(size)

    rows: list[tuple[str, str, int, bool]] = [
        (split, label, observed.get((split, label), 0), True)
        for split in expected_splits
        for label in expected_classes
    ]
    rows += [
        (split, label, size, False)
        for (split, label), size in sorted(observed.items())
        if split not in expected_splits or label not in expected_classes
    ]
    table = pd.DataFrame(rows, columns=["split", "label", "count", "expected"])
    return table.astype({"split": str, "label": str, "count": "int64", "expected": bool})


def validate_dataset(
    manifest: pd.DataFrame,
    classes: Sequence[str],
    splits: Sequence[str],
    context_dir: Path,
    run_name: str,
    image_size: int = 48,
) -> QualityReport:
    """Validate a dataset manifest with Great Expectations and build Data Docs.

    Runs the counts suite on :func:`count_table` and the images suite on the manifest in a
    GX file data context rooted at ``context_dir`` (created if absent; GX keeps its files
    under ``context_dir/gx``). Datasource, assets, suites, validation definitions and
    checkpoints are replaced by name, so repeated calls on the same directory work.
    Analytics are disabled and GX's logging is held at WARNING for the call.

    Args:
        manifest: One row per image with the columns in :data:`MANIFEST_COLUMNS`.
        classes: Expected class names.
        splits: Expected split names.
        context_dir: Project root of the GX file data context.
        run_name: Name recorded on the validation results and shown in Data Docs.
        image_size: Expected width and height in pixels.

    Returns:
        The quality report; ``success`` is False when any expectation failed, including
        when the manifest is empty.

    Raises:
        ValueError: If a non-empty manifest lacks required columns.
    """
    images = _normalise_manifest(manifest)
    counts = count_table(images, classes, splits)
    context_dir = Path(context_dir)
    context_dir.mkdir(parents=True, exist_ok=True)

    with (
        ExitStack() as stack,
        _scoped_env("GX_ANALYTICS_ENABLED", "false"),
        _quiet("great_expectations"),
    ):
        import great_expectations as gx
        from great_expectations.core.run_identifier import RunIdentifier
        from great_expectations.data_context import data_context_variables

        # This one GX module logs under its file path, outside the package's logger tree.
        stack.enter_context(_quiet(data_context_variables.logger.name))

        context = _open_context(gx, context_dir)
        datasource = context.data_sources.add_or_update_pandas(name=_DATASOURCE)
        counts_checkpoint = _checkpoint(gx, context, datasource, _counts_suite(gx, splits))
        images_checkpoint = _checkpoint(gx, context, datasource, _images_suite(gx, image_size))
        run_id = RunIdentifier(run_name=run_name, run_time=datetime.now(UTC))
        outcomes = [  # images first: an empty manifest is reported before its empty folders
            (images_checkpoint.run(batch_parameters={"dataframe": images}, run_id=run_id), images),
            (counts_checkpoint.run(batch_parameters={"dataframe": counts}, run_id=run_id), counts),
        ]
        docs_index = _docs_index(context)

    failures: list[str] = []
    evaluated = 0
    for checkpoint_result, frame in outcomes:
        for validation in checkpoint_result.run_results.values():
            for result in validation.results:
                evaluated += 1
                if not result.success:
                    failures.append(_describe(result, frame, classes, splits, image_size))
    report = QualityReport(
        success=not failures, failures=tuple(failures), evaluated=evaluated, docs_index=docs_index
    )
    if report.success:
        logger.info("Dataset validation %r passed %d expectations", run_name, evaluated)
    else:
        logger.warning(
            "Dataset validation %r failed %d of %d expectations:\n  %s",
            run_name,
            len(failures),
            evaluated,
            "\n  ".join(failures),
        )
    return report


# --- GX plumbing ---------------------------------------------------------------------------


@contextmanager
def _scoped_env(name: str, value: str) -> Iterator[None]:
    """Set an environment variable for the duration of the block, unless already set."""
    if name in os.environ:
        yield
        return
    os.environ[name] = value
    try:
        yield
    finally:
        os.environ.pop(name, None)


@contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Hold a logger at WARNING (or above, if set so already) for the block."""
    target = logging.getLogger(logger_name)
    previous = target.level
    if target.getEffectiveLevel() < logging.WARNING:
        target.setLevel(logging.WARNING)
    try:
        yield
    finally:
        target.setLevel(previous)


def _open_context(gx: Any, context_dir: Path) -> Any:
    """Open (or create) the file data context with analytics and progress bars off."""
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=str(context_dir))
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    context.enable_analytics(False)  # also saves the variables to great_expectations.yml
    return context


def _checkpoint(gx: Any, context: Any, datasource: Any, suite: Any) -> Any:
    """Register ``suite`` against a fresh dataframe asset of the same name; return its checkpoint.

    ``add_or_update_pandas`` replaced the datasource with an empty one, so the asset and its
    batch definition are always new; everything else is added or replaced by name.
    """
    asset = datasource.add_dataframe_asset(name=suite.name)
    batch_definition = asset.add_batch_definition_whole_dataframe(_BATCH)
    suite = context.suites.add_or_update(suite)
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=suite.name, data=batch_definition, suite=suite)
    )
    return context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=suite.name,
            validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="update_data_docs")],
            result_format=_RESULT_FORMAT,
        )
    )


def _counts_suite(gx: Any, splits: Sequence[str]) -> Any:
    """Expectations on the :func:`count_table` frame."""
    expected_splits = list(dict.fromkeys(str(s) for s in splits))
    suite = gx.ExpectationSuite(name=_COUNTS)
    ex = gx.expectations
    suite.add_expectation(
        ex.ExpectColumnValuesToBeInSet(
            column="expected",
            value_set=[True],
            meta={"check": "known_folders"},
        )
    )
    suite.add_expectation(
        ex.ExpectColumnValuesToBeBetween(
            column="count",
            min_value=1,
            meta={"check": "non_empty_folders"},
        )
    )
    # "Split values equal the expected set" as two expectations: the single
    # ExpectColumnDistinctValuesToEqualSet breaks GX's Data Docs renderer when it fails
    # (KeyError 'unexpected_percent').
    suite.add_expectation(
        ex.ExpectColumnValuesToBeInSet(
            column="split",
            value_set=expected_splits,
            meta={"check": "known_splits"},
        )
    )
    suite.add_expectation(
        ex.ExpectColumnDistinctValuesToContainSet(
            column="split",
            value_set=expected_splits,
            meta={"check": "all_splits"},
        )
    )
    return suite


def _images_suite(gx: Any, image_size: int) -> Any:
    """Expectations on the per-image manifest."""
    suite = gx.ExpectationSuite(name=_IMAGES)
    ex = gx.expectations
    suite.add_expectation(
        ex.ExpectTableRowCountToBeBetween(
            min_value=1,
            meta={"check": "non_empty_manifest"},
        )
    )
    for column in ("width", "height"):
        suite.add_expectation(
            ex.ExpectColumnValuesToBeBetween(
                column=column,
                min_value=image_size,
                max_value=image_size,
                meta={"check": "image_size"},
            )
        )
    suite.add_expectation(
        ex.ExpectColumnValuesToBeInSet(
            column="mode",
            value_set=list(GRAYSCALE_MODES),
            meta={"check": "grayscale"},
        )
    )
    return suite


def _docs_index(context: Any) -> Path | None:
    """Return the local Data Docs index page if it was built."""
    for site in context.get_docs_sites_urls():
        url = site.get("site_url") or ""
        parsed = urlparse(url)
        if parsed.scheme == "file":
            path = Path(url2pathname(parsed.path))
            if path.is_file():
                return path
    return None


# --- manifest and failure lines ------------------------------------------------------------


def _normalise_manifest(manifest: pd.DataFrame) -> pd.DataFrame:
    """Return the manifest with a fresh RangeIndex; give an empty one the expected columns."""
    if len(manifest) == 0:
        return pd.DataFrame(
            {
                column: pd.Series([], dtype="int64" if column in _INT_COLUMNS else str)
                for column in MANIFEST_COLUMNS
            }
        )
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise ValueError(f"manifest lacks column(s) {missing}; expected {list(MANIFEST_COLUMNS)}")
    return manifest.reset_index(drop=True)


def _examples(items: Sequence[str], total: int | None = None) -> str:
    """Join up to :data:`MAX_EXAMPLES` items, noting how many more there are."""
    total = len(items) if total is None else total
    shown = ", ".join(items[:MAX_EXAMPLES])
    more = total - min(len(items), MAX_EXAMPLES)
    return f"{shown}, ... ({more} more)" if more > 0 else shown


def _images(count: int) -> str:
    """Return ``"1 image is"`` or ``"N images are"``."""
    return "1 image is" if count == 1 else f"{count} images are"


def _number(value: Any) -> str:
    """Format a pixel dimension, dropping a float's ``.0``."""
    number = float(value)
    return str(int(number)) if number.is_integer() else str(value)


def _folders(rows: pd.DataFrame) -> list[str]:
    """Format count-table rows as ``split/label (N images)``."""
    return [
        f"{split}/{label} ({count} image{'s' if count != 1 else ''})"
        for split, label, count in zip(rows["split"], rows["label"], rows["count"], strict=True)
    ]


def _describe(
    result: Any,
    frame: pd.DataFrame,
    classes: Sequence[str],
    splits: Sequence[str],
    image_size: int,
) -> str:
    """Turn one failed expectation result into a human-readable line."""
    config = result.expectation_config
    kwargs = dict(config.kwargs)
    column = kwargs.get("column")
    details = dict(result.result or {})
    exception = result.exception_info or {}
    if exception.get("raised_exception"):
        return (
            f"{config.type} on column {column!r} could not be evaluated: "
            f"{exception.get('exception_message')}; check the manifest's columns and types"
        )

    check = (config.meta or {}).get("check")
    if check == "known_folders":
        rows = frame[~frame["expected"]]
        return (
            f"{len(rows)} unexpected class folder(s): {_examples(_folders(rows))}; expected only "
            f"classes {', '.join(classes)} in splits {', '.join(splits)}; remove or rename "
            "these folders, or add the class to the configured class list"
        )
    if check == "non_empty_folders":
        rows = frame[frame["count"] < 1]
        if len(rows) == 1:
            row = rows.iloc[0]
            return (
                f"{row['split']}/{row['label']} has 0 images; expected at least 1; the folder "
                "is empty or missing: re-download or re-extract the dataset"
            )
        names = [f"{s}/{c}" for s, c in zip(rows["split"], rows["label"], strict=True)]
        return (
            f"{len(rows)} class folders have 0 images: {_examples(names)}; expected at least 1 "
            "image each; the folders are empty or missing: re-download or re-extract the dataset"
        )
    if check == "known_splits":
        found = sorted({str(v) for v in details.get("partial_unexpected_list") or []})
        return (
            f"unexpected split folder(s) {', '.join(found)}; expected only "
            f"{', '.join(splits)}; remove or rename them"
        )
    if check == "all_splits":
        absent = sorted(str(v) for v in details.get("partial_missing_list") or [])
        return (
            f"split folder(s) {', '.join(absent)} missing; expected {', '.join(splits)}; "
            "check the dataset layout <root>/<split>/<class>/*.jpg"
        )
    if check == "non_empty_manifest":
        return (
            f"the manifest has {details.get('observed_value', 0)} images; expected at least 1; "
            "check that the dataset root holds <split>/<class>/*.jpg images"
        )
    if check == "image_size" and column in frame.columns:
        # Like GX, leave missing values out (they are not "unexpected").
        bad = frame[frame[column].notna() & (frame[column] != image_size)]
        total = int(details.get("unexpected_count") or len(bad))
        observed = sorted({_number(v) for v in bad[column]})
        return (
            f"{_images(total)} not {image_size}x{image_size} ({column} is "
            f"{_examples(observed)} instead of {image_size}): "
            f"{_examples(list(bad['relpath'].astype(str)), total)}; resize them to "
            f"{image_size}x{image_size} or remove them"
        )
    if check == "grayscale" and column in frame.columns:
        bad = frame[frame[column].notna() & ~frame[column].isin(GRAYSCALE_MODES)]
        total = int(details.get("unexpected_count") or len(bad))
        modes = sorted({str(v) for v in bad[column]})
        return (
            f"{_images(total)} not grayscale (mode {', '.join(modes)} instead of "
            f"{'/'.join(GRAYSCALE_MODES)}): {_examples(list(bad['relpath'].astype(str)), total)}; "
            "convert them with PIL Image.convert('L') or remove them"
        )
    return f"{config.type} failed on {column or 'the table'}: {details}"
