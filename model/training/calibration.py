"""Trustworthy probabilities: expected calibration error and temperature scaling."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature``.

    Args:
        logits: N x K scores.
        temperature: divisor of the logits (> 0).

    Returns:
        N x K probabilities.
    """
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = 15
) -> float:
    """Expected calibration error of the top-1 prediction (equal-width confidence bins).

    The weighted mean, over bins of the predicted class's probability, of
    |accuracy - mean confidence| in the bin.

    Args:
        probabilities: N x K predicted probabilities.
        labels: N true label indices.
        bins: number of confidence bins on [0, 1].

    Returns:
        The ECE in [0, 1]; 0 for an empty input.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if len(probabilities) == 0:
        return 0.0
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(labels)
    # Bin i holds confidences in (edges[i], edges[i+1]]; a confidence of 0 goes to the first.
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            total += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(total)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of ``labels``.

    Args:
        logits: N x K validation logits (never test: this is model selection).
        labels: N true label indices.

    Returns:
        The temperature, searched on [0.05, 20] (1.0 when there is nothing to fit).
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    if len(logits) == 0:
        return 1.0

    def nll(log_t: float) -> float:
        p = softmax(logits, float(np.exp(log_t)))
        return float(-np.log(np.clip(p[np.arange(len(labels)), labels], 1e-12, None)).mean())

    result = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))
