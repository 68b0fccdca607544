"""The dataset formats steerlab writes: ``zarr`` (diffusion_policy's layout, :mod:`steerlab.data.zarr_io`) and
``lerobot`` (LeRobotDataset v3.0, :mod:`steerlab.data.lerobot_io`). Both are read by
:func:`steerlab.data.open_dataset`."""

from __future__ import annotations

import os

import numpy as np

DATASET_FORMATS = ("zarr", "lerobot")


def check_format(format: str) -> str:
    if format not in DATASET_FORMATS:
        raise ValueError(f"unknown dataset format {format!r}; use one of {list(DATASET_FORMATS)}")
    return format


def write_dataset(path: str | os.PathLike, episodes: list[dict[str, np.ndarray]], attrs: dict | None = None,
                  overwrite: bool = False, format: str = "zarr", fps: int = 10, task: str = "demonstration",
                  feature_names: dict | None = None) -> None:
    """Write ``episodes`` (each ``{key: array [T_i, ...]}``) in ``format``. ``fps``, ``task`` and
    ``feature_names`` go into a LeRobot dataset's metadata (a zarr store has no place for them)."""
    if check_format(format) == "lerobot":
        from steerlab.data.lerobot_io import write_lerobot_episodes

        write_lerobot_episodes(path, episodes, fps=fps, task=task, feature_names=feature_names, attrs=attrs,
                               overwrite=overwrite)
    else:
        from steerlab.data.zarr_io import write_episodes

        write_episodes(path, episodes, attrs=attrs, overwrite=overwrite)
