"""Great Expectations suites over a dataset's profile tables, with two severities.

Each check is a GX 1.x expectation with a stable name (its ``meta["name"]``), a severity
(GX's own ``severity``: *critical* fails the run, *warning* only reports) and a description
that Data Docs shows. One checkpoint validates the three tables of
:class:`validation.profile.DatasetProfile` and updates the local Data Docs site of a GX *file*
data context. ``great_expectations`` is imported inside :func:`run_suites` only: its import
takes seconds and the serving path must not pay for it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse
from urllib.request import url2pathname

import pandas as pd

from validation.config import QualityConfig
from validation.profile import DatasetProfile

logger = logging.getLogger(__name__)

Severity = Literal["critical", "warning"]
Table = Literal["images", "classes", "summary"]

#: Number of example paths or classes quoted in one failure line.
MAX_EXAMPLES = 5

_DATASOURCE = "fer_dataset"
_BATCH = "whole_dataframe"
#: Validation runs the local GX context keeps (results and Data Docs pages). Every run's report
#: is published in full to the store; without a bound, Data Docs' index rebuild grows with
#: every nightly run.
KEEP_RUNS = 30
_SUITE_PREFIX = "fer_"


@dataclass(frozen=True)
class Check:
    """One expectation, before GX is imported.

    Attributes:
        name: stable identifier, quoted in failure messages and state messages.
        table: which profile table it validates.
        severity: ``critical`` fails the run; ``warning`` is only reported.
        expectation: class name under ``great_expectations.expectations``.
        kwargs: the expectation's arguments.
        description: what it asks, in words (shown in Data Docs).
    """

    name: str
    table: Table
    severity: Severity
    expectation: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class Outcome:
    """The result of one check.

    Attributes:
        name: the check's name.
        severity: ``critical`` or ``warning``.
        success: whether it passed.
        observed: the observed value, in words.
        message: for a failure, what is wrong, examples and the fix; empty when it passed.
    """

    name: str
    severity: Severity
    success: bool
    observed: str
    message: str = ""


def _in_set(column: str, mostly: float = 1.0) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"column": column, "value_set": [False]}
    if mostly < 1.0:
        kwargs["mostly"] = mostly
    return kwargs


def build_checks(config: QualityConfig) -> list[Check]:
    """The data-quality checks, with bounds from ``config``.

    Args:
        config: the bounds.

    Returns:
        Checks in report order.
    """
    # Reports list the checks in this order, so the groups are concatenated, not sorted.
    return [
        *_image_file_checks(config),
        *_split_total_checks(config),
        *_class_checks(config),
        *_image_content_checks(config),
    ]


def _image_file_checks(config: QualityConfig) -> list[Check]:
    """Checks on the image files themselves: any at all, decodable, size and mode.

    Args:
        config: the bounds.

    Returns:
        Checks on the ``images`` table, in report order.
    """
    size = config.image_size
    return [
        Check("images_not_empty", "images", "critical", "ExpectTableRowCountToBeBetween",
              {"min_value": 1}, "The dataset holds at least one image."),
        Check("images_decode", "images", "critical", "ExpectColumnValuesToBeInSet",
              {"column": "decodes", "value_set": [True]},
              "Every file decodes completely as an image (not truncated, not another format)."),
        Check("image_width", "images", "critical", "ExpectColumnValuesToBeBetween",
              {"column": "width", "min_value": size, "max_value": size},
              f"Every image is {size} pixels wide."),
        Check("image_height", "images", "critical", "ExpectColumnValuesToBeBetween",
              {"column": "height", "min_value": size, "max_value": size},
              f"Every image is {size} pixels high."),
        Check("images_grayscale", "images", "warning", "ExpectColumnValuesToBeInSet",
              {"column": "mode", "value_set": ["L"]},
              "Every image is stored as 8-bit grayscale (others are converted when decoded)."),
    ]  # fmt: skip


def _split_total_checks(config: QualityConfig) -> list[Check]:
    """Checks on how many images each split holds.

    Args:
        config: the bounds.

    Returns:
        Checks on the ``summary`` table, in report order.
    """
    c = config
    return [
        Check("train_images", "summary", "critical", "ExpectColumnValuesToBeBetween",
              {"column": "train_images", "min_value": c.min_train_images,
               "max_value": c.max_images},
              f"train/ holds {c.min_train_images:,} to {c.max_images:,} images."),
        Check("test_images", "summary", "critical", "ExpectColumnValuesToBeBetween",
              {"column": "test_images", "min_value": c.min_test_images,
               "max_value": c.max_images},
              f"test/ holds {c.min_test_images:,} to {c.max_images:,} images."),
    ]  # fmt: skip


def _class_checks(config: QualityConfig) -> list[Check]:
    """Checks on the class folders, their counts and shares, and the classes' balance.

    The imbalance ratio is a ``summary`` figure but reads with the class shares, so it sits
    between them and the share shift in reports.

    Args:
        config: the bounds.

    Returns:
        Checks on the ``classes`` table (and the imbalance ratio), in report order.
    """
    c = config
    return [
        Check("class_folders_known", "classes", "critical", "ExpectColumnValuesToBeInSet",
              {"column": "expected", "value_set": [True]},
              "Every class folder is one of the expected classes."),
        Check("train_classes_present", "classes", "critical", "ExpectColumnValuesToBeInSet",
              {"column": "train_present", "value_set": [True]},
              "train/ has a folder for every class."),
        Check("test_classes_present", "classes", "critical", "ExpectColumnValuesToBeInSet",
              {"column": "test_present", "value_set": [True]},
              "test/ has a folder for every class."),
        Check("train_class_counts", "classes", "critical", "ExpectColumnValuesToBeBetween",
              {"column": "train_count", "min_value": c.min_class_train_images},
              f"Every train class has at least {c.min_class_train_images:,} images."),
        Check("test_class_counts", "classes", "critical", "ExpectColumnValuesToBeBetween",
              {"column": "test_count", "min_value": c.min_class_test_images},
              f"Every test class has at least {c.min_class_test_images:,} images."),
        Check("train_class_shares", "classes", "critical", "ExpectColumnValuesToBeBetween",
              {"column": "train_share", "min_value": c.min_class_share,
               "max_value": c.max_class_share},
              f"Every class is {c.min_class_share:.1%} to {c.max_class_share:.0%} of train."),
        Check("imbalance_ratio", "summary", "critical", "ExpectColumnValuesToBeBetween",
              {"column": "imbalance_ratio", "max_value": c.max_imbalance_ratio},
              f"The largest train class is at most {c.max_imbalance_ratio:g}x the smallest."),
        Check("class_share_shift", "classes", "warning", "ExpectColumnValuesToBeBetween",
              {"column": "share_shift", "max_value": c.share_shift_warning},
              f"Each class's test share is within {c.share_shift_warning:.1%} of its train "
              "share."),
        Check("class_share_shift_bounded", "classes", "critical", "ExpectColumnValuesToBeBetween",
              {"column": "share_shift", "max_value": c.share_shift_critical},
              f"Each class's test share is within {c.share_shift_critical:.0%} of its train "
              "share."),
    ]  # fmt: skip


def _image_content_checks(config: QualityConfig) -> list[Check]:
    """Checks on the pixels: leakage from train, copies, label conflicts, near-blank images.

    Each warning asks for none; its critical twin bounds the fraction with ``mostly``.

    Args:
        config: the bounds.

    Returns:
        Checks on the ``images`` table, in report order.
    """
    c = config
    return [
        Check("leakage_none", "images", "warning", "ExpectColumnValuesToBeInSet",
              _in_set("leaked_from_train"),
              "No test image's pixels occur in train (before cleaning)."),
        Check("leakage_bounded", "images", "critical", "ExpectColumnValuesToBeInSet",
              _in_set("leaked_from_train", 1 - c.max_leaked_test_fraction),
              f"At most {c.max_leaked_test_fraction:.0%} of test images occur in train "
              "(before cleaning); more means the source is broken."),
        Check("copies_none", "images", "warning", "ExpectColumnValuesToBeInSet",
              _in_set("repeats_earlier"), "No image repeats another image's pixels."),
        Check("copies_bounded", "images", "critical", "ExpectColumnValuesToBeInSet",
              _in_set("repeats_earlier", 1 - c.max_extra_copy_fraction),
              f"At most {c.max_extra_copy_fraction:.0%} of images repeat another's pixels."),
        Check("label_conflicts_none", "images", "warning", "ExpectColumnValuesToBeInSet",
              _in_set("label_conflict"),
              "No pixel-identical images carry different labels."),
        Check("near_blank_none", "images", "warning", "ExpectColumnValuesToBeInSet",
              _in_set("near_blank"), "No image is near-blank (cleaning drops them from train)."),
        Check("near_blank_bounded", "images", "critical", "ExpectColumnValuesToBeInSet",
              _in_set("near_blank", 1 - c.max_near_blank_fraction),
              f"At most {c.max_near_blank_fraction:.1%} of images are near-blank."),
    ]  # fmt: skip


@dataclass(frozen=True)
class SuiteRun:
    """What :func:`run_suites` returns: outcomes and where Data Docs are."""

    outcomes: tuple[Outcome, ...]
    docs_index: Path | None
    pages: tuple[Path, ...]


def run_suites(
    profile: DatasetProfile,
    config: QualityConfig,
    context_dir: Path,
    run_name: str,
) -> SuiteRun:
    """Validate the profile's tables with GX in a file data context and update Data Docs.

    Datasource, assets, suites, validation definitions and the checkpoint are replaced by
    name, so repeated calls on the same directory work. Analytics are off and GX's logging is
    held at WARNING for the call.

    Args:
        profile: the dataset's tables.
        config: the bounds.
        context_dir: project root of the GX file data context (created if absent).
        run_name: name of the run in Data Docs.

    Returns:
        One outcome per check (in :func:`build_checks` order), the Data Docs index and this
        run's validation pages.
    """
    checks = build_checks(config)
    frames: dict[str, pd.DataFrame] = {
        "images": profile.images,
        "classes": profile.classes,
        "summary": profile.summary,
    }
    results, docs_index, pages = _validate_tables(frames, checks, context_dir, run_name)
    outcomes = _ordered_outcomes(checks, results, profile, config)
    return SuiteRun(outcomes, docs_index, tuple(p for p in pages if p is not None))


def _validate_tables(
    frames: dict[str, pd.DataFrame],
    checks: list[Check],
    context_dir: Path,
    run_name: str,
) -> tuple[dict[Any, Any], Path | None, tuple[Path | None, ...]]:
    """Run one checkpoint per table in the GX file data context and update Data Docs.

    GX is imported here, inside the block that turns analytics off and quiets its logging,
    so that neither its import nor the run talks to the network or floods the log.

    Args:
        frames: the tables to validate, by table name.
        checks: the checks; each goes into the suite of its table.
        context_dir: project root of the GX file data context (created if absent).
        run_name: name of the run in Data Docs.

    Returns:
        GX's validation results by result key, the Data Docs index, and each result's
        Data Docs page (``None`` where none was built).
    """
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
        _prune_runs(context, KEEP_RUNS - 1)
        datasource = context.data_sources.add_or_update_pandas(name=_DATASOURCE)
        run_id = RunIdentifier(run_name=run_name, run_time=datetime.now(UTC))
        results: dict[Any, Any] = {}
        for table, frame in frames.items():
            checkpoint = _checkpoint(gx, context, datasource, _suite(gx, table, checks))
            run = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=run_id)
            results.update(run.run_results)
        docs_index = _docs_index(context)
        pages = tuple(_page(context, key) for key in results)
    return results, docs_index, pages


def _suite(gx: Any, table: str, checks: list[Check]) -> Any:
    """The expectation suite of one table: its checks, in :func:`build_checks` order.

    Args:
        gx: the ``great_expectations`` module.
        table: the table's name.
        checks: all checks; those of other tables are left out.

    Returns:
        The suite, not yet saved to the context.
    """
    suite = gx.ExpectationSuite(name=f"{_SUITE_PREFIX}{table}")
    for check in checks:
        if check.table == table:
            suite.add_expectation(_expectation(gx, check))
    return suite


def _ordered_outcomes(
    checks: list[Check],
    results: dict[Any, Any],
    profile: DatasetProfile,
    config: QualityConfig,
) -> tuple[Outcome, ...]:
    """One outcome per evaluated check, in :func:`build_checks` order.

    GX returns results per suite, so they are matched back to their checks by the name each
    expectation carries in its ``meta`` (falling back to the expectation type).

    Args:
        checks: the checks, in report order.
        results: GX's validation results by result key.
        profile: the dataset's tables (for failure messages).
        config: the bounds (for failure messages).

    Returns:
        The outcomes; a check with no result is left out.
    """
    by_name = {check.name: check for check in checks}
    outcomes: dict[str, Outcome] = {}
    for validation in results.values():
        for item in validation.results:
            name = (item.expectation_config.meta or {}).get("name", item.expectation_config.type)
            check = by_name[name]
            outcomes[name] = _outcome(check, item, profile, config)
    return tuple(outcomes[c.name] for c in checks if c.name in outcomes)


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


def _expectation(gx: Any, check: Check) -> Any:
    expectation_class = getattr(gx.expectations, check.expectation)
    return expectation_class(
        **check.kwargs,
        severity=check.severity,
        description=f"[{check.severity}] {check.name}: {check.description}",
        meta={"name": check.name},
    )


def _checkpoint(gx: Any, context: Any, datasource: Any, suite: Any) -> Any:
    """Register ``suite`` against a fresh dataframe asset of the same name; return its checkpoint.

    A checkpoint passes one dataframe to all its validation definitions, so each table gets
    its own. ``add_or_update_pandas`` replaced the datasource with an empty one, so the asset
    and its batch definition are always new; everything else is added or replaced by name.
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
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": 20},
        )
    )


