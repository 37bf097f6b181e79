"""A labelled face-detection benchmark made from real FER2013 test faces.

Each image is a generated background (gradients, shapes, texture, blur) with several FER2013
test faces pasted at known places and sizes, rotated up to +-20 degrees, some blurred, with
their lighting changed. The ground truth of a face is the square its 48x48 FER2013 image
covered before rotation: the framing the classifier was trained on. Each image is saved as
``NNNN.png`` with ``NNNN.json`` beside it (boxes, sizes, emotions, source files).

Also: the photos scikit-image ships, hand-labelled (the astronaut's face), and face-free ones
(coffee, a cat, a rocket...) for false positives.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from model.contract import CLASSES

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Face:
    """One pasted face: its box (x, y, side, side), emotion and source file."""

    box: Box
    label: str
    source: str


@dataclass(frozen=True)
class Sample:
    """One benchmark image and its faces."""

    image: Path
    faces: tuple[Face, ...]


def fer_faces(root: Path, count: int, seed: int, split: str = "test") -> list[tuple[Path, str]]:
    """``count`` FER2013 faces of ``split``, the same for the same seed, classes mixed."""
    files = sorted((path, label) for label in CLASSES for path in (root / split / label).glob("*"))
    order = np.random.default_rng(seed).permutation(len(files))[:count]
    return [files[index] for index in order]


def background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A varied, face-free scene: a gradient, random shapes, optional texture and blur."""
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    ramp = np.linspace(0, 1, height)[:, None, None]
    pixels = (top * (1 - ramp) + bottom * ramp) * np.ones((1, width, 1))
    image = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 15))):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(10, width // 2)), y0 + int(rng.integers(10, height // 2))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        shape = rng.choice(["rectangle", "ellipse", "line"])
        if shape == "line":
            draw.line((x0, y0, x1, y1), fill=colour, width=int(rng.integers(1, 12)))
        else:
            getattr(draw, shape)((x0, y0, x1, y1), fill=colour)
    if rng.random() < 0.5:
        noise = rng.normal(0, rng.uniform(5, 25), (height, width, 1))
        image = Image.fromarray(np.clip(np.asarray(image) + noise, 0, 255).astype(np.uint8))
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(1, 4))))
    return image


def _place(rng: np.random.Generator, size: int, width: int, height: int, taken: list[Box]) -> Box:
    """A square of ``size`` inside the image, clear of the faces placed already (or none)."""
    reach = math.ceil(size * 1.3)  # a rotated square's corners stay inside
    for _ in range(200):
        x = int(rng.integers(reach // 2, max(reach // 2 + 1, width - reach)))
        y = int(rng.integers(reach // 2, max(reach // 2 + 1, height - reach)))
        box = (x, y, size, size)
        if all(_apart(box, other) for other in taken):
            return box
    return (-1, -1, 0, 0)


def _apart(a: Box, b: Box) -> bool:
    margin = max(a[2], b[2]) // 3
    return (
        a[0] + a[2] + margin <= b[0]
        or b[0] + b[2] + margin <= a[0]
        or a[1] + a[3] + margin <= b[1]
        or b[1] + b[3] + margin <= a[1]
    )


def _paste(canvas: Image.Image, face: Image.Image, box: Box, rng: np.random.Generator) -> None:
    """The face scaled into ``box``, relit, maybe blurred, rotated about its centre, pasted."""
    x, y, size, _ = box
    gray = np.asarray(face.convert("L"), dtype=np.float32)
    gain, gamma = rng.uniform(0.6, 1.4), rng.uniform(0.7, 1.4)
    lit = np.clip(255 * (gray / 255) ** gamma * gain, 0, 255).astype(np.uint8)
    scaled = Image.fromarray(lit).resize((size, size), Image.Resampling.BICUBIC)
    if rng.random() < 0.3:
        scaled = scaled.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 1.5)) * size / 48))
    angle = float(rng.uniform(-20, 20))
    rgb = scaled.convert("RGB").rotate(angle, Image.Resampling.BICUBIC, expand=True)
    # A feathered edge: the crop's square border should not be what a detector keys on.
    square = Image.new("L", (size, size), 0)
    ImageDraw.Draw(square).rectangle((1, 1, size - 2, size - 2), fill=255)
    feather = square.filter(ImageFilter.GaussianBlur(max(1.0, size / 24)))
    mask = feather.rotate(angle, Image.Resampling.BICUBIC, expand=True)
    left = x + size // 2 - rgb.width // 2
    top = y + size // 2 - rgb.height // 2
    canvas.paste(rgb, (left, top), mask)


