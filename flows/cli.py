"""The ``fer`` command line: local services, the retrain flow, serving, and the main job."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import uuid
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO, TypeVar, cast

import typer

from model.errors import ConfigError, FerError, ServiceError
from model.evaluation.gate import GateConfig
from model.settings import Settings, get_settings
from model.training.config import Profile, TrainConfig

if TYPE_CHECKING:
    from model.registry.store import ModelRegistry
    from validation.config import QualityConfig
    from validation.report import QualityReport

app = typer.Typer(
    help="FER platform: train, gate, publish and serve a facial-emotion classifier.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(
    help="Inspect datasets and mirror them into the S3 store.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
services_app = typer.Typer(
    help="Start, stop and inspect the local Prefect and S3 services.", no_args_is_help=True
)
app.add_typer(services_app, name="services")

F = TypeVar("F", bound=Callable[..., Any])

ProfileOption = Annotated[
    str,
    typer.Option(
        "--profile",
        help="Training profile: `quick` (small net, 5 epochs), `cpu` (the nightly recipe, "
        "57-minute budget on 2 cores) or `gpu` (wider net, float16, for a GPU node); the "
        "options below override its values.",
    ),
]
Epochs = Annotated[int | None, typer.Option(help="Maximum training epochs.", min=1)]
BatchSize = Annotated[int | None, typer.Option(help="Images per training step.", min=1)]
LearningRate = Annotated[float | None, typer.Option(help="Peak learning rate.", min=0)]
Seed = Annotated[
    int | None, typer.Option(help="Seed for the validation split, weight init and augmentation.")
]
MinAccuracy = Annotated[
    float, typer.Option(help="Gate: lowest test accuracy that may be promoted.", min=0, max=1)
]
MinMacroF1 = Annotated[
    float, typer.Option(help="Gate: lowest test macro F1 (0: no floor).", min=0, max=1)
]
MinClassRecall = Annotated[
    float, typer.Option(help="Gate: lowest recall of every class (0: no floor).", min=0, max=1)
]
MaxRegression = Annotated[
    float,
    typer.Option(
        help="Gate: how far below the champion's test accuracy (on the same test data) the "
        "new model may be (1: no comparison).",
        min=0,
        max=1,
    ),
]
Dataset = Annotated[
    str | None,
    typer.Option(help="Dataset source (folder in FER layout); default: the FER_DATASET setting."),
]
QualityConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--quality-config",
        help="JSON file of data-quality bounds (QualityConfig fields, see docs/data.md); "
        "default: the documented defaults, set for the full FER2013.",
        dir_okay=False,
    ),
]


def _quality_config(path: Path | None) -> QualityConfig:
    """Read the data-quality bounds from a JSON file, or return the defaults."""
    import pydantic

    from validation.config import QualityConfig

    if path is None:
        return QualityConfig()
    try:
        return QualityConfig.model_validate_json(path.read_text())
    except OSError as error:
        raise ConfigError(f"cannot read --quality-config {path}: {error.strerror}") from error
    except pydantic.ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in error.errors()
        )
        raise ConfigError(
            f"--quality-config {path} is not a valid QualityConfig ({problems}); "
            "see docs/data.md for the fields"
        ) from error


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug details.")] = False,
) -> None:
    """Configure logging for every command."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx logs every health-check request at INFO.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Ship the library's own log lines (epochs, data checks) to the Prefect UI with each run;
    # read when prefect is first imported, which the commands do lazily after this.
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "model,validation,infra")
    # The same loggers also run outside flow runs (`fer data validate`): log locally there.
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")


def _clear_errors(command: F) -> F:
    """Print the platform's own errors as one clear line and exit 1 instead of a traceback.

    A stop signal that ends a command before its work is done exits 128 + the signal's number,
    as shells report it.
    """

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except FerError as error:
            typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from error
        except KeyboardInterrupt as stop:
            signum = getattr(stop, "signum", signal.SIGINT)
            typer.secho(f"stopped by {signal.Signals(signum).name}", err=True)
            raise typer.Exit(128 + signum) from None

    return wrapper  # type: ignore[return-value]


