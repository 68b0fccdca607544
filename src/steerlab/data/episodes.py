"""What every dataset format shares: the in-memory :class:`EpisodeData`, :class:`DatasetError`, and the helpers
the zarr (:mod:`steerlab.data.zarr_io`) and LeRobot (:mod:`steerlab.data.lerobot_io`) writers both use."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class DatasetError(ValueError):
    """A dataset is missing or malformed; the message says what is wrong and how to fix it."""


@dataclass
class EpisodeData:
    """An episode dataset held in memory: ``data[key]`` is ``[T, ...]``; ``episode_ends`` is int64 ``[E]``."""

    data: dict[str, np.ndarray]
    episode_ends: np.ndarray
    attrs: dict = field(default_factory=dict)

    @property
    def n_episodes(self) -> int:
        return int(len(self.episode_ends))

    @property
    def n_steps(self) -> int:
        return int(self.episode_ends[-1]) if len(self.episode_ends) else 0

    def episode_slices(self) -> list[slice]:
        """``slice(start, end)`` of every episode along the time axis."""
        ends = [int(e) for e in self.episode_ends]
        return [slice(s, e) for s, e in zip([0, *ends[:-1]], ends)]

    def episode(self, i: int) -> dict[str, np.ndarray]:
        """The arrays of episode ``i`` (views)."""
        sl = self.episode_slices()[i]
        return {k: v[sl] for k, v in self.data.items()}


def jsonable(obj: Any) -> Any:
    """``obj`` with numpy arrays / scalars and paths turned into JSON types (dict keys as strings)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def concat_episodes(episodes: list[dict[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-episode ``{key: array [T_i, ...]}`` -> ``(arrays [T, ...] by key, cumulative episode ends)``, checked."""
    if not isinstance(episodes, (list, tuple)) or len(episodes) == 0:
        raise ValueError("episodes must be a non-empty list of dicts {key: array [T_i, ...]}")
    keys = list(episodes[0].keys())
    if not keys:
        raise ValueError("episode 0 has no arrays")
    for k in keys:
        if not isinstance(k, str) or not k or "/" in k or k.startswith("."):
            raise ValueError(f"invalid key {k!r}: keys must be non-empty strings without '/' or a leading '.'")
    lengths = []
    for i, ep in enumerate(episodes):
        if set(ep.keys()) != set(keys):
            raise ValueError(f"episode {i} has keys {sorted(ep)}, episode 0 has {sorted(keys)}; all episodes need the same keys")
        lens = {k: len(np.asarray(ep[k])) if np.ndim(ep[k]) > 0 else None for k in keys}
        if any(n is None for n in lens.values()) or len(set(lens.values())) != 1:
            raise ValueError(f"episode {i}: arrays must share their first (time) axis length, got {lens}")
        n = next(iter(lens.values()))
        if n == 0:
            raise ValueError(f"episode {i} is empty (length 0)")
        lengths.append(n)
    data = {}
    for k in keys:
        arrays = [np.asarray(ep[k]) for ep in episodes]
        shapes = {a.shape[1:] for a in arrays}
        if len(shapes) != 1:
            raise ValueError(f"key {k!r}: per-step shapes differ between episodes: {sorted(shapes)}")
        if arrays[0].dtype.kind not in "biuf":
            raise ValueError(f"key {k!r}: dtype {arrays[0].dtype} is not supported (use bool, int or float)")
        data[k] = np.concatenate(arrays, axis=0)
    return data, np.cumsum(lengths, dtype=np.int64)


def remove_path(path: str) -> None:
    """Delete a file, link or directory tree if it exists."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)
