"""What the machine computes fast: the compute precision ``precision="auto"`` resolves to."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

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
    slower than a float32 one (8x on a 2-core AVX2 machine, see the README), so the
    choice matters more than any other training setting on a CPU.

    Args:
        flags: CPU feature flags (see :func:`cpu_flags`).

    Returns:
        True when AVX512_BF16 or AMX-BF16 is present.
    """
    return not BFLOAT16_FLAGS.isdisjoint(flags)


def has_gpu() -> bool:
    """Whether the TensorFlow backend sees a GPU (False under other Keras backends)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def resolve_precision(requested: str, gpu: bool, flags: Iterable[str]) -> str:
    """The Keras dtype policy to train with.

    Args:
        requested: ``auto`` or a Keras dtype policy name (``float32``, ``mixed_bfloat16``,
            ``mixed_float16``).
        gpu: whether training runs on a GPU.
        flags: the CPU's feature flags.

    Returns:
        ``requested`` unless it is ``auto``; then ``mixed_float16`` on a GPU,
        ``mixed_bfloat16`` on a CPU with native bfloat16, else ``float32``.
    """
    native = native_bfloat16(flags)
    if requested == "auto":
        return "mixed_float16" if gpu else "mixed_bfloat16" if native else "float32"
    if requested == "mixed_bfloat16" and not gpu and not native:
        logger.warning(
            "mixed_bfloat16 on a CPU without AVX512_BF16 or AMX-BF16 is emulated and trains "
            "several times slower than float32; set precision to auto or float32"
        )
    return requested