def _stoppable(command: F) -> F:
    """Stop a long-running command on SIGINT, SIGTERM or SIGHUP, whatever it inherited."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from infra.signals import stopping_on_signals

        with stopping_on_signals():
            return command(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _print_services(settings: Settings) -> None:
    from infra.services import services_status

    for status in services_status(settings):
        mark = "up  " if status.running else "down"
        typer.echo(
            f"{mark} {status.name:<10} {status.url or '-':<28} {status.note} "
            f"(log: {status.log_path})"
        )


@services_app.command("up")
@_clear_errors
def services_up_command() -> None:
    """Start the Prefect server and SeaweedFS on 127.0.0.1 (reuses running ones)."""
    from infra.services import services_up

    settings = get_settings()
    services_up(settings)
    _print_services(settings)
    typer.echo(f"Prefect UI: {settings.prefect_ui_url}   S3 endpoint: {settings.s3_url}")


@services_app.command("down")
@_clear_errors
def services_down_command() -> None:
    """Stop the local services started by `fer services up`."""
    from infra.services import services_down

    stopped = services_down(get_settings())
    typer.echo(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@services_app.command("status")
@_clear_errors
def services_status_command() -> None:
    """Show whether the local services are running and healthy."""
    _print_services(get_settings())


def _check_prefect(settings: Settings) -> None:
    import httpx

    try:
        healthy = httpx.get(f"{settings.prefect_url}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        healthy = False
    if not healthy:
        raise ServiceError(
            f"no Prefect server answers at {settings.prefect_url}; start one with "
            "`fer services up` or set FER_PREFECT_API_URL to a running server"
        )


def run_retrain(
    settings: Settings,
    dataset: str | None,
    train_config: TrainConfig,
    gate_config: GateConfig,
    quality_config: QualityConfig | None = None,
    progress: TextIO | None = None,
) -> str:
    """Run the retrain flow against the configured Prefect server.

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
    _check_prefect(settings)
    from prefect import tags
    from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    from flows.progress import ProgressDisplay, following_tagged_run
    from flows.retrain import retrain

    prefect_settings = {
        PREFECT_API_URL: settings.prefect_url,
        # The validation cache lives under the platform home, as for the worker's runs.
        PREFECT_LOCAL_STORAGE_PATH: settings.home_dir / "prefect" / "storage",
    }
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
            quality_config=quality_config or _quality_config(None),
            return_state=True,
        )
    # Re-raises the exception that failed the run (GateFailed, DataQualityError, ...).
    return str(state.result())


def _gate_config(
    min_accuracy: float, min_macro_f1: float, min_class_recall: float, max_regression: float
) -> GateConfig:
    """The gate the command's options describe."""
    return GateConfig(
        min_accuracy=min_accuracy,
        min_macro_f1=min_macro_f1,
        min_class_recall=min_class_recall,
        max_regression=max_regression,
    )


def _train_config(profile: str, **overrides: int | float | None) -> TrainConfig:
    """The profile's config with the options the user gave applied on top."""
    if profile not in ("quick", "cpu", "gpu"):
        raise ConfigError(f"unknown --profile {profile!r}; choose quick, cpu or gpu")
    base = TrainConfig.profile(profile)  # type: ignore[arg-type]
    given = {key: value for key, value in overrides.items() if value is not None}
    return TrainConfig.model_validate({**base.model_dump(), **given})


