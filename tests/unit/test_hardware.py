from __future__ import annotations

import logging
from pathlib import Path

import pytest

from model.training.config import TrainConfig
from model.training.hardware import cpu_flags, native_bfloat16, resolve_precision

pytestmark = pytest.mark.unit

# The first lines of /proc/cpuinfo on a 2-core AVX2 machine (flags shortened).
CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx avx2 fma
bogomips\t: 4890.85

processor\t: 1
flags\t\t: fpu sse2 avx avx2 fma avx512_bf16
"""


def test_cpu_flags_reads_the_first_cpus_flags(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO)
    assert cpu_flags(cpuinfo) == {"fpu", "sse2", "avx", "avx2", "fma"}
    assert cpu_flags(tmp_path / "missing") == frozenset()
    (tmp_path / "empty").write_text("processor\t: 0\n")
    assert cpu_flags(tmp_path / "empty") == frozenset()


def test_native_bfloat16_needs_avx512_bf16_or_amx() -> None:
    assert not native_bfloat16({"avx", "avx2", "avx512f", "avx512_vnni"})
    assert native_bfloat16({"avx2", "avx512f", "avx512_bf16"})
    assert native_bfloat16({"amx_bf16", "amx_tile"})
    assert not native_bfloat16(frozenset())


def test_auto_precision_follows_the_hardware() -> None:
    assert resolve_precision("auto", gpu=True, flags={"avx2"}) == "mixed_float16"
    # A GPU with bfloat16 (Ampere and newer: H100, H200) needs no loss scaling.
    assert resolve_precision("auto", gpu=True, flags=set(), gpu_bfloat16=True) == "mixed_bfloat16"
    assert resolve_precision("auto", gpu=False, flags={"avx512_bf16"}) == "mixed_bfloat16"
    assert resolve_precision("auto", gpu=False, flags={"avx2"}) == "float32"
    # An explicit choice is kept.
    assert resolve_precision("float32", gpu=True, flags={"amx_bf16"}) == "float32"
    assert resolve_precision("mixed_float16", gpu=False, flags=set()) == "mixed_float16"


def test_emulated_bfloat16_is_kept_but_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="model.training.hardware"):
        assert resolve_precision("mixed_bfloat16", gpu=False, flags={"avx2"}) == "mixed_bfloat16"
    assert "emulated" in caplog.text and "precision to auto or float32" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="model.training.hardware"):
        resolve_precision("mixed_bfloat16", gpu=False, flags={"avx512_bf16"})
    assert caplog.text == ""


def test_the_profiles_pick_their_precision_from_the_hardware() -> None:
    # bfloat16 on a CPU or GPU that has it; float32 (CPU) or float16 (older GPU) otherwise.
    assert TrainConfig.profile("cpu").precision == "auto"
    assert TrainConfig.profile("gpu").precision == "auto"


def test_gpu_bfloat16_follows_the_compute_capability() -> None:
    from model.training.hardware import GpuInfo, gpu_capability

    assert gpu_capability("9.0") == (9, 0) and gpu_capability((8, 6)) == (8, 6)
    assert gpu_capability(None) is None and gpu_capability("sm") is None
    assert GpuInfo("NVIDIA H200", (9, 0)).bfloat16
    assert not GpuInfo("Tesla T4", (7, 5)).bfloat16
    assert not GpuInfo("unknown", None).bfloat16


def test_hardware_is_described_for_lineage(tmp_path: Path) -> None:
    from model.training.hardware import cpu_model, describe_hardware

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO)
    assert cpu_model(cpuinfo) == "AMD EPYC"
    # This machine has no GPU: the CPU, its cores and whether it has native bfloat16.
    described = describe_hardware()
    assert "cores" in described and "bfloat16" in described
