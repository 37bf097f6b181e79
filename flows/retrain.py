"""The retrain flow: acquire -> validate -> train -> evaluate -> gate -> publish -> promote."""

from __future__ import annotations

from prefect import flow

from model.gate import GateConfig
from model.settings import get_settings
from model.train import TrainConfig
from tasks.acquire import acquire_dataset_task
from tasks.evaluate import evaluate_model_task
from tasks.gate import check_gate_task
from tasks.publish import promote_version_task, publish_model_task
from tasks.train import train_model_task
from tasks.validate import validate_dataset_task
from validation.config import QualityConfig


@flow(name="retrain", log_prints=True)
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
        dataset: dataset source; defaults to the ``FER_DATASET`` setting.
        train_config: hyperparameters (default: the ``cpu`` profile, the nightly recipe).
        gate_config: promotion criteria.
        quality_config: data-quality bounds; a critical failure ends the run before training.

    Returns:
        The promoted model version. A failed data check or gate fails the run and
        leaves the champion untouched.
    """
    ref = acquire_dataset_task(dataset or get_settings().dataset)
    validate_dataset_task(ref, quality_config, train_config.cleaning)
    trained = train_model_task(ref, train_config)
    metrics = evaluate_model_task(trained, ref)
    decision = check_gate_task(metrics, gate_config, ref, trained.run_dir)
    version = publish_model_task(trained, metrics, ref, train_config, decision)
    promote_version_task(version)
    return version
