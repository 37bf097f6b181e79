"""The GPU path's backend on the CPU: under JAX the training step is one XLA program.

Keras picks its backend once per process, so the checks run in a child process with
``KERAS_BACKEND=jax`` and report back as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]

PROBE = r"""
import json, logging
import numpy as np, jax, keras
from model.contract import CLASSES
from model.errors import ConfigError
from model.inference.layers import RandomAffine
from model.training.network import build_model
from model.training.config import TrainConfig
from model.training.fit import require_jit

compiled = []
class Compiles(logging.Handler):
    def emit(self, record):
        compiled.append(record.getMessage())
logging.getLogger("jax").addHandler(Compiles())
logging.getLogger("jax").setLevel(logging.DEBUG)
jax.config.update("jax_log_compiles", True)

rng = np.random.default_rng(0)
x = rng.integers(0, 256, (16, 48, 48, 1)).astype("float32")
y = np.eye(len(CLASSES))[np.arange(16) % len(CLASSES)]

def train_step_compiles(model):
    start = len(compiled)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    return sum("Compiling jit(train_step)" in line for line in compiled[start:])

report = {"backend": keras.backend.backend()}
# The gpu profile's network (narrowed: the layers are what matters) as fit_model compiles it.
gpu = TrainConfig.profile("gpu")
network = gpu.network.model_copy(update={"filters": (8, 16), "dense_units": 16})
model = build_model(network, (48, 48, 1), len(CLASSES))
model.compile(optimizer="sgd", loss="categorical_crossentropy",
              steps_per_execution=gpu.steps_per_execution)
require_jit(model)
report["gpu_jit_compile"] = model.jit_compile
report["gpu_train_step_compiles"] = train_step_compiles(model)

# Control: one Keras RandomRotation switches XLA off for the whole model.
blocked = keras.Sequential([keras.Input((48, 48, 1)), keras.layers.RandomRotation(0.1, name="rot"),
                            keras.layers.Flatten(), keras.layers.Dense(len(CLASSES))])
blocked.compile(optimizer="sgd", loss="categorical_crossentropy")
report["blocked_jit_compile"] = blocked.jit_compile
report["blocked_train_step_compiles"] = train_step_compiles(blocked)
try:
    require_jit(blocked)
    report["require_jit_error"] = None
except ConfigError as error:
    report["require_jit_error"] = str(error)

# The augmentation still varies images under JAX (it is not an identity). Run eagerly, each op
# is compiled on its own: logging all those compiles took most of this probe's time.
jax.config.update("jax_log_compiles", False)
logging.getLogger("jax").setLevel(logging.WARNING)
layer = RandomAffine(rotate_degrees=15, zoom=0.15, translate=0.1, seed=3)
first, second = np.asarray(layer(x, training=True)), np.asarray(layer(x, training=True))
report["affine_change"] = float(np.abs(first - x).mean())
report["affine_redraw"] = float(np.abs(first - second).mean())
report["affine_inference_change"] = float(np.abs(np.asarray(layer(x, training=False)) - x).max())
print("REPORT " + json.dumps(report))
"""


@pytest.fixture(scope="module")
def jax_report() -> dict:
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("REPORT "))


def test_the_gpu_profiles_training_step_is_one_jitted_program(jax_report: dict) -> None:
    assert jax_report["backend"] == "jax"
    assert jax_report["gpu_jit_compile"] is True
    assert jax_report["gpu_train_step_compiles"] >= 1


def test_a_layer_without_jit_support_is_caught(jax_report: dict) -> None:
    # What the check guards against: Keras turns jit off and compiles no training step.
    assert jax_report["blocked_jit_compile"] is False
    assert jax_report["blocked_train_step_compiles"] == 0
    error = jax_report["require_jit_error"]
    assert error and "rot (RandomRotation)" in error and "RandomAffine" in error


def test_augmentation_varies_images_under_jax(jax_report: dict) -> None:
    assert jax_report["affine_change"] > 5
    assert jax_report["affine_redraw"] > 5
    assert jax_report["affine_inference_change"] == 0
