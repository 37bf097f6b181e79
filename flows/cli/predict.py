"""`fer predict`: classify photos on disk with the champion, a model file, or a running server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from flows.cli.common import clear_errors
from model.settings import get_settings

if TYPE_CHECKING:
    from serving.predict import Outcome


def _print_table(outcome: Outcome) -> None:
    if outcome.answer is None:
        typer.secho(f"{outcome.path}: refused: {outcome.refused}", fg=typer.colors.RED, err=True)
        return
    faces = outcome.answer["faces"]
    typer.echo(f"{outcome.path}: {len(faces)} face(s), model {outcome.answer['model_version']}")
    for number, face in enumerate(faces, start=1):
        top = sorted(face["probabilities"].items(), key=lambda item: -item[1])[:3]
        ranked = ", ".join(f"{name} {p:.1%}" for name, p in top)
        typer.echo(f"  face {number} at {face['box']}: {face['label']} ({ranked})")
    for note in outcome.answer["notes"]:
        typer.echo(f"  note: {note}")


@clear_errors
def predict(
    photos: Annotated[
        list[Path],
        typer.Argument(help="Photos, or folders of them (JPEG, PNG, WebP, BMP, GIF).", exists=True),
    ],
    model: Annotated[
        str,
        typer.Option(help="`champion`, a version id in the store, or a .keras file."),
    ] = "champion",
    url: Annotated[
        str | None,
        typer.Option(
            help="Ask a running server (`fer serve`) instead, e.g. http://host:7860; "
            "credentials from FER_SERVE_AUTH (a token, or its first user:password)."
        ),
    ] = None,
    whole_image: Annotated[
        bool, typer.Option(help="Treat each whole image as one face (no detection).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per photo.")] = False,
) -> None:
    """Classify the faces in photos; exit 1 when a photo is refused (the reason is printed)."""
    from serving.predict import photos_in, predict_local, predict_remote

    files = photos_in(photos)
    if url is not None:
        outcomes = predict_remote(files, url, whole_image, auth=get_settings().serve_auth)
    else:
        from model.inference.predictor import Predictor
        from model.registry.champion import local_model_file
        from serving.app import image_limits

        settings = get_settings()
        path = local_model_file(model, settings)
        version = "local" if Path(model).is_file() else path.parent.name
        outcomes = predict_local(
            files, Predictor.from_file(path, version=version), image_limits(settings), whole_image
        )
    refused = 0
    for outcome in outcomes:
        refused += outcome.answer is None
        if as_json:
            shown = outcome.answer or {"error": outcome.refused}
            typer.echo(json.dumps({"file": str(outcome.path), **shown}))
        else:
            _print_table(outcome)
    if refused:
        raise typer.Exit(1)
