"""Datasets: zarr episode I/O (``zarr_io``), LeRobotDataset v3 I/O (``lerobot_io``), oracle collection
(``collect``), training windows and normalizers. Submodules are imported explicitly; nothing heavy is imported
here."""

from __future__ import annotations


def open_dataset(path, keys=None):
    """Load a diffusion_policy zarr store or a LeRobotDataset v3 directory into an
    :class:`~steerlab.data.zarr_io.EpisodeData`: arrays by steerlab key (``obs``, ``action``, ...; all keys when
    ``keys`` is None) and the episode ends. A :class:`~steerlab.data.zarr_io.DatasetError` says what to fix when
    the dataset is missing or malformed."""
    from steerlab.data.zarr_io import load_episodes

    return load_episodes(path, keys)
