"""What the machine computes fast: the compute precision ``precision="auto"`` resolves to."""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

logger = logging.getLogger(__name__)

#: x86 CPU flags (Linux ``/proc/cpuinfo`` names) of native bfloat16 arithmetic, which oneDNN
#: uses. Other CPUs (ARM's ``bf16`` is a "Features" entry) are left to float32 by ``auto``.
BFLOAT16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The feature flags of the first CPU in ``cpuinfo``.

    Args:
        cpuinfo: a file in the format of Linux's ``/proc/cpuinfo``.

    Returns:
        The flags, or an empty set where the file is missing or lists none (other systems).
    """
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def native_bfloat16(flags: Iterable[str]) -> bool:
    """Whether a CPU with these flags does bfloat16 arithmetic in hardware.

    Without it TensorFlow emulates bfloat16 and a ``mixed_bfloat16`` training step is far
    slower than a float32 one (see docs/model.md), so the
    choice matters more than any other training setting on a CPU.

    Args:
        flags: CPU feature flags (see :func:`cpu_flags`).

    Returns:
        True when AVX512_BF16 or AMX-BF16 is present.
    """
    return not BFLOAT16_FLAGS.isdisjoint(flags)


class GpuInfo(NamedTuple):
    """The first GPU the Keras backend sees."""

    name: str
    #: CUDA compute capability, e.g. ``(9, 0)`` for an H100/H200; None when unknown.
    compute_capability: tuple[int, int] | None

    @property
    def bfloat16(self) -> bool:
        """Whether it does bfloat16 arithmetic in hardware (Ampere, compute 8.0, and newer)."""
        return self.compute_capability is not None and self.compute_capability >= (8, 0)


def gpu_capability(value: object) -> tuple[int, int] | None:
    """``(major, minor)`` from a capability given as ``"9.0"``, ``(9, 0)`` or None."""
    if value is None:
        return None
    parts = value.split(".") if isinstance(value, str) else list(value)  # type: ignore[call-overload]
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except (ValueError, IndexError):
        return None


def gpu_info() -> GpuInfo | None:
    """The GPU the current Keras backend (TensorFlow, JAX or PyTorch) trains on, if any.

    Returns:
        Its name and compute capability, or None when the backend runs on the CPU.
    """
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        gpus = [device for device in jax.devices() if device.platform == "gpu"]
        if not gpus:
            return None
        return GpuInfo(
            gpus[0].device_kind, gpu_capability(getattr(gpus[0], "compute_capability", None))
        )
    if backend == "torch":
        import torch

        if not torch.cuda.is_available():
            return None
        return GpuInfo(torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            return None
        details = tf.config.experimental.get_device_details(gpus[0])
        return GpuInfo(
            details.get("device_name", gpus[0].name),
            gpu_capability(details.get("compute_capability")),
        )
    return None


def cpu_model(cpuinfo: Path = CPUINFO) -> str:
    """The CPU's model name from ``cpuinfo`` (Linux), or ``platform.processor()`` elsewhere."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def describe_hardware() -> str:
    """What training runs on, for lineage: the GPU, or the CPU with its core count and bf16.

    Returns:
        e.g. ``"NVIDIA H200 (compute 9.0)"`` or
        ``"Intel(R) Xeon(R) Processor, 2 cores, native bfloat16"``.
    """
    gpu = gpu_info()
    if gpu is not None:
        capability = gpu.compute_capability
        return gpu.name + (f" (compute {capability[0]}.{capability[1]})" if capability else "")
    native = "native bfloat16" if native_bfloat16(cpu_flags()) else "no native bfloat16"
    return f"{cpu_model()}, {os.cpu_count()} cores, {native}"


def resolve_precision(
    requested: str, gpu: bool, flags: Iterable[str], gpu_bfloat16: bool = False
) -> str:
    """The Keras dtype policy to train with.

    Args:
        requested: ``auto`` or a Keras dtype policy name (``float32``, ``mixed_bfloat16``,
            ``mixed_float16``).
        gpu: whether training runs on a GPU.
        flags: the CPU's feature flags.
        gpu_bfloat16: whether that GPU has bfloat16 arithmetic (:attr:`GpuInfo.bfloat16`).

    Returns:
        ``requested`` unless it is ``auto``; then on a GPU ``mixed_bfloat16`` where it has
        bfloat16 (no loss scaling needed) and ``mixed_float16`` otherwise; on a CPU
        ``mixed_bfloat16`` with native bfloat16, else ``float32``.
    """
    native = native_bfloat16(flags)
    if requested == "auto":
        if gpu:
            return "mixed_bfloat16" if gpu_bfloat16 else "mixed_float16"
        return "mixed_bfloat16" if native else "float32"
    if requested == "mixed_bfloat16" and not gpu and not native:
        logger.warning(
            "mixed_bfloat16 on a CPU without AVX512_BF16 or AMX-BF16 is emulated and trains "
            "several times slower than float32; set precision to auto or float32"
        )
    return requested
