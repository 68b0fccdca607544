"""Atomic checkpoints: ``checkpoints/step_<N>/`` with ``model.safetensors`` (policy weights and
normalizers), optional ``ema.safetensors``, ``trainer.pt`` (optimizer, schedule and RNG states for an exact
resume) and ``meta.json``. A checkpoint is written into a temporary directory and renamed into place, so
a killed run never leaves a half-written ``step_<N>``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file


class CheckpointError(RuntimeError):
    pass


def _tensors(state: dict) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().clone() for k, v in state.items()}


def save_checkpoint(run_dir: Path, step: int, model_state: dict, trainer_state: dict, meta: dict,
                    ema_state: dict | None = None, keep: int = 2) -> Path:
    ckpt_root = Path(run_dir) / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"step_{step:08d}"
    tmp = ckpt_root / f".tmp-step_{step:08d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file(_tensors(model_state), str(tmp / "model.safetensors"))
    if ema_state is not None:
        save_file(_tensors(ema_state), str(tmp / "ema.safetensors"))
    torch.save(trainer_state, tmp / "trainer.pt")
    (tmp / "meta.json").write_text(json.dumps({**meta, "step": step, "time": time.time()}, indent=2))
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.exists():
        return []
    return sorted(p for p in root.glob("step_*") if p.is_dir() and (p / "meta.json").exists())


def latest_checkpoint(run_dir: Path) -> Path:
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        raise CheckpointError(f"no checkpoint in {Path(run_dir) / 'checkpoints'}: train the run first (steerlab train …)")
    return ckpts[-1]


def load_weights(ckpt: Path, ema: bool = False) -> dict[str, torch.Tensor]:
    f = Path(ckpt) / ("ema.safetensors" if ema else "model.safetensors")
    if not f.exists():
        raise CheckpointError(f"{f} is missing: the checkpoint {ckpt} is incomplete; delete it to fall back to an earlier one")
    try:
        return load_file(str(f))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{f} is corrupt ({e}); delete {ckpt} to fall back to an earlier checkpoint"
        ) from e


def load_trainer_state(ckpt: Path) -> dict:
    f = Path(ckpt) / "trainer.pt"
    if not f.exists():
        raise CheckpointError(f"{f} is missing: cannot resume from {ckpt}; delete it to fall back to an earlier one")
    try:
        return torch.load(f, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises several types for a damaged pickle/zip
        raise CheckpointError(f"{f} is corrupt ({type(e).__name__}: {e}); delete {ckpt} to fall back to an earlier checkpoint") from e


def load_meta(ckpt: Path) -> dict:
    return json.loads((Path(ckpt) / "meta.json").read_text())