def _prune_runs(context: Any, keep: int) -> None:
    """Delete all but the newest ``keep`` runs' validation results and their Data Docs pages."""
    store = context.validation_results_store
    keys = store.list_keys()
    runs = sorted({(k.run_id.run_time, k.run_id.run_name) for k in keys})
    old = set(runs[: max(len(runs) - keep, 0)])
    for key in keys:
        if (key.run_id.run_time, key.run_id.run_name) not in old:
            continue
        page = _page(context, key)
        store.remove_key(key)
        if page is not None:
            page.unlink()
            for folder in page.parents[:2]:  # <time>/ and <run>/ once empty
                if any(folder.iterdir()):
                    break
                folder.rmdir()


def _file_url_path(url: str) -> Path | None:
    parsed = urlparse(url)
    if parsed.scheme != "file":
        return None
    path = Path(url2pathname(parsed.path))
    return path if path.is_file() else None


def _docs_index(context: Any) -> Path | None:
    """The local Data Docs index page, if it was built."""
    for site in context.get_docs_sites_urls():
        path = _file_url_path(site.get("site_url") or "")
        if path is not None:
            return path
    return None


def _page(context: Any, key: Any) -> Path | None:
    """The local Data Docs page of one validation result, if it was built."""
    for site in context.get_docs_sites_urls(resource_identifier=key):
        path = _file_url_path(site.get("site_url") or "")
        if path is not None:
            return path
    return None


