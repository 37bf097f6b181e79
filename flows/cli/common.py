"""What the commands share: error and signal handling, and the options several commands take."""

from __future__ import annotations

import inspect
import signal
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from model.errors import FerError
from model.evaluation.gate import GateConfig

F = TypeVar("F", bound=Callable[..., Any])

ProfileOption = Annotated[
    str,
    typer.Option(
        "--profile",
        help="Training profile: `quick` (small net, time-budgeted), `cpu` (the nightly recipe, "
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
SourceArgument = Annotated[
    str,
    typer.Argument(
        help="Dataset source: folder, .zip/.tar.gz, http(s):// archive, s3:// prefix or archive, "
        "or kaggle://<owner>/<dataset>."
    ),
]

#: The gate's options, which `fer retrain`, `fer up` and `fer models import` all take.
GATE_OPTIONS: dict[str, Any] = {
    "min_accuracy": Annotated[
        float, typer.Option(help="Gate: lowest test accuracy that may be promoted.", min=0, max=1)
    ],
    "min_macro_f1": Annotated[
        float, typer.Option(help="Gate: lowest test macro F1 (0: no floor).", min=0, max=1)
    ],
    "min_class_recall": Annotated[
        float, typer.Option(help="Gate: lowest recall of every class (0: no floor).", min=0, max=1)
    ],
    "max_regression": Annotated[
        float,
        typer.Option(
            help="Gate: how far below the champion's test accuracy (on the same test data) the "
            "new model may be (1: no comparison).",
            min=0,
            max=1,
        ),
    ],
}


def with_gate_options(command: F) -> F:
    """Give a command the gate's options; it receives them as one ``gate: GateConfig``.

    The options join the command's signature (which Typer reads), before ``quality_config``
    when it has one, with :class:`GateConfig`'s defaults: written once for every command
    that gates.
    """
    own = inspect.signature(command, eval_str=True, locals={"GateConfig": GateConfig})
    options = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=GateConfig.model_fields[name].default,
            annotation=annotation,
        )
        for name, annotation in GATE_OPTIONS.items()
    ]
    kept = [p for p in own.parameters.values() if p.name != "gate"]
    at = next((i for i, p in enumerate(kept) if p.name == "quality_config"), len(kept))

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        gate = GateConfig(**{name: kwargs.pop(name) for name in GATE_OPTIONS})
        return command(*args, gate=gate, **kwargs)

    # Keyword-only from here on: the options after them become keyword-only too.
    after = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in kept[at:]]
    signature = own.replace(parameters=[*kept[:at], *options, *after])
    wrapper.__signature__ = signature  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
    return wrapper  # type: ignore[return-value]


def clear_errors(command: F) -> F:
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


def stoppable(command: F) -> F:
    """Stop a long-running command on SIGINT, SIGTERM or SIGHUP, whatever it inherited."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from infra.signals import stopping_on_signals

        with stopping_on_signals():
            return command(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
