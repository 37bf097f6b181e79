"""The data contract every layer shares.

The classes, the image size, a dataset's reference and the names of the files a model version
is made of.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: Class names; this alphabetical order is the label index everywhere.
CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
SPLITS: tuple[str, ...] = ("train", "test")
IMAGE_SIZE = 48
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
#: Default pixel standard deviation below which an image is near-blank: the clean step drops
#: such images from train, validation counts them (each has its own setting, both default here).
NEAR_BLANK_STD = 1.0

#: The trained Keras model of a run and of a stored version.
MODEL_FILE = "model.keras"
#: The LiteRT (TFLite) export that serving runs.
TFLITE_FILE = "serving.tflite"
#: What the export check measured, stored beside the export.
EXPORT_FILE = "export.json"


@dataclass(frozen=True)
class DatasetRef:
    """A dataset on local disk, identified by its fingerprint.

    Attributes:
        root: folder in FER layout (``train/<class>/*``, ``test/<class>/*``).
        fingerprint: hash over (split, class, relative path, content hash) of every image.
        manifest_path: CSV with one ``ImageRecord`` per image.
        source: what the user asked for (path or URI), for lineage.
    """

    root: Path
    fingerprint: str
    manifest_path: Path
    source: str