# --- outcomes and failure lines ------------------------------------------------------------


def _examples(items: list[str], total: int | None = None) -> str:
    """Join up to :data:`MAX_EXAMPLES` items, noting how many more there are."""
    total = len(items) if total is None else total
    shown = ", ".join(items[:MAX_EXAMPLES])
    more = total - min(len(items), MAX_EXAMPLES)
    return f"{shown}, ... ({more} more)" if more > 0 else shown


def _flagged(images: pd.DataFrame, column: str) -> pd.DataFrame:
    return images[images[column].map(lambda v: v is True)]


def _paths(rows: pd.DataFrame) -> str:
    return _examples(list(rows["relpath"].astype(str)))


def _share(count: int, total: int) -> str:
    return f"{count:,} of {total:,} ({count / total:.1%})" if total else f"{count:,}"


def _bad_values(frame: pd.DataFrame, column: str, ok: Callable[[Any], bool]) -> pd.DataFrame:
    values = frame[column]
    return frame[values.notna() & ~values.map(ok)]


def _class_list(rows: pd.DataFrame, column: str, fmt: str = "{:,}") -> str:
    return _examples(
        [f"{label} ({fmt.format(v)})" for label, v in zip(rows["label"], rows[column], strict=True)]
    )


def _observed(check: Check, item: Any, profile: DatasetProfile) -> str:
    details = dict(item.result or {})
    column = check.kwargs.get("column")
    if check.table == "summary" and column:
        value = profile.summary[column].iloc[0]
        if pd.isna(value):
            return "missing"
        return f"{int(value):,}" if float(value).is_integer() else f"{value:.4g}"
    if "observed_value" in details:
        return str(details["observed_value"])
    if "unexpected_count" in details:
        applicable = details.get("element_count", 0) - details.get("missing_count", 0)
        return (
            f"{details['unexpected_count']:,} of {applicable:,} "
            f"({details.get('unexpected_percent') or 0:.2f}%)"
        )
    return ""


