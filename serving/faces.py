"""Find faces, classify each with one batched call, and draw the result."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from model.inference.predictor import Predictor, to_model_input
from serving.detector import Box, SearchConfig, detect


@dataclass(frozen=True)
class FaceResult:
    """One face: where it is (x, y, width, height in the analysed image) and its emotions."""

    box: Box
    probabilities: dict[str, float]

    @property
    def label(self) -> str:
        """The most probable emotion."""
        return max(self.probabilities, key=self.probabilities.__getitem__)


@dataclass(frozen=True)
class Analysis:
    """Everything one request returns.

    Attributes:
        faces: one result per face, left to right.
        whole_image: the whole image was classified as one face (no detection).
        notes: what happened to the upload and what the user can do.
        model_version: the version that answered.
        size: width and height of the analysed image (boxes refer to it).
    """

    faces: tuple[FaceResult, ...]
    whole_image: bool
    notes: tuple[str, ...]
    model_version: str
    size: tuple[int, int]

    def to_json(self) -> dict[str, Any]:
        """The API's answer: boxes, labels and probabilities per face."""
        return {
            "model_version": self.model_version,
            "image_size": list(self.size),
            "whole_image": self.whole_image,
            "faces": [
                {
                    "box": dict(zip(("x", "y", "width", "height"), face.box, strict=True)),
                    "label": face.label,
                    "probabilities": face.probabilities,
                }
                for face in self.faces
            ],
            "notes": list(self.notes),
        }


def detect_faces(pixels: np.ndarray, detect_side: int = SearchConfig.detect_side) -> list[Box]:
    """Faces in an RGB (or grayscale) image, framed like FER2013's crops, left to right.

    MediaPipe's BlazeFace (:mod:`serving.detector`); it replaced OpenCV's Haar cascade, which
    missed most faces (bench/RESULTS.md, "Face detection").

    Args:
        pixels: H x W x 3 or H x W uint8 pixels.
        detect_side: long side of the copy searched (smaller: faster, small faces missed).

    Returns:
        Boxes as (x, y, width, height) in the image's pixels.
    """
    return [box for box, _ in detect(pixels, SearchConfig(detect_side=detect_side))]


def analyze(
    image: Image.Image,
    predictor: Predictor,
    whole_image: bool = False,
    notes: tuple[str, ...] = (),
    detect_side: int = SearchConfig.detect_side,
) -> Analysis:
    """Detect faces (or take the whole image) and classify them in one batch.

    Args:
        image: RGB image.
        predictor: the model to ask.
        whole_image: skip detection and treat the image as one face.
        notes: notes from loading the image, passed through.
        detect_side: long side of the copy faces are searched on.

    Returns:
        The faces with their probabilities; no faces (and a note saying what to do) when
        detection finds none.
    """
    gray = image.convert("L")
    width, height = gray.size
    boxes = (
        [(0, 0, width, height)]
        if whole_image
        else detect_faces(np.asarray(image.convert("RGB")), detect_side)
    )
    if not boxes:
        hint = "no face found: tick 'Treat the whole image as one face' to classify it anyway"
        return Analysis((), False, (*notes, hint), predictor.version, (width, height))
    crops = np.stack([to_model_input(gray.crop((x, y, x + w, y + h))) for x, y, w, h in boxes])
    probabilities = predictor.predict_batch(crops)
    faces = tuple(
        FaceResult(box, dict(zip(predictor.classes, map(float, row), strict=True)))
        for box, row in zip(boxes, probabilities, strict=True)
    )
    return Analysis(faces, whole_image, notes, predictor.version, (width, height))


def annotate(image: Image.Image, analysis: Analysis) -> Image.Image:
    """A copy of the image with a box and the top emotion drawn on each face."""
    drawn = image.copy()
    draw = ImageDraw.Draw(drawn)
    line = max(2, min(drawn.size) // 200)
    font = ImageFont.load_default(size=max(12, min(drawn.size) // 30))
    for number, face in enumerate(analysis.faces, start=1):
        x, y, w, h = face.box
        draw.rectangle((x, y, x + w - 1, y + h - 1), outline=(0, 220, 90), width=line)
        text = f"{number}: {face.label} {face.probabilities[face.label]:.0%}"
        left, top, right, bottom = draw.textbbox((x, y), text, font=font)
        lift = bottom - top + 2 * line
        origin = (x, y - lift if y >= lift else y + h)
        box = draw.textbbox(origin, text, font=font)
        draw.rectangle((box[0] - line, box[1] - line, box[2] + line, box[3] + line), fill=(0, 0, 0))
        draw.text(origin, text, fill=(255, 255, 255), font=font)
    return drawn
