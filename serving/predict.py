"""Classify photos on disk: with a local model, or by asking a running server's API.

Both give, per photo, the JSON the API answers, or the reason the photo was refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from model.errors import InputError, ServiceError
from model.inference.predictor import Predictor
from serving.access import client_header
from serving.faces import analyze
from serving.images import ImageLimits, load_image

#: What a folder is searched for (the formats the app reads).
PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"})


@dataclass(frozen=True)
class Outcome:
    """One photo's answer, or why it was refused.

    Attributes:
        path: the photo.
        answer: the API's JSON for it, or None when refused.
        refused: the reason (the app's message), or None when answered.
    """

    path: Path
    answer: dict[str, Any] | None = None
    refused: str | None = None


def photos_in(paths: Iterable[Path]) -> list[Path]:
    """The files given, with each folder replaced by the photos in it (sorted)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES)
        else:
            found.append(path)
    return found


def predict_local(
    paths: Iterable[Path], predictor: Predictor, limits: ImageLimits, whole_image: bool = False
) -> Iterator[Outcome]:
    """Each photo through the app's own steps (load, detect, classify) in this process."""
    for path in paths:
        try:
            loaded = load_image(path, limits)
        except (InputError, OSError) as error:
            yield Outcome(path, refused=str(error))
            continue
        analysis = analyze(loaded.image, predictor, whole_image, loaded.notes, limits.detect_side)
        yield Outcome(path, answer=analysis.to_json())


def predict_remote(
    paths: Iterable[Path],
    url: str,
    whole_image: bool = False,
    timeout: float = 60.0,
    auth: SecretStr | None = None,
) -> Iterator[Outcome]:
    """Each photo sent to a running server's ``POST /api/v1/predict``.

    Args:
        paths: the photos.
        url: the server's address, e.g. ``http://host:7860``.
        whole_image: treat each photo as one face.
        timeout: seconds to wait for each answer.
        auth: the server's ``FER_SERVE_AUTH`` value, sent as its credentials.

    Raises:
        ServiceError: the server cannot be reached, or refuses the credentials.
    """
    import httpx

    endpoint = f"{url.rstrip('/')}/api/v1/predict"
    headers = {"Authorization": client_header(auth.get_secret_value())} if auth else {}
    with httpx.Client(timeout=timeout, headers=headers) as client:
        for path in paths:
            try:
                with path.open("rb") as photo:
                    answer = client.post(
                        endpoint,
                        files={"image": (path.name, photo)},
                        data={"whole_image": str(whole_image).lower()},
                    )
            except httpx.TransportError as error:
                raise ServiceError(
                    f"cannot reach {endpoint} ({error}); start the server with `fer serve` "
                    "or check --url"
                ) from error
            except OSError as error:
                yield Outcome(path, refused=str(error))
                continue
            if answer.status_code == 401:
                raise ServiceError(
                    f"{endpoint} asks for credentials: {_detail(answer)}; set FER_SERVE_AUTH "
                    "to the server's value"
                )
            if answer.status_code == 200:
                yield Outcome(path, answer=answer.json())
            else:
                yield Outcome(path, refused=_detail(answer))


def _detail(answer: Any) -> str:
    """The server's reason for refusing a photo."""
    try:
        return str(answer.json()["detail"])
    except (ValueError, KeyError, TypeError):
        return f"the server answered {answer.status_code}: {answer.text[:200]}"
