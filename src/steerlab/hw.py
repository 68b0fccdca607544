"""Facts about the hardware: CPU features that change which arithmetic is fast (read once, deterministic per
machine), and the device (``--device auto|cpu|cuda``) a command computes on."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch

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


def resolve_device(name: str = "cpu") -> torch.device:
    """``"auto"``: CUDA when a GPU is visible, else the CPU; ``"cpu"``/``"cuda"`` (or ``"cuda:1"``) as named. A
    CUDA device on a machine without one is a ``ValueError`` that says what to pass instead."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build of PyTorch" if torch.version.cuda is None else "no visible CUDA GPU"
        raise ValueError(f"--device {name} was requested but torch.cuda.is_available() is False ({build}); pass "
                         f"--device cpu, or --device auto to use a GPU only when there is one")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    return dev


def to_device(obj, device):
    """``obj`` with every tensor moved to ``device`` (dicts, lists and tuples recursively; other values as they are)."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def module_device(module) -> torch.device:
    """The device of a module's first parameter or buffer (the CPU for a module with neither, or a non-module)."""
    for tensors in (getattr(module, "parameters", None), getattr(module, "buffers", None)):
        for t in tensors() if tensors is not None else ():
            return t.device
    return torch.device("cpu")


def device_name(device: torch.device) -> str:
    """A readable name of the hardware behind ``device`` (the GPU's model for CUDA)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"
