"""Turn whatever a user uploads into one RGB image, or say clearly why it cannot be used."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from model.errors import InputError

#: What to upload instead, named in every refusal.
ACCEPTED = "a JPEG, PNG, WebP, BMP or GIF photo"


@dataclass(frozen=True)
class ImageLimits:
    """Size limits for uploads.

    Attributes:
        max_bytes: larger files are refused.
        max_pixels: larger images are downscaled to about this many pixels.
        reject_pixels: larger images are refused before their pixels are decoded.
        detect_side: long side of the copy faces are searched on (serving.detector): faces
            below about 1/30 of it are missed, and the time grows with its square.
    """

    max_bytes: int = 20 * 1024**2
    max_pixels: int = 2_000_000
    reject_pixels: int = 50_000_000
    detect_side: int = 640


@dataclass(frozen=True)
class LoadedImage:
    """An upload as an 8-bit RGB image, plus what was done to it on the way.

    Attributes:
        image: the RGB image, at most ``max_pixels`` large.
        notes: one line per conversion (first frame taken, 16-bit scaled, downscaled, ...).
        original_size: width and height as uploaded.
    """

    image: Image.Image
    notes: tuple[str, ...]
    original_size: tuple[int, int]


def too_large(size: int, limits: ImageLimits) -> InputError:
    """The error for an upload of ``size`` bytes, above the limit."""
    return InputError(
        f"the file is {size / 1024**2:.1f} MB, above the {limits.max_bytes / 1024**2:.1f} MB "
        f"limit: upload a smaller or more compressed photo",
        "too_large",
    )


def load_image(path: Path, limits: ImageLimits) -> LoadedImage:
    """Read an uploaded file of any common format, mode and size.

    Args:
        path: the uploaded file.
        limits: byte and pixel limits.

    Returns:
        The image in RGB and the notes on how it was converted.

    Raises:
        InputError: empty, too large, not an image, corrupt or truncated files; each message
            names the problem and what to upload instead.
    """
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"the file is empty: upload {ACCEPTED}", "empty")
    if size > limits.max_bytes:
        raise too_large(size, limits)
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb check warns; the explicit limit below decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)
    except UnidentifiedImageError as error:
        raise InputError(
            f"this file is not a readable image: upload {ACCEPTED}", "not_an_image"
        ) from error
    except Image.DecompressionBombError as error:
        raise InputError(_too_many_pixels_message(limits), "too_many_pixels") from error
    with opened:
        width, height = opened.size
        if width * height > limits.reject_pixels:
            raise InputError(_too_many_pixels_message(limits, width, height), "too_many_pixels")
        notes: list[str] = []
        frames = getattr(opened, "n_frames", 1)
        if frames > 1:
            notes.append(f"animated image with {frames} frames: the first frame was analysed")
        try:
            opened.seek(0)
            opened.load()
            image = ImageOps.exif_transpose(opened)
        except (OSError, SyntaxError, ValueError) as error:
            raise InputError(
                f"the image data is corrupt or truncated ({error}): upload the file again or "
                f"another copy of it",
                "corrupt",
            ) from error
        rgb = _to_rgb(image, notes)
    if width * height > limits.max_pixels:
        scale = (limits.max_pixels / (width * height)) ** 0.5
        target = (max(1, int(width * scale)), max(1, int(height * scale)))
        rgb = rgb.resize(target, Image.Resampling.LANCZOS)
        notes.append(f"large image {width}x{height} downscaled to {target[0]}x{target[1]}")
    return LoadedImage(rgb, tuple(notes), (width, height))


def _too_many_pixels_message(limits: ImageLimits, width: int = 0, height: int = 0) -> str:
    size = f" ({width}x{height})" if width else ""
    return (
        f"the image has too many pixels{size}, above {limits.reject_pixels / 1e6:.0f} megapixels: "
        "upload a photo of at most that size"
    )


def _to_rgb(image: Image.Image, notes: list[str]) -> Image.Image:
    """8-bit RGB from any Pillow mode, noting the conversions a user may want to know about."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") else max(float(array.max()), 1.0)
        if mode == "I" and array.max() <= 255:
            top = 255.0
        eight = np.clip(array / top * 255.0, 0, 255).astype(np.uint8)
        notes.append(f"{'16' if mode.startswith('I;16') else '32'}-bit image scaled to 8 bits")
        return Image.fromarray(eight, mode="L").convert("RGB")
    if mode == "CMYK":
        notes.append("CMYK image converted to RGB")
        return image.convert("RGB")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        notes.append("transparent areas shown on white")
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
