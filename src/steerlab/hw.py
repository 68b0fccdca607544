"""Facts about the CPU that change which arithmetic is fast (read once, deterministic per machine)."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

#: /proc/cpuinfo flags of CPUs with native bfloat16 matrix arithmetic (x86: AVX512-BF16 or AMX; Arm: BF16).
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


@functools.lru_cache(maxsize=None)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags Linux reports (``flags`` on x86, ``Features`` on Arm); empty elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def native_bf16() -> bool:
    """True if the CPU multiplies bfloat16 matrices natively; without it PyTorch emulates bf16 and a bf16
    matrix product is many times *slower* than float32 (see benchmarks/chain_dtype.py). Conservative: AVX-512
    CPUs without the bf16 extension, where oneDNN's bf16 may be tolerable, get False too."""
    return platform.system() == "Linux" and any(f in cpu_flags() for f in BF16_FLAGS)