def _outcome(check: Check, item: Any, profile: DatasetProfile, config: QualityConfig) -> Outcome:
    observed = _observed(check, item, profile)
    if item.success:
        return Outcome(check.name, check.severity, True, observed)
    exception = item.exception_info or {}
    if exception.get("raised_exception"):
        message = (
            f"could not be evaluated: {exception.get('exception_message')}; "
            "this is a bug in the profile tables, please report it"
        )
    else:
        message = MESSAGES[check.name](profile, config)
    return Outcome(check.name, check.severity, False, observed, f"{check.name}: {message}")


_Message = Callable[[DatasetProfile, QualityConfig], str]
_REDOWNLOAD = "re-download or re-extract the dataset"


def _msg_not_empty(p: DatasetProfile, c: QualityConfig) -> str:
    return (
        "the dataset holds no images; check that its root holds <split>/<class>/*.jpg "
        f"({_REDOWNLOAD})"
    )


def _msg_decode(p: DatasetProfile, c: QualityConfig) -> str:
    bad = p.images[~p.images["decodes"]]
    return (
        f"{len(bad):,} file(s) do not decode as complete images (corrupt, truncated or not an "
        f"image): {_paths(bad)}; {_REDOWNLOAD}, or delete these files"
    )


def _msg_size(column: str) -> _Message:
    def message(p: DatasetProfile, c: QualityConfig) -> str:
        bad = _bad_values(p.images, column, lambda v: v == c.image_size)
        sizes = sorted({int(v) for v in bad[column]})
        return (
            f"{len(bad):,} image(s) have {column} {_examples([str(v) for v in sizes])} instead "
            f"of {c.image_size}: {_paths(bad)}; resize them to {c.image_size}x{c.image_size} "
            "or remove them"
        )

    return message


