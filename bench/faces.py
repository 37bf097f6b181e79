"""Face detection benchmark: recall, false positives, speed and emotion accuracy end to end.

Builds the labelled set of :mod:`bench.faceset` (real FER2013 test faces pasted onto generated
backgrounds, 640x480, plus scikit-image's photos) and runs each detector on it. A face counts
as found when a served crop overlaps its FER2013 square with IoU >= 0.5; a miss is "framed off"
when a crop overlaps it by 0.2-0.5 (the face was found, its crop framed unlike FER2013's, and
that crop is a false positive too), "not found" otherwise. The emotion columns
classify the served crops of the found faces and compare with the same faces fed directly
(their 48x48 files): end to end counts a missed face as wrong.

    uv run --locked python bench/faces.py --model PATH/model.keras [--images 100] [--seed 7]

Prints a markdown table (bench/RESULTS.md keeps the measured ones); name the CPU beside it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bench.faceset import Box, Sample, generate, match, shipped_photos
from model.inference.predictor import Predictor, to_model_input
from serving import detector as blaze

Detector = Callable[[np.ndarray], list[Box]]


def haar(side: int) -> Detector:
    """OpenCV's Haar cascade as served before (on a copy of long side ``side``: 320 then)."""
    import cv2

    cascade = cv2.CascadeClassifier(f"{cv2.data.haarcascades}haarcascade_frontalface_alt2.xml")

    def run(rgb: np.ndarray) -> list[Box]:
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        scale = min(1.0, side / max(gray.shape))
        small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        found = cascade.detectMultiScale(small, scaleFactor=1.2, minNeighbors=5, minSize=(24, 24))
        return [tuple(round(v / scale) for v in box) for box in found]

    return run


def blazeface(config: blaze.SearchConfig, framing: blaze.Framing = blaze.FER_FRAMING) -> Detector:
    """BlazeFace on two copies of the photo, boxes framed like FER2013."""
    return lambda rgb: [box for box, _ in blaze.detect(rgb, config, framing)]


@dataclass
class Row:
    """One detector's figures."""

    found: dict[str, list[int]]
    false_positives: int
    images: int
    shipped_found: int
    shipped_false: int
    ms: list[float]
    correct_end_to_end: int
    correct_found: int
    faces_found: int
    framed_off: int = 0


def _band(side: int) -> str:
    return "24-40" if side < 40 else "40+"


def evaluate(
    detect: Detector, samples: list[Sample], shipped: list[Sample], predictor: Predictor
) -> Row:
    """Run ``detect`` on every image; count hits, misses, false positives and right emotions."""
    row = Row({"24-40": [0, 0], "40+": [0, 0]}, 0, len(samples), 0, 0, [], 0, 0, 0)
    for sample in samples:
        rgb = np.asarray(Image.open(sample.image).convert("RGB"))
        started = time.perf_counter()
        boxes = detect(rgb)
        row.ms.append(1000 * (time.perf_counter() - started))
        truth = [face.box for face in sample.faces]
        matched = match(truth, boxes)
        row.false_positives += len(boxes) - len(matched)
        row.framed_off += len(set(match(truth, boxes, threshold=0.2)) - set(matched))
        for index, face in enumerate(sample.faces):
            row.found[_band(face.box[2])][1] += 1
            row.found[_band(face.box[2])][0] += index in matched
        if matched:
            gray = Image.fromarray(rgb).convert("L")
            crops = [boxes[matched[index]] for index in sorted(matched)]
            inputs = np.stack(
                [to_model_input(gray.crop((x, y, x + w, y + h))) for x, y, w, h in crops]
            )
            labels = [predictor.classes[i] for i in predictor.predict_batch(inputs).argmax(axis=1)]
            right = sum(
                label == sample.faces[index].label
                for index, label in zip(sorted(matched), labels, strict=True)
            )
            row.correct_end_to_end += right
            row.correct_found += right
            row.faces_found += len(matched)
    for sample in shipped:
        boxes = detect(np.asarray(Image.open(sample.image).convert("RGB")))
        matched = match([face.box for face in sample.faces], boxes)
        row.shipped_found += len(matched)
        row.shipped_false += len(boxes) - len(matched)
    return row


