"""Episode datasets in zarr, in diffusion_policy's ``ReplayBuffer`` layout::

    <root group>            attrs: JSON metadata (env id, n_dim, seed, ...)
      data/<key>            arrays, first axis = time, all keys the same length T
      meta/episode_ends     int64 [E], cumulative end index of each episode, last == T

Stores are written as zarr format 2 (readable by zarr 2.x, i.e. diffusion_policy) with zarr 3.x; both
format 2 and format 3 stores can be read.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np

from steerlab.data.episodes import DatasetError, EpisodeData, concat_episodes, jsonable, remove_path

DEFAULT_CHUNK_LEN = 4096


# ---------------------------------------------------------------------------------------------- writing
def write_episodes(path: str | os.PathLike, episodes: list[dict[str, np.ndarray]], attrs: dict | None = None,
                   chunk_len: int = DEFAULT_CHUNK_LEN, overwrite: bool = False) -> None:
    """Write ``episodes`` (each ``{key: array [T_i, ...]}``, same keys in all) to a zarr v2 store at ``path``.

    The store is built in ``path + ".tmp-<pid>"`` and moved into place with ``os.replace``, so readers
    never see a half-written dataset. ``attrs`` (JSON-serializable; numpy scalars/arrays are converted)
    go on the root group. Raises ``FileExistsError`` if ``path`` exists and ``overwrite`` is False.
    """
    import numcodecs
    import zarr

    path = os.path.normpath(os.fspath(path))
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (or --overwrite) to replace it")
    if int(chunk_len) < 1:
        raise ValueError(f"chunk_len must be >= 1, got {chunk_len!r}")
    data, episode_ends = concat_episodes(episodes)
    attrs = jsonable(dict(attrs or {}))
    try:
        json.dumps(attrs)
    except TypeError as e:
        raise ValueError(f"attrs must be JSON-serializable: {e}") from None

    tmp = f"{path}.tmp-{os.getpid()}"
    remove_path(tmp)  # a leftover from a crashed run with the same pid
    compressor = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
    try:
        root = zarr.open_group(tmp, mode="w", zarr_format=2)
        root.attrs.update(attrs)
        g_data = root.create_group("data")
        for k, arr in data.items():
            chunks = (min(int(chunk_len), len(arr)), *arr.shape[1:])
            z = g_data.create_array(k, shape=arr.shape, dtype=arr.dtype, chunks=chunks, compressors=compressor)
            z[...] = arr
        g_meta = root.create_group("meta")
        z = g_meta.create_array("episode_ends", shape=episode_ends.shape, dtype=np.int64,
                                chunks=episode_ends.shape, compressors=None)
        z[...] = episode_ends
        old = None
        if os.path.lexists(path):  # overwrite: move the old store aside, swap, then delete it
            old = f"{path}.old-{os.getpid()}"
            remove_path(old)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            remove_path(old)
    except BaseException:
        remove_path(tmp)
        raise


# ---------------------------------------------------------------------------------------------- reading
def load_episodes(path: str | os.PathLike, keys: Sequence[str] | None = None) -> EpisodeData:
    """Load ``data/<key>`` arrays (all keys if ``keys`` is None) and ``meta/episode_ends`` into memory.

    A LeRobotDataset v3 directory (``meta/info.json``) is read by :func:`steerlab.data.lerobot_io.read_lerobot`
    instead, with the same keys (``obs``, ``action``, ...).

    Reads zarr format 2 and 3 stores. Raises :class:`DatasetError` with a fix-it message when the path is
    missing or not a zarr group, ``meta/episode_ends`` is missing or not strictly increasing, a requested
    key is missing, an array's length differs from ``episode_ends[-1]``, or a float array holds NaN/inf.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DatasetError(f"dataset {path} does not exist; collect one first (e.g. `steerlab collect particle`)")
    from steerlab.data import lerobot_io

    if lerobot_io.is_lerobot_dir(path) or lerobot_io.looks_like_lerobot(path):  # a LeRobotDataset v3 directory
        return lerobot_io.read_lerobot(path, keys)
    import zarr

    try:
        root = zarr.open_group(path, mode="r")
    except Exception as e:  # noqa: BLE001 - zarr raises several types here
        raise DatasetError(
            f"{path} is not a zarr group ({type(e).__name__}); expected a diffusion_policy-style store "
            "with data/<key> arrays and meta/episode_ends"
        ) from None

    # episode_ends
    try:
        ends_arr = root["meta/episode_ends"]
    except KeyError:
        ends_arr = None
    if ends_arr is None or not hasattr(ends_arr, "shape"):
        raise DatasetError(
            f"{path} has no meta/episode_ends array; a diffusion_policy-style store needs meta/episode_ends "
            "(int, cumulative end index of each episode); rewrite it with steerlab.data.zarr_io.write_episodes"
        )
    episode_ends = np.asarray(ends_arr[...])
    if episode_ends.ndim != 1 or episode_ends.dtype.kind not in "iu":
        raise DatasetError(
            f"{path}: meta/episode_ends must be a 1-D integer array, got shape {episode_ends.shape} dtype {episode_ends.dtype}"
        )
    episode_ends = episode_ends.astype(np.int64)
    if len(episode_ends) == 0:
        raise DatasetError(f"{path}: meta/episode_ends is empty; the dataset holds no episodes")
    steps = np.diff(np.concatenate([[0], episode_ends]))
    if (steps <= 0).any():
        i = int(np.flatnonzero(steps <= 0)[0])
        prev = int(episode_ends[i - 1]) if i > 0 else 0
        raise DatasetError(
            f"{path}: meta/episode_ends must be strictly increasing and positive (cumulative episode ends), "
            f"but episode_ends[{i}] = {int(episode_ends[i])} after {prev}; fix or rewrite meta/episode_ends"
        )
    total = int(episode_ends[-1])

    # data arrays
    try:
        g_data = root["data"]
        available = sorted(g_data.array_keys())
    except (KeyError, AttributeError):
        raise DatasetError(f"{path} has no data group; expected data/<key> arrays (diffusion_policy layout)") from None
    keys = available if keys is None else list(keys)
    missing = [k for k in keys if k not in available]
    if missing:
        raise DatasetError(f"{path}: key(s) {missing} not in data/; available keys: {available}")

    data = {}
    for k in keys:
        z = g_data[k]
        if len(z.shape) == 0 or z.shape[0] != total:
            raise DatasetError(
                f"{path}: data/{k} has length {z.shape[0] if len(z.shape) else 'scalar'} but meta/episode_ends[-1] = "
                f"{total}; every data array needs one row per step (episode_ends must match the data)"
            )
        arr = np.asarray(z[...])
        if arr.dtype.kind in "fc":
            bad = ~np.isfinite(arr)
            n_bad = int(bad.sum())
            if n_bad:
                first = tuple(int(i) for i in np.argwhere(bad)[0])
                ep = int(np.searchsorted(episode_ends, first[0], side="right"))
                raise DatasetError(
                    f"{path}: data/{k} has {n_bad} non-finite value(s) (NaN or inf); first at index {first} "
                    f"(episode {ep}); clean or re-collect the data"
                )
        data[k] = arr
    return EpisodeData(data=data, episode_ends=episode_ends, attrs=dict(root.attrs))


def split_episodes(data: EpisodeData, val_episodes: int) -> tuple[EpisodeData, EpisodeData | None]:
    """``(train, val)``: the last ``val_episodes`` episodes held out (``val`` None when 0), the training loop's
    ``--val-episodes`` split for every task."""
    if val_episodes <= 0:
        return data, None
    ends = np.asarray(data.episode_ends)
    if val_episodes >= len(ends):
        raise ValueError(f"val_episodes={val_episodes} leaves no training episodes (the dataset has {len(ends)})")
    cut = int(ends[-val_episodes - 1])
    train = EpisodeData({k: v[:cut] for k, v in data.data.items()}, ends[:-val_episodes], dict(data.attrs))
    val = EpisodeData({k: v[cut:] for k, v in data.data.items()}, ends[-val_episodes:] - cut, dict(data.attrs))
    return train, val