def _msg_grayscale(p: DatasetProfile, c: QualityConfig) -> str:
    bad = _bad_values(p.images, "mode", lambda v: v == "L")
    modes = ", ".join(sorted(set(bad["mode"].astype(str))))
    return (
        f"{len(bad):,} image(s) are not grayscale (mode {modes}); they were converted to "
        f"gray when decoded: {_paths(bad)}"
    )


def _msg_split_total(split: str, low: str) -> _Message:
    def message(p: DatasetProfile, c: QualityConfig) -> str:
        count = int(p.summary[f"{split}_images"].iloc[0])
        minimum = getattr(c, low)
        return (
            f"{split}/ holds {count:,} images, expected {minimum:,} to {c.max_images:,}; "
            f"point the source at a complete copy ({_REDOWNLOAD}), or set "
            f"QualityConfig.{low} / max_images for a smaller dataset"
        )

    return message


def _msg_known(p: DatasetProfile, c: QualityConfig) -> str:
    extra = p.classes[~p.classes["expected"]]
    return (
        f"unexpected class folder(s) {_examples(list(extra['label']))}; expected only "
        f"{', '.join(p.classes[p.classes['expected']]['label'])}; remove or rename them"
    )


def _msg_present(split: str) -> _Message:
    def message(p: DatasetProfile, c: QualityConfig) -> str:
        rows = p.classes[p.classes[f"{split}_present"].map(lambda v: v is False)]
        names = [f"{split}/{label}/" for label in rows["label"]]
        return (
            f"class folder(s) {_examples(names)} missing; every class needs a folder in "
            f"{split}/; {_REDOWNLOAD}"
        )

    return message


