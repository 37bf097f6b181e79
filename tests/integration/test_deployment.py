"""`retrain/nightly` through a real process worker: schedule, parameters, concurrency,
validation cache, artifacts and failure reasons, all read back through the Prefect API."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest

from flows.deploy import DEPLOYMENT_PATH, Deployed, deploy_retrain
from flows.retrain import RETRAIN_LIMIT
from infra.services import free_port, worker_down, worker_name, worker_up
from model.evaluation.gate import GateConfig
from model.registry.store import ModelRegistry
from model.settings import Settings
from model.training.config import TrainConfig
from tests.integration.conftest import QUICK, SUBSET_QUALITY

pytestmark = pytest.mark.integration

PREFECT = str(Path(sys.executable).with_name("prefect"))
#: Every artifact a successful run leaves, by its stable key.
RUN_ARTIFACTS = {
    "data-quality",
    "data-quality-classes",
    "data-quality-failures",
    "test-metrics",
    "per-class-metrics",
    "confusion-matrix",
    "training-curves",
    "gate-decision",
    "model-version",
    "champion",
}


def _api(settings: Settings, read: Any) -> Any:
    """Run ``read(client)`` against the test server and return its result."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def go() -> Any:
        async with get_client() as client:
            return await read(client)

    with temporary_settings({PREFECT_API_URL: settings.prefect_url}):
        return asyncio.run(go())


#: The subset's bounds with one harmless change: no other test validates with these, so the
#: first run here really validates and the second finds it cached, whatever ran before.
QUALITY = SUBSET_QUALITY.model_copy(update={"max_images": SUBSET_QUALITY.max_images - 1})


def _parameters(dataset: Path | str, gate: GateConfig) -> dict[str, Any]:
    return {
        "dataset": str(dataset),
        "train_config": QUICK.model_dump(mode="json"),
        "gate_config": gate.model_dump(mode="json"),
        "quality_config": QUALITY.model_dump(mode="json"),
    }


def _create_run(settings: Settings, parameters: dict[str, Any]) -> UUID:
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: settings.prefect_url}):
        return run_deployment(DEPLOYMENT_PATH, parameters=parameters, timeout=0).id


def _wait_final(settings: Settings, run_id: UUID, timeout: float = 600) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = _api(settings, lambda client: client.read_flow_run(run_id))
        if run.state is not None and run.state.is_final():
            return run
        time.sleep(0.5)
    pytest.fail(f"flow run {run_id} did not finish within {timeout} s")


def _task_runs(settings: Settings, run_id: UUID) -> list[Any]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    return _api(
        settings,
        lambda client: client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
        ),
    )


def _artifacts(settings: Settings, run_id: UUID) -> dict[str, Any]:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    artifacts = _api(
        settings,
        lambda client: client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        ),
    )
    return {artifact.key: artifact for artifact in artifacts if artifact.key}


@pytest.fixture(scope="module")
def deployed(services: Settings) -> Iterator[Deployed]:
    """`retrain/nightly` deployed from this checkout, and a worker polling its pool."""
    deployment = deploy_retrain(services)
    worker_up(services)
    try:
        yield deployment
    finally:
        worker_down(services)


def test_nightly_deployment_is_scheduled_typed_and_described(
    services: Settings, deployed: Deployed
) -> None:
    deployment = _api(services, lambda client: client.read_deployment(deployed.deployment_id))
    assert deployment.name == "nightly" and deployment.work_pool_name == services.work_pool
    pool = _api(services, lambda client: client.read_work_pool(services.work_pool))
    assert pool.type == "process"
    (schedule,) = deployment.schedules
    assert schedule.active and schedule.schedule.cron == "0 2 * * *"
    assert schedule.schedule.timezone == "UTC"
    limit = _api(
        services, lambda client: client.read_global_concurrency_limit_by_name(RETRAIN_LIMIT)
    )
    assert limit.limit == 1 and limit.active

    schema = deployment.parameter_openapi_schema
    for name in ("dataset", "train_config", "gate_config", "quality_config"):
        assert schema["properties"][name].get("description"), f"{name} has no description"
    definitions = schema["definitions"]
    for model in ("TrainConfig", "NetworkConfig", "AugmentConfig", "GateConfig", "QualityConfig"):
        fields = definitions[model]["properties"]
        undocumented = [field for field, spec in fields.items() if not spec.get("description")]
        assert not undocumented, f"{model} fields without a description: {undocumented}"
    # The nightly deployment trains the cpu recipe unless a run overrides it.
    default = TrainConfig.model_validate(schema["properties"]["train_config"]["default"])
    assert default == TrainConfig.profile("cpu")

    # Deploying again updates the same deployment, with a new schedule.
    again = deploy_retrain(services, cron="30 3 * * 1-5", timezone="Europe/Berlin")
    assert again.deployment_id == deployed.deployment_id
    deployment = _api(services, lambda client: client.read_deployment(deployed.deployment_id))
    (schedule,) = deployment.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == (
        "30 3 * * 1-5",
        "Europe/Berlin",
    )
    # A GPU pool's deployment trains the gpu recipe by default; back to cpu, the override goes.
    deploy_retrain(services, profile="gpu")
    deployment = _api(services, lambda client: client.read_deployment(deployed.deployment_id))
    gpu = TrainConfig.model_validate(deployment.parameters["train_config"])
    assert gpu == TrainConfig.profile("gpu")
    deploy_retrain(services)
    deployment = _api(services, lambda client: client.read_deployment(deployed.deployment_id))
    assert "train_config" not in deployment.parameters


