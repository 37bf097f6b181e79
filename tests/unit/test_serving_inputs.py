"""Uploads of every awkward kind: each is used with a note, or refused with a clear reason."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.errors import InputError
from serving.images import ImageLimits, load_image

pytestmark = pytest.mark.unit

LIMITS = ImageLimits(max_bytes=2 * 1024**2, max_pixels=250_000, reject_pixels=4_000_000)


def _saved(tmp_path: Path, name: str, image: Image.Image, **options: object) -> Path:
    path = tmp_path / name
    image.save(path, **options)
    return path


def _refused(path: Path, limits: ImageLimits = LIMITS) -> str:
    with pytest.raises(InputError) as error:
        load_image(path, limits)
    return str(error.value)


def test_random_bytes_are_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    assert "not a readable image: upload a JPEG, PNG" in _refused(path)


def test_a_text_file_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("smile!\n")
    assert "not a readable image" in _refused(path)


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert "the file is empty" in _refused(path)


def test_a_truncated_jpeg_is_corrupt(tmp_path: Path) -> None:
    gradient = np.tile(np.arange(256, dtype=np.uint8), (256, 1))
    whole = io.BytesIO()
    Image.fromarray(gradient).convert("RGB").save(whole, format="JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    assert "corrupt or truncated" in _refused(path)


def test_too_many_bytes_is_refused_before_decoding(tmp_path: Path) -> None:
    noise = np.random.default_rng(1).integers(0, 256, (400, 400, 3), dtype=np.uint8)
    path = _saved(tmp_path, "noise.png", Image.fromarray(noise))
    message = _refused(path, ImageLimits(max_bytes=100_000))
    assert "above the 0.1 MB limit: upload a smaller or more compressed photo" in message


def test_too_many_pixels_is_refused(tmp_path: Path) -> None:
    path = _saved(tmp_path, "huge.png", Image.new("L", (2500, 2000), 90))
    assert "too many pixels (2500x2000)" in _refused(path)


def test_a_large_image_is_downscaled(tmp_path: Path) -> None:
    path = _saved(tmp_path, "big.jpg", Image.new("RGB", (1000, 800), (200, 150, 100)))
    loaded = load_image(path, LIMITS)
    width, height = loaded.image.size
    assert width * height <= LIMITS.max_pixels and abs(width / height - 1.25) < 0.01
    assert loaded.original_size == (1000, 800)
    assert loaded.notes == ("large image 1000x800 downscaled to 559x447",)


def test_an_animated_gif_uses_its_first_frame(tmp_path: Path) -> None:
    frames = [
        Image.new("RGB", (64, 64), color) for color in ((250, 0, 0), (0, 250, 0), (0, 0, 250))
    ]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    loaded = load_image(path, LIMITS)
    assert loaded.notes == ("animated image with 3 frames: the first frame was analysed",)
    assert loaded.image.mode == "RGB"


def test_a_16_bit_png_is_scaled_to_8_bits(tmp_path: Path) -> None:
    deep = np.array([[0, 32768], [65535, 65535]], dtype=np.uint16)
    path = _saved(tmp_path, "deep.png", Image.fromarray(deep))
    assert Image.open(path).mode.startswith("I")
    loaded = load_image(path, LIMITS)
    assert loaded.notes == ("16-bit image scaled to 8 bits",)
    gray = np.asarray(loaded.image.convert("L"))
    assert gray[0, 0] == 0 and gray[1, 0] == 255 and 126 <= gray[0, 1] <= 128


def test_a_cmyk_jpeg_is_converted(tmp_path: Path) -> None:
    path = _saved(tmp_path, "print.jpg", Image.new("CMYK", (64, 64), (0, 255, 255, 0)))
    loaded = load_image(path, LIMITS)
    assert loaded.notes == ("CMYK image converted to RGB",)
    red, green, blue = loaded.image.getpixel((32, 32))
    assert red > 200 and green < 60 and blue < 60


def test_rgba_is_flattened_onto_white(tmp_path: Path) -> None:
    path = _saved(tmp_path, "cutout.png", Image.new("RGBA", (32, 32), (0, 0, 0, 0)))
    loaded = load_image(path, LIMITS)
    assert loaded.notes == ("transparent areas shown on white",)
    assert loaded.image.getpixel((5, 5)) == (255, 255, 255)


def test_exif_rotation_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (60, 20), (0, 0, 0))
    exif = image.getexif()
    exif[274] = 6  # rotate 90 degrees clockwise to display
    path = _saved(tmp_path, "rotated.jpg", image, exif=exif)
    assert load_image(path, LIMITS).image.size == (20, 60)