def _msg_class_counts(split: str, low: str) -> _Message:
    def message(p: DatasetProfile, c: QualityConfig) -> str:
        minimum = getattr(c, low)
        rows = _bad_values(p.classes, f"{split}_count", lambda v: v >= minimum)
        return (
            f"{split} class(es) with fewer than {minimum:,} images: "
            f"{_class_list(rows, f'{split}_count')}; an empty or thin class folder means an "
            f"incomplete copy ({_REDOWNLOAD}), or set QualityConfig.{low}"
        )

    return message


def _msg_shares(p: DatasetProfile, c: QualityConfig) -> str:
    rows = _bad_values(
        p.classes, "train_share", lambda v: c.min_class_share <= v <= c.max_class_share
    )
    return (
        f"train class share(s) outside {c.min_class_share:.1%}-{c.max_class_share:.0%}: "
        f"{_class_list(rows, 'train_share', '{:.2%}')}; check that the images are filed "
        "under the right class folders, or set QualityConfig.min_class_share / max_class_share"
    )


def _msg_imbalance(p: DatasetProfile, c: QualityConfig) -> str:
    ratio = float(p.summary["imbalance_ratio"].iloc[0])
    expected = p.classes[p.classes["expected"]]
    largest = expected.loc[expected["train_count"].idxmax()]
    smallest = expected.loc[expected["train_count"].idxmin()]
    return (
        f"the largest train class ({largest['label']}, {int(largest['train_count']):,}) is "
        f"{ratio:.1f}x the smallest ({smallest['label']}, {int(smallest['train_count']):,}), "
        f"above {c.max_imbalance_ratio:g}x; check that the copy is complete, or set "
        "QualityConfig.max_imbalance_ratio"
    )


def _msg_shift(bound: str) -> _Message:
    def message(p: DatasetProfile, c: QualityConfig) -> str:
        limit = getattr(c, bound)
        rows = _bad_values(p.classes, "share_shift", lambda v: v <= limit)
        shown = [
            f"{label} (train {train:.1%}, test {test:.1%})"
            for label, train, test in zip(
                rows["label"], rows["train_share"], rows["test_share"], strict=True
            )
        ]
        return (
            f"test class proportions differ from train by more than {limit:.1%}: "
            f"{_examples(shown)}; the test split is not drawn like train, so its accuracy "
            f"is not comparable; check its source, or set QualityConfig.{bound}"
        )

    return message