def test_the_daily_health_report_is_deployed_beside_it(
    services: Settings, deployed: Deployed
) -> None:
    from prefect.flows import load_flow_from_entrypoint

    health = _api(services, lambda client: client.read_deployment(deployed.health_deployment_id))
    assert health.name == "daily" and health.work_pool_name == services.work_pool
    (schedule,) = health.schedules
    assert schedule.active and schedule.schedule.cron == deployed.health_cron == "0 6 * * *"
    for name in ("metrics_urls", "drift_share", "min_predictions"):
        assert health.parameter_openapi_schema["properties"][name].get("description"), name
    # What the worker loads (the retrain's runs above show the way there works).
    flow = load_flow_from_entrypoint(str(Path(health.path or ".") / health.entrypoint))
    assert flow.name == "health"


def test_a_kubernetes_pool_is_created_from_its_template_only(services: Settings) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.deploy import ensure_work_pool
    from model.errors import ConfigError

    template = json.loads((Path(__file__).parents[2] / "infra/k8s/work-pool-cpu.json").read_text())
    with temporary_settings({PREFECT_API_URL: services.prefect_url}):
        with pytest.raises(ConfigError, match="does not exist; start its worker first"):
            ensure_work_pool("fer-k8s-test", "kubernetes")
        ensure_work_pool("fer-k8s-test", "kubernetes", template)
        ensure_work_pool("fer-k8s-test", "kubernetes")  # exists now: nothing to do
        with pytest.raises(ConfigError, match="exists with type 'kubernetes', not 'process'"):
            ensure_work_pool("fer-k8s-test", "process")
    pool = _api(services, lambda client: client.read_work_pool("fer-k8s-test"))
    assert pool.type == "kubernetes"
    assert pool.base_job_template == template


