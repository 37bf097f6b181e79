"""The retrain flow: acquire, validate, clean, train, evaluate, gate, publish, promote."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TextIO

from prefect import flow, get_run_logger, tags
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.progress import ProgressDisplay, following_tagged_run
from flows.storage import RESULTS_STORAGE, ensure_result_storage
from model.errors import FerError
from model.evaluation.gate import GateConfig
from model.settings import get_settings
from model.training.config import TrainConfig
from tasks.acquire import acquire_dataset_task
from tasks.clean import clean_dataset_task
from tasks.evaluate import evaluate_model_task
from tasks.gate import check_gate_task
from tasks.publish import promote_version_task, publish_model_task
from tasks.train import train_model_task
from tasks.validate import check_data_quality_task, validate_dataset_task
from validation.config import QualityConfig

if TYPE_CHECKING:
    from model.settings import Settings

#: Global concurrency limit (one slot) held for a whole retrain, however it was started.
RETRAIN_LIMIT = "fer-retrain"


def ensure_retrain_limit() -> None:
    """Create the one-slot ``fer-retrain`` limit unless it exists.

    A limit an operator changed in the UI is left as it is.
    """
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(RETRAIN_LIMIT)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=RETRAIN_LIMIT, limit=1)
                )
            except ObjectAlreadyExists:
                pass  # a run starting at the same moment created it


@contextmanager
def retrain_slot(lease_seconds: float = 300) -> Iterator[None]:
    """Hold the one ``fer-retrain`` slot for the block, however the retrain was started.

    Deployment runs already queue on the server (the deployment's ENQUEUE limit); this slot
    also covers ``fer retrain`` runs in the terminal.

    Args:
        lease_seconds: how long the server keeps the slot without hearing from us; Prefect
            renews it every three quarters of that.
    """
    with concurrency(
        RETRAIN_LIMIT,
        occupy=1,
        lease_duration=lease_seconds,
        # strict: a missing limit is an error rather than a silent run without one.
        strict=True,
        # ...but a lease renewal that fails through an API blip must not cancel an hour of
        # training (strict alone would): Prefect logs it, and the run goes on.
        raise_on_lease_renewal_failure=False,
    ):
        yield


# Results and cache records go to the store (flows/storage.py), so any worker reuses them.
@flow(name="retrain", log_prints=True, result_storage=RESULTS_STORAGE)
def retrain(
    dataset: str | None = None,
    # The nightly recipe by default, so a deployment of this flow trains it; `fer up` passes
    # the quick profile explicitly.
    train_config: TrainConfig = TrainConfig.profile("cpu"),  # noqa: B008 - frozen, shown in the UI
    gate_config: GateConfig = GateConfig(),  # noqa: B008
    quality_config: QualityConfig = QualityConfig(),  # noqa: B008
) -> str:
    """Train a challenger on the dataset and promote it when it passes the gate.

    Args:
        dataset: Dataset source: a folder or archive in FER layout, an http(s):// archive, an
            s3:// prefix or archive, or kaggle://owner/dataset. Empty: the FER_DATASET setting.
        train_config: Network and training hyperparameters (default: the `cpu` profile, the
            nightly recipe with a 57-minute budget on 2 cores).
        gate_config: Promotion criteria: accuracy, macro-F1 and per-class recall floors, and
            how far below the champion (on the same test data) the challenger may be.
        quality_config: Data-quality bounds; a critical failure ends the run before training.

    Returns:
        The promoted model version. A failed data check or gate fails the run and
        leaves the champion untouched.
    """
    logger = get_run_logger()
    ensure_retrain_limit()
    logger.info("waiting for the %r slot: one retrain runs at a time", RETRAIN_LIMIT)
    with retrain_slot():
        logger.info("holding the %r slot", RETRAIN_LIMIT)
        with stage("acquire"):
            ref = acquire_dataset_task(dataset or get_settings().dataset)
        with stage("data quality"):
            validated = validate_dataset_task(ref, quality_config)
            check_data_quality_task(validated)
        with stage("train"):
            cleaned = clean_dataset_task(ref, train_config.cleaning)
            trained = train_model_task(ref, train_config, cleaned)
        with stage("evaluate"):
            metrics = evaluate_model_task(trained, ref)
        with stage("gate"):
            decision = check_gate_task(metrics, gate_config, ref, trained.run_dir)
        with stage("publish"):
            version = publish_model_task(trained, metrics, ref, train_config, decision)
            promote_version_task(version, metrics.accuracy)
    return version


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Name the stage in a platform error raised inside the block.

    The run's failure message (the state the UI, ``fer`` and the alerts show) then starts with
    it: ``gate stage: gate failed: ...``.
    """
    try:
        yield
    except FerError as error:
        error.stage = error.stage or name
        raise


def run_retrain(
    settings: Settings,
    dataset: str | None,
    train_config: TrainConfig,
    gate_config: GateConfig,
    quality_config: QualityConfig | None = None,
    progress: TextIO | None = None,
) -> str:
    """Run the retrain flow in this process against the configured Prefect server.

    Args:
        settings: platform settings (Prefect API URL).
        dataset: dataset source, or None for the ``FER_DATASET`` setting.
        train_config: hyperparameters.
        gate_config: promotion criteria.
        quality_config: data-quality bounds; None for the defaults.
        progress: where to show the stage and the training progress (a bar on a terminal;
            the per-epoch lines are the run's own log lines there); None shows nothing.

    Returns:
        The promoted version.

    Raises:
        FerError: the run's own failure (data quality, gate, store) when it failed.
    """
    from infra.services import require_prefect

    require_prefect(settings)
    with temporary_settings({PREFECT_API_URL: settings.prefect_url}):
        ensure_result_storage(settings)  # the flow keeps its results there
    prefect_settings = {PREFECT_API_URL: settings.prefect_url}
    tag = f"fer-cli-{uuid.uuid4().hex[:12]}"  # how the progress display finds this run
    with contextlib.ExitStack() as stack:
        stack.enter_context(temporary_settings(prefect_settings))
        stack.enter_context(tags(tag))
        if progress is not None:
            display = ProgressDisplay(progress, epoch_lines=False)
            stack.enter_context(following_tagged_run(tag, display))
        state = retrain(
            dataset=dataset,
            train_config=train_config,
            gate_config=gate_config,
            quality_config=quality_config or QualityConfig(),
            return_state=True,
        )
    # Re-raises the exception that failed the run (GateFailed, DataQualityError, ...).
    return str(state.result())