def _leaked(p: DatasetProfile) -> tuple[pd.DataFrame, int]:
    return _flagged(p.images, "leaked_from_train"), int((p.images["split"] == "test").sum())


def _msg_leakage_none(p: DatasetProfile, c: QualityConfig) -> str:
    leaked, total = _leaked(p)
    return (
        f"{_share(len(leaked), total)} test images also occur in train (same pixels): "
        f"{_paths(leaked)}; cleaning removes their copies from train, so no model trains on them"
    )


def _msg_leakage_bounded(p: DatasetProfile, c: QualityConfig) -> str:
    leaked, total = _leaked(p)
    return (
        f"{_share(len(leaked), total)} test images also occur in train (same pixels), above "
        f"the {c.max_leaked_test_fraction:.0%} bound: the source mixes the splits; fix the "
        f"source ({_REDOWNLOAD}), or set QualityConfig.max_leaked_test_fraction"
    )


def _msg_copies(bounded: bool) -> _Message:
    def message(p: DatasetProfile, c: QualityConfig) -> str:
        rows = _flagged(p.images, "repeats_earlier")
        total = int(p.images["repeats_earlier"].notna().sum())
        groups = int(p.summary["duplicate_groups"].iloc[0])
        text = (
            f"{_share(len(rows), total)} images repeat an earlier image's pixels "
            f"({groups:,} groups): {_paths(rows)}"
        )
        if bounded:
            return (
                f"{text}; above the {c.max_extra_copy_fraction:.0%} bound: the source holds "
                "copies; de-duplicate it, or set QualityConfig.max_extra_copy_fraction"
            )
        return f"{text}; cleaning keeps one copy of each in train"

    return message


def _msg_conflicts(p: DatasetProfile, c: QualityConfig) -> str:
    rows = _flagged(p.images, "label_conflict")
    groups = int(p.summary["conflicting_label_groups"].iloc[0])
    return (
        f"{groups:,} groups of identical images carry different labels ({len(rows):,} "
        f"images): {_paths(rows)}; cleaning drops them from train"
    )


def _msg_blank(bounded: bool) -> _Message:
    def message(p: DatasetProfile, c: QualityConfig) -> str:
        rows = _flagged(p.images, "near_blank")
        total = int(p.images["near_blank"].notna().sum())
        text = f"{_share(len(rows), total)} images are near-blank: {_paths(rows)}"
        if bounded:
            return (
                f"{text}; above the {c.max_near_blank_fraction:.1%} bound: check the source, "
                "or set QualityConfig.max_near_blank_fraction"
            )
        return f"{text}; cleaning drops them from train"

    return message


MESSAGES: dict[str, _Message] = {
    "images_not_empty": _msg_not_empty,
    "images_decode": _msg_decode,
    "image_width": _msg_size("width"),
    "image_height": _msg_size("height"),
    "images_grayscale": _msg_grayscale,
    "train_images": _msg_split_total("train", "min_train_images"),
    "test_images": _msg_split_total("test", "min_test_images"),
    "class_folders_known": _msg_known,
    "train_classes_present": _msg_present("train"),
    "test_classes_present": _msg_present("test"),
    "train_class_counts": _msg_class_counts("train", "min_class_train_images"),
    "test_class_counts": _msg_class_counts("test", "min_class_test_images"),
    "train_class_shares": _msg_shares,
    "imbalance_ratio": _msg_imbalance,
    "class_share_shift": _msg_shift("share_shift_warning"),
    "class_share_shift_bounded": _msg_shift("share_shift_critical"),
    "leakage_none": _msg_leakage_none,
    "leakage_bounded": _msg_leakage_bounded,
    "copies_none": _msg_copies(bounded=False),
    "copies_bounded": _msg_copies(bounded=True),
    "label_conflicts_none": _msg_conflicts,
    "near_blank_none": _msg_blank(bounded=False),
    "near_blank_bounded": _msg_blank(bounded=True),
}
