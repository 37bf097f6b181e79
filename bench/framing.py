"""Fit the detector's framing: where FER2013's own crop of a face lies, from its keypoints.

FER2013's files frame their faces unevenly (some tight, some with hair and chin), and a face
the detector found counts as found only when its crop overlaps the file's square with
IoU >= 0.5. This script pastes FER2013 *train* faces at known squares (bench/faceset.py),
runs the detector, pairs each face with the detection whose median-framed crop overlaps it
most (IoU >= 0.2), and fits :class:`serving.detector.Framing`'s weights by ridge regression:
the log of the square's side over the box's side, and the shift of its centre over the box's
side, from the keypoints' positions in the box. It then scores the fitted weights and the
median framing on the public-test benchmark set (bench/faces.py's, other faces, other seed).

    uv run --locked python bench/framing.py [--images 500] [--seed 21] [--ridge 0.01] \
        [--bench-seeds 7 11 3 99]

Prints the weights as the Python literal that ``serving/detector.py`` keeps, and a table.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from bench.faceset import Sample, generate, match
from serving import detector


def _found(samples: list[Sample]) -> list[detector.Detections]:
    return [detector.find(np.asarray(Image.open(s.image).convert("RGB"))) for s in samples]


def pairs(samples: list[Sample], found: list[detector.Detections]) -> tuple[np.ndarray, np.ndarray]:
    """Features and targets (log scale, shift x, shift y) of every face paired with a detection."""
    features, targets = [], []
    for sample, seen in zip(samples, found, strict=True):
        if not len(seen):
            continue
        crops = [tuple(crop) for crop in detector.MEDIAN_FRAMING.apply(seen)]
        for face, index in match([face.box for face in sample.faces], crops, 0.2).items():
            x, y, side, _ = sample.faces[face].box
            box = seen.boxes[index]
            box_side = max(box[2], box[3])
            centre = box[:2] + box[2:4] / 2
            targets.append(
                [
                    np.log(side / box_side),
                    (x + side / 2 - centre[0]) / box_side,
                    (y + side / 2 - centre[1]) / box_side,
                ]
            )
            features.append(detector.framing_features(box[None], seen.keypoints[index][None])[0])
    return np.array(features), np.array(targets)


def fit(features: np.ndarray, targets: np.ndarray, ridge: float) -> np.ndarray:
    """Least squares with an L2 penalty ``ridge`` (the features are of order 1)."""
    gram = features.T @ features + ridge * np.eye(features.shape[1])
    return np.linalg.solve(gram, features.T @ targets)


def score(
    samples: list[Sample], found: list[detector.Detections], framing: detector.Framing
) -> dict[str, float]:
    """Recall at IoU >= 0.5 by size, false positives per image, crops framed off (0.2-0.5)."""
    hit = {"40+": [0, 0], "24-40": [0, 0]}
    false_positives = framed_off = 0
    for sample, seen in zip(samples, found, strict=True):
        crops = [tuple(crop) for crop in framing.apply(seen)] if len(seen) else []
        truth = [face.box for face in sample.faces]
        matched = match(truth, crops)
        false_positives += len(crops) - len(matched)
        framed_off += len(set(match(truth, crops, 0.2)) - set(matched))
        for index, box in enumerate(truth):
            band = hit["24-40" if box[2] < 40 else "40+"]
            band[0] += index in matched
            band[1] += 1
    return {
        "recall 40+": hit["40+"][0] / hit["40+"][1],
        "recall 24-40": hit["24-40"][0] / hit["24-40"][1],
        "false positives / image": false_positives / len(samples),
        "framed off": framed_off,
    }


def main() -> None:
    """Fit on train faces, score on the benchmark's test faces, print weights and table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fer2013", type=Path, default=Path("../shared/fer2013"))
    parser.add_argument("--images", type=int, default=500, help="fitting images (train faces)")
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--ridge", type=float, default=0.01)
    parser.add_argument("--bench-images", type=int, default=100)
    parser.add_argument("--bench-seeds", type=int, nargs="+", default=[7])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fer-framing-") as folder:
        fitting = generate(
            args.fer2013, Path(folder) / "fit", args.images, args.seed, split="train"
        )
        features, targets = pairs(fitting, _found(fitting))
        weights = fit(features, targets, args.ridge)
        benches = {
            seed: generate(args.fer2013, Path(folder) / f"bench-{seed}", args.bench_images, seed)
            for seed in args.bench_seeds
        }
        found = {seed: _found(samples) for seed, samples in benches.items()}
    residual = (targets - features @ weights).std(axis=0)
    print(f"{len(features)} train faces paired; target std {np.round(targets.std(axis=0), 3)}, "
          f"residual std {np.round(residual, 3)} (log scale, shift x, shift y)\n")  # fmt: skip
    rows = ",\n".join(f"    ({a:.4f}, {b:.4f}, {c:.4f})" for a, b, c in weights)
    print(f"FRAMING_WEIGHTS = (\n{rows},\n)\n")
    fitted = detector.Framing(tuple(tuple(float(v) for v in row) for row in weights))
    print(f"benchmark sets: {args.bench_images} images of public-test faces each\n")
    print("| set | framing | recall >= 40 px | recall 24-40 px | false pos. / image | framed off |")
    print("|---|---|---|---|---|---|")
    named = {"median (one scale and shift)": detector.MEDIAN_FRAMING, "fitted here": fitted}
    if detector.FER_FRAMING not in named.values():
        named["served (serving/detector.py)"] = detector.FER_FRAMING
    for seed, samples in benches.items():
        for name, framing in named.items():
            got = score(samples, found[seed], framing)
            print(f"| seed {seed} | {name} | {got['recall 40+']:.1%} | {got['recall 24-40']:.1%} | "
                  f"{got['false positives / image']:.2f} | {got['framed off']} |")  # fmt: skip


if __name__ == "__main__":
    main()