@app.command()
@_clear_errors
@_stoppable
def retrain(
    dataset: Dataset = None,
    profile: ProfileOption = "quick",
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    learning_rate: LearningRate = None,
    seed: Seed = None,
    min_accuracy: MinAccuracy = GateConfig.model_fields["min_accuracy"].default,
    min_macro_f1: MinMacroF1 = GateConfig.model_fields["min_macro_f1"].default,
    min_class_recall: MinClassRecall = GateConfig.model_fields["min_class_recall"].default,
    max_regression: MaxRegression = GateConfig.model_fields["max_regression"].default,
    quality_config: QualityConfigFile = None,
) -> None:
    """Run the retrain flow once: acquire, validate, train, evaluate, gate, publish, promote."""
    settings = get_settings()
    version = run_retrain(
        settings,
        dataset,
        _train_config(
            profile, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed
        ),
        _gate_config(min_accuracy, min_macro_f1, min_class_recall, max_regression),
        _quality_config(quality_config),
        progress=sys.stdout,
    )
    typer.echo(f"promoted model version {version}")


def _serve(settings: Settings) -> None:
    from serving.app import image_limits, make_app, start_watcher

    watcher = start_watcher(settings)
    typer.echo(
        f"Serving model {watcher.predictor.version if watcher.predictor else '-'} at "
        f"http://{settings.serve_host}:{settings.serve_port}   "
        f"Prefect UI: {settings.prefect_ui_url}"
    )
    app = make_app(watcher, image_limits(settings))
    try:
        app.launch(
            server_name=settings.serve_host,
            server_port=settings.serve_port,
            # Gradio's own cap keeps huge uploads off the disk; the app explains smaller ones.
            max_file_size=2 * settings.serve_max_upload_bytes,
        )
    except KeyboardInterrupt:
        # Gradio handles a stop once it serves; one that came while it was starting up is
        # the same clean shutdown.
        app.close()
    finally:
        watcher.stop()


@app.command()
@_clear_errors
@_stoppable
def serve() -> None:
    """Serve the champion model in a Gradio app (picks up new champions without restart)."""
    _serve(get_settings())


models_app = typer.Typer(
    help="Model versions in the store: list, show, promote, rollback, verify, prune, import."
)
app.add_typer(models_app, name="models")

VersionArgument = Annotated[str, typer.Argument(help="Version id (see `fer models list`).")]


def _registry() -> ModelRegistry:
    from model.registry.store import ModelRegistry

    return ModelRegistry.from_settings(get_settings())


@models_app.callback(invoke_without_command=True)
def _models_default(context: typer.Context) -> None:
    """Without a subcommand: the same as `fer models list`."""
    if context.invoked_subcommand is None:
        models_list()


@models_app.command("list")
@_clear_errors
def models_list() -> None:
    """List the versions, newest last, with their warm-start parent; * marks the champion."""
    registry = _registry()
    champion = registry.champion()
    versions = registry.list_versions()
    typer.echo(f"  {'version':32} {'created (UTC)':20} {'accuracy':>8}  dataset       parent")
    for version in versions:
        manifest = registry.read_manifest(version)
        mark = "*" if champion and champion.version == version else " "
        if champion and version == champion.previous:
            mark = "p"
        typer.echo(
            f"{mark} {version:32} {manifest.get('created_at', '?')[:19]:20} "
            f"{manifest['metrics']['accuracy']:8.4f}  "
            f"{manifest.get('dataset', {}).get('fingerprint', '?')[:12]:12}  "
            f"{manifest.get('parent') or '-'}"
        )
    if champion is None:
        typer.echo("no champion yet")
    else:
        typer.echo(f"* champion {champion.version}   p previous {champion.previous or '-'}")


@models_app.command("show")
@_clear_errors
def models_show(version: VersionArgument) -> None:
    """Print a version's manifest as JSON (the per-epoch history is left out)."""
    manifest = _registry().read_manifest(version)
    training = {k: v for k, v in manifest.get("training", {}).items() if k != "history"}
    typer.echo(json.dumps({**manifest, "training": training}, indent=2))


@models_app.command("promote")
@_clear_errors
def models_promote(version: VersionArgument) -> None:
    """Make a version the champion (bypasses the gate: an operator's decision)."""
    pointer = _registry().promote(version)
    typer.echo(f"champion is now {pointer.version} (previous: {pointer.previous or '-'})")


