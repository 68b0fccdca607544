"""Atomic checkpoints: ``checkpoints/step_<N>/`` with ``model.safetensors`` (policy weights and
normalizers), optional ``ema.safetensors``, ``trainer.pt`` (optimizer, schedule and RNG states for an exact
resume) and ``meta.json``. A checkpoint is written into a temporary directory and renamed into place, so
a killed run never leaves a half-written ``step_<N>``; old checkpoints are renamed away before they are deleted,
so a kill during clean-up never leaves a partly deleted one. ``meta.json`` records the SHA-256 of every file,
verified on load, so a corrupt file is named as such instead of surfacing later as NaN actions.
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

from steerlab.train.rundir import atomic_write_json, sha256_file


class CheckpointError(RuntimeError):
    pass


def cpu_tensors(state: dict) -> dict[str, torch.Tensor]:
    """A state dict as safetensors stores it: contiguous CPU copies that share no memory."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def save_checkpoint(run_dir: Path, step: int, model_state: dict, trainer_state: dict, meta: dict,
                    ema_state: dict | None = None, keep: int = 2) -> Path:
    ckpt_root = Path(run_dir) / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"step_{step:08d}"
    for left in ckpt_root.glob(".*-step_*"):  # left by a writer that was killed
        shutil.rmtree(left, ignore_errors=True)
    tmp = ckpt_root / f".tmp-step_{step:08d}-{os.getpid()}"
    tmp.mkdir()
    save_file(cpu_tensors(model_state), str(tmp / "model.safetensors"))
    if ema_state is not None:
        save_file(cpu_tensors(ema_state), str(tmp / "ema.safetensors"))
    torch.save(trainer_state, tmp / "trainer.pt")
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    atomic_write_json(tmp / "meta.json", {**meta, "step": step, "time": time.time(), "files": _file_records(tmp)})
    if final.exists():
        _discard(final)
    os.replace(tmp, final)
    _fsync_dir(ckpt_root)
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        _discard(old)
    return final


def _discard(ckpt: Path) -> None:
    """Delete a checkpoint directory: first renamed out of ``step_*`` (atomic), then removed."""
    trash = ckpt.with_name(f".trash-{ckpt.name}-{os.getpid()}")
    os.replace(ckpt, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.exists():
        return []
    return sorted(p for p in root.glob("step_*") if p.is_dir() and (p / "meta.json").exists())


def checkpoint_step(ckpt: Path) -> int | None:
    """The training step of a checkpoint directory ``step_<N>`` (None for a directory not named so, e.g. a
    saved policy)."""
    name = Path(ckpt).name
    return int(name.split("_")[-1]) if name.startswith("step_") else None


def latest_checkpoint(run_dir: Path) -> Path:
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        raise CheckpointError(f"no checkpoint in {Path(run_dir) / 'checkpoints'}: train the run first (steerlab train …)")
    return ckpts[-1]


def file_record(f: Path) -> dict:
    """``{"sha256", "bytes"}`` of file ``f``, as :func:`check_sha256` checks it."""
    return {"sha256": sha256_file(f), "bytes": f.stat().st_size}


def _file_records(d: Path) -> dict:
    return {f.name: file_record(f) for f in sorted(Path(d).iterdir()) if f.name != "meta.json" and f.is_file()}


def record_checksums(ckpt: Path) -> None:
    """Re-record the SHA-256 of a checkpoint's files in its ``meta.json``, after an intentional edit of them
    (weight surgery, a conversion); without it the edited file is reported as corrupt on load."""
    atomic_write_json(Path(ckpt) / "meta.json", {**load_meta(ckpt), "files": _file_records(ckpt)})


def verify_file(ckpt: Path, name: str) -> None:
    """Check ``<ckpt>/<name>`` against the SHA-256 recorded in the checkpoint's ``meta.json`` (a file with no
    recorded checksum is not checked)."""
    f = Path(ckpt) / name
    if not f.exists():
        raise CheckpointError(f"{f} is missing: the checkpoint {ckpt} is incomplete; delete it to fall back to an earlier one")
    check_sha256(f, load_meta(ckpt).get("files", {}).get(name),
                 f"delete {ckpt} to fall back to an earlier checkpoint, or restore the file")


def check_sha256(f: Path, record: dict | None, remedy: str) -> None:
    """Check file ``f`` against its ``{"sha256", "bytes"}`` record (None: nothing recorded, not checked); the
    error ends with ``remedy``, what the user can do about it."""
    if record is None:
        return
    digest = sha256_file(f)
    if digest != record["sha256"]:
        raise CheckpointError(
            f"{f} is corrupt: its SHA-256 {digest[:12]}... differs from the {record['sha256'][:12]}... recorded when it "
            f"was written ({f.stat().st_size} bytes now, {record['bytes']} then). The file was damaged on disk or in a "
            f"copy; {remedy}"
        )


def read_safetensors(f: Path, remedy: str) -> dict[str, torch.Tensor]:
    """The tensors of ``f``; a :class:`CheckpointError` naming the file and ``remedy`` if it cannot be read."""
    try:
        return load_file(str(f))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{f} is corrupt ({e}); {remedy}") from e


def load_weights(ckpt: Path, ema: bool = False) -> dict[str, torch.Tensor]:
    f = Path(ckpt) / ("ema.safetensors" if ema else "model.safetensors")
    verify_file(ckpt, f.name)
    return read_safetensors(f, f"delete {ckpt} to fall back to an earlier checkpoint")


def load_trainer_state(ckpt: Path) -> dict:
    f = Path(ckpt) / "trainer.pt"
    verify_file(ckpt, f.name)
    try:
        return torch.load(f, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises several types for a damaged pickle/zip
        raise CheckpointError(f"{f} is corrupt ({type(e).__name__}: {e}); delete {ckpt} to fall back to an earlier checkpoint") from e


def load_meta(ckpt: Path) -> dict:
    f = Path(ckpt) / "meta.json"
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{f} is unreadable ({e}); delete {ckpt} to fall back to an earlier checkpoint") from e
