"""Warm start: a nightly run begins from the champion's weights when it has the same network.

Each warm-started version records its parent, so the manifests chain back to the last run
that started from scratch. What decides is deliberately narrow: the champion's recorded
network shape must equal this run's (augmentation aside, which has no weights), and its
weights must then fit the fresh network one for one. Anything else (no champion, another
network, a model that cannot be downloaded or read) trains from scratch and says why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.training.network import NetworkConfig, network_inside

if TYPE_CHECKING:
    import keras


logger = logging.getLogger(__name__)

#: Network fields that do not change the weights: a champion differing only in these fits.
_WEIGHTLESS_FIELDS = frozenset(
    {"augment", "fused_batch_norm", "batch_norm_momentum", "conv_dropout", "dense_dropout"}
)


@dataclass(frozen=True)
class Parent:
    """The champion a run starts from: its version and its verified local model file."""

    version: str
    model_path: Path


@dataclass(frozen=True)
class WarmStart:
    """What a run started from: a parent version, or None and the reason it started fresh."""

    parent: str | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        """As recorded in the manifest (``training.warm_start``)."""
        return {"parent": self.parent, "reason": self.reason}


def network_difference(mine: NetworkConfig, theirs: dict[str, Any]) -> str:
    """How a recorded network differs from ``mine`` in the fields that shape its weights.

    Args:
        mine: this run's network.
        theirs: another run's ``train_config.network`` as recorded in its manifest.

    Returns:
        ``""`` when the weights have the same shapes and meaning; else the differing fields,
        e.g. ``"filters (32, 64, 128, 256) here, [16, 32, 64, 128] there"``.
    """
    here = mine.model_dump(mode="json")
    differences = [
        f"{field} {here[field]!r} here, {theirs.get(field)!r} there"
        for field in sorted(here)
        if field not in _WEIGHTLESS_FIELDS and here[field] != theirs.get(field)
    ]
    return "; ".join(differences)


def start_from(model: keras.Model, parent: Parent | None, reason: str = "") -> WarmStart:
    """Load ``parent``'s network weights into ``model`` when they fit; say what happened.

    Args:
        model: a freshly built network (from :func:`model.training.network.build_model`).
        parent: the champion to start from, or None.
        reason: why there is no parent (when ``parent`` is None).

    Returns:
        The parent's version, or None and the reason (also logged) the run starts fresh.
    """
    if parent is None:
        logger.info("warm start: training from scratch because %s", reason)
        return WarmStart(None, reason)
    from model.inference.predictor import load_keras_model

    try:
        weights = network_inside(load_keras_model(parent.model_path)).get_weights()
    except Exception as error:  # any unreadable file: a fresh start, never a failed run
        why = f"champion {parent.version}'s model could not be read ({error})"
        logger.warning("warm start: training from scratch because %s", why)
        return WarmStart(None, why)
    shapes = [tuple(w.shape) for w in model.get_weights()]
    if shapes != [tuple(w.shape) for w in weights]:
        why = f"champion {parent.version}'s weights do not fit this network"
        logger.warning("warm start: training from scratch because %s", why)
        return WarmStart(None, why)
    model.set_weights(weights)
    logger.info("warm start: training from champion %s's weights", parent.version)
    return WarmStart(parent.version, f"started from champion {parent.version}")