@models_app.command("rollback")
@_clear_errors
def models_rollback() -> None:
    """Make the previous champion the champion again; repeat to go further back."""
    pointer = _registry().rollback()
    typer.echo(f"champion is now {pointer.version} (previous: {pointer.previous or '-'})")


@models_app.command("verify")
@_clear_errors
def models_verify(version: VersionArgument) -> None:
    """Download every file of a version and check its sha256 and size; exit 1 on a mismatch."""
    results = _registry().verify_version(version)
    for name, result in results.items():
        typer.echo(f"{name}: {result}")
    if any(result != "ok" for result in results.values()):
        raise typer.Exit(1)


@models_app.command("prune")
@_clear_errors
def models_prune(
    keep: Annotated[int, typer.Option(help="How many of the newest versions to keep.", min=0)],
    dry_run: Annotated[bool, typer.Option(help="Only list what would be deleted.")] = False,
) -> None:
    """Delete old versions (never the champion or its previous) and day-old broken uploads."""
    pruned = _registry().prune(keep, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    typer.echo(
        f"{verb} {len(pruned.versions)} version(s)"
        + "".join(f"\n  {v}" for v in pruned.versions)
        + f"\n{verb} {len(pruned.incomplete)} incomplete upload(s) older than a day"
        + "".join(f"\n  {v}" for v in pruned.incomplete)
    )


@models_app.command("import")
@_clear_errors
def models_import(
    path: Annotated[
        Path,
        typer.Argument(
            help="A .keras file trained elsewhere (a GPU run, pretrained/...), with the "
            "manifest.json its training run wrote beside it.",
            dir_okay=False,
        ),
    ],
    source: Annotated[
        str,
        typer.Option(help="What trained it, in words (e.g. 'device run 2026-11-30, H200')."),
    ],
    dataset: Dataset = None,
    min_accuracy: MinAccuracy = GateConfig.model_fields["min_accuracy"].default,
    min_macro_f1: MinMacroF1 = GateConfig.model_fields["min_macro_f1"].default,
    min_class_recall: MinClassRecall = GateConfig.model_fields["min_class_recall"].default,
    max_regression: MaxRegression = GateConfig.model_fields["max_regression"].default,
) -> None:
    """Publish an externally trained model as a version; promote it if it passes the gate.

    It is loaded in safe mode, exported to TFLite (checked against Keras), scored on the
    dataset's test split and gated like a retrain. A model trained on other data (another
    dataset fingerprint), a wrong file or a failed gate publishes nothing.
    """
    from model.data.sources import acquire_dataset
    from model.registry.importing import import_model
    from model.registry.store import ModelRegistry

    settings = get_settings()
    ref = acquire_dataset(dataset or settings.dataset, settings)
    imported = import_model(
        path,
        source,
        ref,
        settings.home_dir,
        ModelRegistry.from_settings(settings),
        _gate_config(min_accuracy, min_macro_f1, min_class_recall, max_regression),
    )
    metrics = imported.metrics
    typer.echo(
        f"imported {path} as version {imported.version}: test accuracy {metrics.accuracy:.4f}, "
        f"macro F1 {metrics.macro_f1:.4f} on {metrics.n_test} images ({metrics.runtime})\n"
        + "\n".join(f"  {check}" for check in imported.decision.checks)
        + f"\npromoted model version {imported.version}"
    )


Cron = Annotated[
    str | None,
    typer.Option(help="Cron schedule (five fields); default: the FER_RETRAIN_CRON setting."),
]
Timezone = Annotated[
    str | None,
    typer.Option(help="IANA time zone of the schedule; default: FER_RETRAIN_TIMEZONE."),
]


@app.command()
@_clear_errors
def deploy(
    cron: Cron = None,
    timezone: Timezone = None,
    paused: Annotated[bool, typer.Option(help="Create the schedule paused.")] = False,
    pool: Annotated[
        str | None,
        typer.Option(help="Work pool its runs go to; default: the FER_WORK_POOL setting."),
    ] = None,
    profile: Annotated[
        str,
        typer.Option(
            help="Training profile of the scheduled runs: `cpu` (the nightly recipe) or "
            "`gpu` (for a pool of GPU nodes)."
        ),
    ] = "cpu",
) -> None:
    """Create or update the `retrain/nightly` deployment (work pool, cron schedule)."""
    from flows.deploy import deploy_retrain

    if profile not in ("cpu", "gpu"):
        raise ConfigError(f"--profile must be cpu or gpu, not {profile!r}")
    settings = get_settings()
    _check_prefect(settings)
    deployed = deploy_retrain(
        settings,
        cron=cron,
        timezone=timezone,
        paused=paused,
        work_pool=pool,
        profile=cast(Profile, profile),
    )
    typer.echo(
        f"deployment {deployed.name} on work pool {deployed.work_pool}: "
        f"cron {deployed.cron!r} ({deployed.timezone}){' paused' if deployed.paused else ''}\n"
        f"run it now:  prefect deployment run '{deployed.name}'\n"
        f"a worker runs it:  fer worker   (or `fer up`, which starts one)"
    )


@app.command()
@_clear_errors
@_stoppable
def worker(
    with_healthcheck: Annotated[
        bool,
        typer.Option(
            help="Serve /health on PREFECT_WORKER_WEBSERVER_PORT (8080) for container probes."
        ),
    ] = False,
    base_job_template: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="JSON base job template a missing pool is created with "
            "(infra/k8s/work-pool-cpu.json for a Kubernetes pool).",
        ),
    ] = None,
) -> None:
    """Run a Prefect worker on FER_WORK_POOL in the foreground (Ctrl-C stops it)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.deploy import ensure_work_pool
    from infra.services import worker_command, worker_env
    from infra.signals import run_in_foreground

    template = None
    if base_job_template is not None:
        try:
            template = json.loads(base_job_template.read_text())
        except json.JSONDecodeError as error:
            raise ConfigError(
                f"{base_job_template} is not JSON ({error}); pass a base job template file"
            ) from error
    settings = get_settings()
    _check_prefect(settings)
    with temporary_settings({PREFECT_API_URL: settings.prefect_url}):
        ensure_work_pool(settings.work_pool, settings.work_pool_type, template)
    command = worker_command(settings, with_healthcheck, base_job_template)
    raise typer.Exit(run_in_foreground(command, {**os.environ, **worker_env(settings)}))


def _run_first_retrain(settings: Settings, parameters: dict[str, Any]) -> None:
    """Run the deployment once through the worker; a failure keeps a previous champion."""
    from flows.deploy import run_deployed_retrain
    from flows.progress import ProgressDisplay
    from model.registry.store import ModelRegistry

    typer.echo("first retrain: running `retrain/nightly` through the worker")
    finished = run_deployed_retrain(settings, parameters, progress=ProgressDisplay(sys.stdout))
    url = f"{settings.prefect_ui_url}/runs/flow-run/{finished.flow_run_id}"
    registry = ModelRegistry.from_settings(settings)
    if finished.completed:
        champion = registry.champion()
        typer.echo(f"run {finished.name} completed: {url}")
        typer.echo(f"promoted model version {champion.version if champion else '-'}")
        return
    reason = f"run {finished.name} ended {finished.state}: {finished.message} ({url})"
    # A failed run leaves the previous champion in place: keep serving it if there is one.
    if registry.champion() is None:
        raise FerError(reason)
    typer.secho(
        f"retrain failed, serving the previous champion: {reason}",
        fg=typer.colors.YELLOW,
        err=True,
    )


@app.command()
@_clear_errors
@_stoppable
def up(
    dataset: Dataset = None,
    profile: ProfileOption = "quick",
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    min_accuracy: MinAccuracy = GateConfig.model_fields["min_accuracy"].default,
    min_macro_f1: MinMacroF1 = GateConfig.model_fields["min_macro_f1"].default,
    min_class_recall: MinClassRecall = GateConfig.model_fields["min_class_recall"].default,
    max_regression: MaxRegression = GateConfig.model_fields["max_regression"].default,
    quality_config: QualityConfigFile = None,
) -> None:
    """The main job: services, the nightly deployment and a worker, one retrain, then serve.

    The first retrain runs through the deployment with the options given here (default: the
    quick profile); the nightly schedule keeps the deployment's own defaults (the cpu recipe).
    """
    from flows.deploy import deploy_retrain
    from infra.services import services_up, worker_up

    quality = _quality_config(quality_config)
    config = _train_config(profile, epochs=epochs, batch_size=batch_size)
    gate = _gate_config(min_accuracy, min_macro_f1, min_class_recall, max_regression)
    settings = get_settings()
    services_up(settings)
    typer.echo(f"Prefect UI: {settings.prefect_ui_url}   S3 endpoint: {settings.s3_url}")
    deployed = deploy_retrain(settings)
    worker = worker_up(settings)
    typer.echo(
        f"deployment {deployed.name}: cron {deployed.cron!r} ({deployed.timezone}); "
        f"worker {worker.note} (log: {worker.log_path})"
    )
    parameters = {
        "dataset": dataset,
        "train_config": config.model_dump(mode="json"),
        "gate_config": gate.model_dump(mode="json"),
        "quality_config": quality.model_dump(mode="json"),
    }
    _run_first_retrain(settings, parameters)
    _serve(settings)


SourceArgument = Annotated[
    str,
    typer.Argument(
        help="Dataset source: folder, .zip/.tar.gz, http(s):// archive, s3:// prefix or archive, "
        "or kaggle://<owner>/<dataset>."
    ),
]


@data_app.command("info")
@_clear_errors
def data_info(source: SourceArgument) -> None:
    """Acquire a dataset and print its image counts per split and class and its fingerprint."""
    from collections import Counter

    from model.data.dataset import read_manifest
    from model.data.sources import acquire_dataset

    ref = acquire_dataset(source, get_settings())
    records = read_manifest(ref.manifest_path)
    counts = Counter((r.split, r.label) for r in records)
    labels = sorted({label for _, label in counts})
    typer.echo(f"{'class':<10}{'train':>8}{'test':>8}")
    for label in labels:
        typer.echo(f"{label:<10}{counts[('train', label)]:>8}{counts[('test', label)]:>8}")
    totals = [sum(n for (split, _), n in counts.items() if split == s) for s in ("train", "test")]
    typer.echo(f"{'total':<10}{totals[0]:>8}{totals[1]:>8}")
    typer.echo(f"root: {ref.root}\nfingerprint: {ref.fingerprint}")


@data_app.command("push")
@_clear_errors
def data_push(
    source: SourceArgument,
    destination: Annotated[
        str,
        typer.Argument(help="Where to copy it: s3://<bucket>/<prefix> on the configured store."),
    ],
) -> None:
    """Copy a dataset into the S3 store, so retraining can be scheduled from the team's copy."""
    from urllib.parse import urlparse

    from model.data.sources import acquire_dataset, push_dataset
    from model.errors import DatasetError
    from model.s3 import make_s3_client

    target = urlparse(destination)
    if target.scheme != "s3" or not target.netloc:
        raise DatasetError(f"destination {destination!r} is not s3://<bucket>/<prefix>")
    settings = get_settings()
    ref = acquire_dataset(source, settings)
    uploaded = push_dataset(ref.root, target.netloc, target.path, make_s3_client(settings))
    uri = f"s3://{target.netloc}/{target.path.strip('/')}"
    typer.echo(
        f"pushed {uploaded} files to {uri} (fingerprint {ref.fingerprint}); "
        f"use FER_DATASET={uri}/ to train from it"
    )