def test_two_runs_never_overlap_and_the_second_reuses_the_validation(
    services: Settings, deployed: Deployed, fer_subset: Path
) -> None:
    env = {**os.environ, "PREFECT_API_URL": services.prefect_url}
    passing = _parameters(fer_subset, GateConfig(min_accuracy=0.0, max_regression=1.0))
    # The command a user types; its output names the new run.
    started = subprocess.run(
        [PREFECT, "deployment", "run", DEPLOYMENT_PATH, "--params", json.dumps(passing)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode == 0, started.stdout + started.stderr
    first = UUID(re.search(r"UUID: ([0-9a-f-]{36})", started.stdout).group(1))
    second = _create_run(services, _parameters(fer_subset, GateConfig(min_accuracy=0.99)))

    runs = {run_id: _wait_final(services, run_id) for run_id in (first, second)}
    assert runs[first].state.is_completed(), runs[first].state.message
    assert runs[second].state.is_failed()
    # The failed state says which criterion failed, with its value.
    message = runs[second].state.message
    assert "gate failed" in message and "below the floor 0.9900" in message, message

    # One slot: whichever run got it first finished all its tasks before the other began.
    tasks = {run_id: _task_runs(services, run_id) for run_id in runs}
    spans = {
        run_id: (
            min(t.start_time for t in ts if t.start_time),
            max(t.end_time for t in ts if t.end_time),
        )
        for run_id, ts in tasks.items()
    }
    earlier, later = sorted(runs, key=lambda run_id: spans[run_id][0])
    assert spans[earlier][1] <= spans[later][0], "the two retrains overlapped"
    # The later one waited on the server (the deployment's ENQUEUE limit), before any process
    # was started for it: its flow run began only after the earlier one had ended.
    states = _api(services, lambda client: client.read_flow_run_states(later))
    assert "AwaitingConcurrencySlot" in {state.name for state in states}, states
    assert runs[later].start_time >= runs[earlier].end_time

    # The later run found the same dataset validated: its validation came from the cache.
    def validation(run_id: UUID) -> list[str]:
        return [t.state.name for t in tasks[run_id] if t.name.startswith("validate_dataset")]

    assert validation(earlier) == ["Completed"] and validation(later) == ["Cached"]

    # Artifacts of the completed run, read back by their stable keys.
    artifacts = _artifacts(services, first)
    assert RUN_ARTIFACTS <= set(artifacts), sorted(artifacts)
    metrics = {row["metric"]: row["value"] for row in json.loads(artifacts["test-metrics"].data)}
    registry = ModelRegistry.from_settings(services)
    champion = registry.champion()
    assert champion is not None
    manifest = registry.read_manifest(champion.version)
    assert metrics["accuracy"] == pytest.approx(manifest["metrics"]["accuracy"], abs=1e-4)
    assert champion.version in artifacts["model-version"].data
    assert champion.version in artifacts["champion"].data
    gate = artifacts["gate-decision"].data
    assert "**passed**" in gate and "accuracy" in gate and "0.0000" in gate
    for key in ("confusion-matrix", "training-curves"):
        assert artifacts[key].type == "image"
        image = httpx.get(artifacts[key].data, timeout=10)
        assert image.status_code == 200 and image.content[:8] == b"\x89PNG\r\n\x1a\n", key
        assert f"s3://{services.s3_bucket}/reports/" in artifacts[key].description
    # A run whose validation was cached still shows the data-quality verdict.
    later_artifacts = _artifacts(services, later)
    assert {"data-quality", "data-quality-classes", "data-quality-failures"} <= set(later_artifacts)


def test_runs_queued_while_the_worker_is_down_run_after_a_restart(
    services: Settings, deployed: Deployed
) -> None:
    worker_down(services)
    # Nothing listens here: the source is unreachable, so the run fails fast in acquire.
    unreachable = f"http://127.0.0.1:{free_port()}/fer2013.zip"
    run_id = _create_run(services, _parameters(unreachable, GateConfig()))
    # Three of the session workers' 1-second polls: a worker still up would have taken it.
    time.sleep(3)
    waiting = _api(services, lambda client: client.read_flow_run(run_id))
    assert waiting.state.is_scheduled() or waiting.state.is_pending(), waiting.state
    worker_up(services)
    run = _wait_final(services, run_id, timeout=300)
    assert run.state.is_failed()
    assert unreachable in run.state.message and "cannot reach" in run.state.message
    # The schedule lives on the server: the worker restart left it as it was.
    deployment = _api(services, lambda client: client.read_deployment(deployed.deployment_id))
    (schedule,) = deployment.schedules
    assert schedule.active and schedule.schedule.cron == deployed.cron


#: How a script, a container and a terminal start `fer worker`: each stop must reach it.
HOW_STARTED = [
    # A background job of a non-interactive shell: SIGINT arrives ignored.
    ('trap "" INT; exec {fer} worker', signal.SIGINT),
    # The image's entrypoint: the init is PID 1 of its own session and forwards the stop, so
    # the worker gets SIGTERM as it would from a plain `kill` too.
    ("exec {init} -- {fer} worker", signal.SIGTERM),
]


def test_fer_worker_stops_cleanly_however_it_was_started(
    services: Settings, deployed: Deployed
) -> None:
    from infra.services import worker_healthy

    fer = Path(sys.executable).with_name("fer")
    init = Path(sys.executable).with_name("dumb-init")
    worker_down(services)  # the same worker name must not be online twice
    try:
        for shell, signum in HOW_STARTED:
            started = time.time()  # the stopped worker's heartbeats are all older
            process = subprocess.Popen(
                ["bash", "-c", shell.format(fer=fer, init=init)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            try:
                deadline = time.monotonic() + 120
                while not worker_healthy(services, started):
                    assert process.poll() is None, process.stdout.read().decode()[-2000:]
                    assert time.monotonic() < deadline, f"{shell}: never reported to the server"
                    time.sleep(1)
            finally:
                process.send_signal(signum)
                code = process.wait(timeout=30)
            output = process.stdout.read().decode()
            assert code == 0, f"{shell}, {signum!r}: {output[-2000:]}"
            name = worker_name(services)
            assert f"Worker '{name}' started!" in output, output[-2000:]
            # Prefect's worker got the stop and shut down by itself, not killed.
            assert f"Worker '{name}' stopped!" in output, f"{shell}: {output[-2000:]}"
    finally:
        worker_up(services)


class Output:
    """A process's output, read line by line in a thread so the test can wait on it."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, process: subprocess.Popen[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert process.poll() is None, "\n".join(self.lines[-40:])
            assert time.monotonic() < deadline, f"no {text!r} in:\n" + "\n".join(self.lines[-40:])
            time.sleep(0.2)

    def text(self) -> str:
        self._thread.join(timeout=10)
        return "\n".join(self.lines)


def test_fer_up_stopped_during_its_first_retrain_stops_and_cancels_the_run(
    services: Settings, deployed: Deployed, fer_subset: Path, tmp_path: Path
) -> None:
    quality = tmp_path / "quality.json"
    quality.write_text(QUALITY.model_dump_json())
    fer = Path(sys.executable).with_name("fer")
    command = f"{fer} up --dataset {fer_subset} --min-accuracy 0 --quality-config {quality}"
    # Started from a script: SIGINT arrives ignored.
    process = subprocess.Popen(
        ["bash", "-c", f'trap "" INT; exec {command}'],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = Output(process)
    try:
        output.wait_for("stage: ", process, timeout=300)  # the run is on the worker
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=30)
    text = output.text()
    assert code == 130 and "stopped by SIGINT" in text, text[-3000:]
    cancelling = re.search(r"cancelling flow run ([0-9a-f-]{36})", text)
    assert cancelling, text[-3000:]
    run = _wait_final(services, UUID(cancelling.group(1)), timeout=120)
    assert run.state.is_cancelled(), run.state