def direct_accuracy(samples: list[Sample], root: Path, predictor: Predictor) -> float:
    """Accuracy on the same faces, fed as their 48x48 FER2013 files."""
    faces_ = [face for sample in samples for face in sample.faces]
    inputs = np.stack(
        [to_model_input(Image.open(root / "test" / face.label / face.source)) for face in faces_]
    )
    labels = [predictor.classes[i] for i in predictor.predict_batch(inputs).argmax(axis=1)]
    return sum(label == face.label for label, face in zip(labels, faces_, strict=True)) / len(
        faces_
    )


def megapixel_ms(detect: Detector, runs: int = 15) -> float:
    """Median time for the astronaut photo scaled to 1155x866 (1 MP)."""
    from skimage import data

    photo = np.asarray(Image.fromarray(data.astronaut()).resize((1155, 866)))
    detect(photo)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        detect(photo)
        times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times)


def _pct(hit: list[int]) -> str:
    return f"{hit[0] / hit[1]:.1%} ({hit[0]}/{hit[1]})" if hit[1] else "-"


def main() -> None:
    """Build the set, run the detectors, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a .keras model file")
    parser.add_argument("--fer2013", type=Path, default=Path("../shared/fer2013"))
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    predictor = Predictor.from_file(args.model, version=args.model.parent.name)
    with tempfile.TemporaryDirectory(prefix="fer-faces-") as folder:
        samples = generate(args.fer2013, Path(folder) / "generated", args.images, args.seed)
        shipped = shipped_photos(Path(folder) / "shipped")
        direct = direct_accuracy(samples, args.fer2013, predictor)
        detectors: dict[str, Detector] = {
            "Haar alt2, 320 px copy (before)": haar(320),
            "Haar alt2, 640 px copy": haar(640),
            "BlazeFace short-range, 640 px, score >= 0.7 alone (served until 2026-12-02)": (
                blazeface(blaze.SearchConfig(min_score=0.7, small_min_score=0.7))
            ),
            "BlazeFace short-range, 640 px, score >= 0.5 alone": blazeface(
                blaze.SearchConfig(min_score=0.5, small_min_score=0.5, sure_score=0.5)
            ),
            "BlazeFace >= 0.5, CenterFace on < 0.7, 96 px patch, >= 0.2": blazeface(
                blaze.SearchConfig(small_min_score=0.5)
            ),
            "same, small boxes from 0.3, 480 px copy": blazeface(
                blaze.SearchConfig(detect_side=480)
            ),
            "same, small boxes (< 32 px) from 0.3 (served)": blazeface(blaze.SearchConfig()),
        }
        total = sum(len(sample.faces) for sample in samples)
        print(f"{len(samples)} images 640x480, {total} faces; emotion on the same faces fed "
              f"directly: {direct:.1%}\n")  # fmt: skip
        print("| detector | recall >= 40 px | recall 24-40 px | false pos. / image | "
              "shipped photos: faces found, false pos. | ms / 640x480 (median) | ms / 1 MP | "
              "emotion end to end | emotion on found faces | "
              "misses: framed off, not found |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name, detect in detectors.items():
            row = evaluate(detect, samples, shipped, predictor)
            found_accuracy = row.correct_found / row.faces_found if row.faces_found else 0.0
            not_found = total - row.faces_found - row.framed_off
            print(
                f"| {name} | {_pct(row.found['40+'])} | {_pct(row.found['24-40'])} | "
                f"{row.false_positives / row.images:.2f} | {row.shipped_found}/1, "
                f"{row.shipped_false} | {statistics.median(row.ms):.1f} | "
                f"{megapixel_ms(detect):.1f} | {row.correct_end_to_end / total:.1%} | "
                f"{found_accuracy:.1%} | {row.framed_off}, {not_found} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