def _print_quality(report: QualityReport) -> None:
    typer.echo(f"{'class':<10}{'train':>8}{'test':>8}{'train %':>9}{'test %':>8}")
    for row in report.classes:
        counts = [("-" if row[k] is None else f"{row[k]:,}") for k in ("train", "test")]
        shares = [
            ("-" if row[k] is None else f"{row[k]:.1%}") for k in ("train share", "test share")
        ]
        typer.echo(f"{row['class']:<10}{counts[0]:>8}{counts[1]:>8}{shares[0]:>9}{shares[1]:>8}")
    summary = report.summary
    typer.echo(
        f"{'total':<10}{summary['train_images']:>8,}{summary['test_images']:>8,}\n"
        f"imbalance ratio {summary['imbalance_ratio'] or '-'}; duplicates: "
        f"{summary['duplicate_groups']:,} groups ({summary['extra_copies']:,} extra copies); "
        f"leaked test images {summary['leaked_test_images']:,}; "
        f"near-blank {summary['near_blank_images']:,}; "
        f"train after cleaning {summary['train_after_cleaning']:,}"
    )
    passed = sum(o.success for o in report.outcomes)
    typer.echo(f"{passed} of {len(report.outcomes)} checks passed")
    for outcome in report.critical_failures + report.warnings:
        color = typer.colors.RED if outcome.severity == "critical" else typer.colors.YELLOW
        typer.secho(f"{outcome.severity.upper():<8} {outcome.message}", fg=color)