def make_image(
    faces: list[tuple[Path, str]], rng: np.random.Generator, width: int, height: int
) -> tuple[Image.Image, list[Face]]:
    """One benchmark image with these faces, at sizes from 24 to 200 pixels (log-uniform)."""
    canvas = background(rng, width, height)
    placed: list[Face] = []
    for path, label in faces:
        size = int(round(math.exp(rng.uniform(math.log(24), math.log(200)))))
        box = _place(rng, size, width, height, [face.box for face in placed])
        if box[2] == 0:
            continue  # no room left for this one
        with Image.open(path) as face:
            _paste(canvas, face, box, rng)
        placed.append(Face(box, label, path.name))
    return canvas, placed


def generate(
    root: Path,
    folder: Path,
    images: int,
    seed: int = 0,
    size: tuple[int, int] = (640, 480),
    split: str = "test",
) -> list[Sample]:
    """``images`` benchmark images with 2-6 faces each, written to ``folder``.

    Args:
        root: the FER2013 folder.
        folder: where the PNG and JSON files go (made if missing).
        images: how many images.
        seed: the same seed gives the same set.
        size: width and height of each image.
        split: whose faces are pasted: ``test`` for the benchmark, ``train`` for fitting
            (bench/framing.py), so that what is fitted never sees the faces it is scored on.
    """
    rng = np.random.default_rng(seed)
    counts = rng.integers(2, 7, images)
    pool = iter(fer_faces(root, int(counts.sum()), seed, split))
    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for number, count in enumerate(counts):
        chosen = [next(pool) for _ in range(count)]
        image, faces = make_image(chosen, rng, *size)
        path = folder / f"{number:04d}.png"
        image.save(path)
        record = {"size": list(size), "faces": [asdict(face) for face in faces]}
        path.with_suffix(".json").write_text(json.dumps(record, indent=1))
        samples.append(Sample(path, tuple(faces)))
    return samples


#: scikit-image's photos: the astronaut's face, hand-labelled in FER2013's framing, and
#: photos without a face (the cameraman's face is turned away and not counted either way).
SHIPPED_FACES: dict[str, tuple[Box, ...]] = {"astronaut": ((160, 50, 135, 135),)}
SHIPPED_EMPTY = ("coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")


def shipped_photos(folder: Path) -> list[Sample]:
    """scikit-image's photos written to ``folder`` with their labels (empty: no face)."""
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for name in (*SHIPPED_FACES, *SHIPPED_EMPTY):
        path = folder / f"{name}.png"
        Image.fromarray(getattr(data, name)()).convert("RGB").save(path)
        faces = tuple(Face(box, "", name) for box in SHIPPED_FACES.get(name, ()))
        path.with_suffix(".json").write_text(
            json.dumps({"faces": [asdict(face) for face in faces]}, indent=1)
        )
        samples.append(Sample(path, faces))
    return samples


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    width = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    height = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(0, width) * max(0, height)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union else 0.0


def match(truth: list[Box], found: list[Box], threshold: float = 0.5) -> dict[int, int]:
    """Ground-truth index -> detection index, greedily by IoU, pairs at ``threshold`` or more."""
    pairs = sorted(
        ((iou(t, f), ti, fi) for ti, t in enumerate(truth) for fi, f in enumerate(found)),
        reverse=True,
    )
    matched: dict[int, int] = {}
    used: set[int] = set()
    for overlap, ti, fi in pairs:
        if overlap < threshold:
            break
        if ti not in matched and fi not in used:
            matched[ti] = fi
            used.add(fi)
    return matched
