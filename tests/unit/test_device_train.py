"""The device run's helpers: config overrides, the FLOP count and the throughput figures."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pydantic
import pytest

pytestmark = pytest.mark.unit

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "device_train.py"


@pytest.fixture(scope="module")
def device_train() -> object:
    spec = importlib.util.spec_from_file_location("device_train", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_overrides_are_laid_over_the_profile_and_validated(device_train: object) -> None:
    config = device_train.build_config("gpu", {"epochs": 2, "network": {"filters": [8]}}, 1.5)
    assert config.epochs == 2 and config.network.filters == (8,)
    assert config.network.dense_units == 512  # the rest of the profile's network stays
    assert config.time_budget_minutes == 1.5 and config.batch_size == 512
    with pytest.raises(pydantic.ValidationError):
        device_train.build_config("gpu", {"network": {"filterz": [8]}}, None)


def test_forward_flops_count_each_multiply_add_twice(device_train: object) -> None:
    from model.training.network import AugmentConfig, NetworkConfig, build_model

    network = NetworkConfig(
        filters=(8,), convs_per_block=1, head="gap", dense_units=16, conv_dropout=0,
        augment=AugmentConfig.off(),
    )  # fmt: skip
    model = build_model(network, (48, 48, 1), 7)
    conv = 48 * 48 * 3 * 3 * 1 * 8
    assert device_train.forward_flops(model) == 2 * (conv + 8 * 16 + 16 * 7)


def test_throughput_leaves_out_the_compiling_epoch(device_train: object) -> None:
    history = {"epoch_seconds": [60.0, 2.0, 1.0, 3.0]}
    figures = device_train.throughput(history, 20_000, 1e9, 800.0)
    assert figures["median_epoch_seconds"] == 2.0 and figures["images_per_second"] == 10_000
    assert figures["training_tflops"] == pytest.approx(3e9 * 10_000 / 1e12)
    assert figures["fraction_of_peak"] == pytest.approx(30 / 800)
    assert device_train.throughput({}, 1, 1.0, None) == {}
    assert device_train.throughput(history, 20_000, 1e9, None)["fraction_of_peak"] is None