@data_app.command("validate")
@_clear_errors
def data_validate(source: SourceArgument, quality_config: QualityConfigFile = None) -> None:
    """Run the data-quality checks on a dataset; exit 1 if a critical check fails.

    Prints the images per class, every failed check and where the HTML report is.
    """
    from datetime import UTC, datetime

    from model.data.sources import acquire_dataset
    from validation.run import validate_ref

    config = _quality_config(quality_config)
    settings = get_settings()
    ref = acquire_dataset(source, settings)
    run_name = f"validate-{ref.fingerprint[:12]}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    report = validate_ref(ref, settings.home_dir, run_name, config)
    _print_quality(report)
    typer.echo(f"report: {report.index}")
    if not report.success:
        names = ", ".join(o.name for o in report.critical_failures)
        typer.secho(f"FAILED critical check(s): {names}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    typer.echo("data quality passed")


def _model_file(spec: str, settings: Settings) -> Path:
    """A local ``.keras`` file for ``champion``, a version id in the store, or a path.

    Stored versions come with their TFLite export downloaded beside the model.
    """
    path = Path(spec)
    if path.is_file():
        return path
    from model.errors import RegistryError
    from model.registry.store import ModelRegistry

    registry = ModelRegistry.from_settings(settings)
    if spec == "champion":
        pointer = registry.champion()
        if pointer is None:
            raise RegistryError("no champion has been promoted yet; run `fer retrain` first")
        version, sha256 = pointer.version, pointer.sha256
    else:
        version, sha256 = spec, None
    return registry.download_served(version, settings.home_dir / "models", sha256)


@app.command()
@_clear_errors
def evaluate(
    model: Annotated[
        str,
        typer.Option(
            help="A .keras file, a version id in the store, or `champion` (downloaded and "
            "sha256-verified)."
        ),
    ],
    data: Annotated[
        Path,
        typer.Option(
            help="Labelled images: a folder DIR/<class>/* or DIR/test/<class>/*, or a CSV "
            "with path and label columns."
        ),
    ],
) -> None:
    """Score a model on labelled images; print accuracy, per-class metrics, ECE as JSON."""
    import json

    from model.evaluation.metrics import load_labelled_images, load_scored, score_model

    x, y = load_labelled_images(data)
    metrics = score_model(*load_scored(_model_file(model, get_settings())), x, y, str(data))
    typer.echo(json.dumps({"model": model, "data": str(data), **metrics.model_dump()}, indent=2))
