"""LeRobotDataset v3.0 directories, read and written with pyarrow (the ``lerobot`` package is not needed)::

    <root>/
      meta/info.json                             codebase_version "v3.0", fps, features {name: {dtype, shape,
                                                 names}}, totals, chunks_size, file size limits, path templates
      meta/stats.json                            per feature: min, max, mean, std, count, q01, q10, q50, q90, q99
      meta/tasks.parquet                         task (the pandas index) -> task_index
      meta/episodes/chunk-XXX/file-XXX.parquet   one row per episode: episode_index, tasks, length,
                                                 data/chunk_index, data/file_index, dataset_from_index,
                                                 dataset_to_index, stats/<feature>/<stat>,
                                                 meta/episodes/chunk_index, meta/episodes/file_index
      data/chunk-XXX/file-XXX.parquet            one row per frame: the features, then timestamp (float32),
                                                 frame_index, episode_index, index, task_index (int64)
      meta/steerlab.json                         steerlab's own: its key names, 1-D keys, dataset attrs

Column types are those the ``datasets`` library gives LeRobot's features: a per-step shape ``(1,)`` is a
scalar column, ``(N,)`` a ``fixed_size_list<dtype>[N]`` column, 2 to 5 axes nested lists tagged as
``datasets`` ``Array2D`` .. ``Array5D``; every data file carries the ``huggingface`` schema metadata. Episodes
never span files: a data file is closed once it would grow past ``data_files_size_in_mb``, and a chunk
directory holds at most ``chunks_size`` files.

steerlab keys map to LeRobot names: ``obs`` -> ``observation.state``, ``action`` -> ``action``, a key with a
dot keeps its name and any other key ``k`` -> ``observation.k``; reading maps them back (through
``meta/steerlab.json`` when present, else by the same rule), so training code sees ``obs`` and ``action``.
Image and video features of other LeRobot datasets are listed but not decoded.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from steerlab.data.episodes import DatasetError, EpisodeData, concat_episodes, jsonable, remove_path

CODEBASE_VERSION = "v3.0"
DEFAULT_CHUNK_SIZE = 1000  # files per chunk directory
DEFAULT_DATA_FILE_SIZE_IN_MB = 100
DEFAULT_VIDEO_FILE_SIZE_IN_MB = 200
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
STEERLAB_PATH = "meta/steerlab.json"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
EPISODES_PATH = EPISODES_DIR + "/" + CHUNK_FILE + ".parquet"
# The per-frame columns LeRobot adds after the features, in this order.
INDEX_FEATURES = {"timestamp": "float32", "frame_index": "int64", "episode_index": "int64", "index": "int64",
                  "task_index": "int64"}
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
QUANTILE_BINS = 5000
STAT_KEYS = ("min", "max", "mean", "std", "count") + tuple(f"q{round(q * 100):02d}" for q in QUANTILES)
_EPISODE_ROWS_PER_GROUP = 10  # LeRobot flushes its episode metadata in groups of this many rows
_MB = 1024 ** 2
_NOT_ARRAYS = ("image", "video", "string", "language")


# ---------------------------------------------------------------------------------------------- names
def lerobot_name(key: str) -> str:
    """The LeRobot feature name of a steerlab key."""
    if key == "obs":
        return "observation.state"
    if key == "action" or "." in key:
        return key
    return f"observation.{key}"


def steerlab_key(name: str) -> str:
    """The steerlab key of a LeRobot feature name (the inverse of :func:`lerobot_name`)."""
    if name == "observation.state":
        return "obs"
    rest = name.removeprefix("observation.")
    if rest != name and rest and "." not in rest:
        return rest
    return name


def is_lerobot_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` is a directory with ``meta/info.json`` (a LeRobot dataset)."""
    return os.path.isfile(os.path.join(os.fspath(path), INFO_PATH))


def looks_like_lerobot(path: str | os.PathLike) -> bool:
    """True when ``path`` has LeRobot parts (``meta/episodes``, ``meta/tasks.parquet`` or ``data/*/*.parquet``)."""
    p = os.fspath(path)
    if os.path.isdir(os.path.join(p, EPISODES_DIR)) or os.path.isfile(os.path.join(p, TASKS_PATH)):
        return True
    return bool(_parquet_files(os.path.join(p, "data")))


def _parquet_files(directory: str) -> list[str]:
    """``directory/*/*.parquet`` sorted (the order LeRobot concatenates them in)."""
    if not os.path.isdir(directory):
        return []
    out = []
    for sub in sorted(os.listdir(directory)):
        d = os.path.join(directory, sub)
        if os.path.isdir(d):
            out += [os.path.join(d, f) for f in sorted(os.listdir(d)) if f.endswith(".parquet")]
    return out


def next_file(chunk_index: int, file_index: int, chunks_size: int) -> tuple[int, int]:
    """The ``(chunk, file)`` after ``(chunk_index, file_index)``: the next file, or file 0 of the next chunk
    once a chunk holds ``chunks_size`` files."""
    if file_index == chunks_size - 1:
        return chunk_index + 1, 0
    return chunk_index, file_index + 1


# ---------------------------------------------------------------------------------------------- statistics
def _quantiles(hist: np.ndarray, edges: np.ndarray, targets: np.ndarray) -> list:
    """For each target count, the value below which that many counts of the histogram lie (linear within a
    bin; the first or last edge outside the histogram's range)."""
    cum = np.cumsum(hist)
    out = []
    for target, i in zip(targets, np.searchsorted(cum, targets)):
        if i == 0:
            out.append(edges[0])
        elif i >= len(cum):
            out.append(edges[-1])
        elif cum[i] == cum[i - 1]:
            out.append(edges[i])
        else:
            out.append(edges[i] + (target - cum[i - 1]) / (cum[i] - cum[i - 1]) * (edges[i + 1] - edges[i]))
    return out


def feature_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """Statistics of one episode's ``[T, ...]`` array as LeRobot's ``compute_episode_stats`` gives them.

    Reduced over every axis but the last (a ``[T]`` array counts as ``[T, 1]``): min, max, mean, std (from the
    mean of squares), count ``[T]`` and the quantiles of :data:`QUANTILES`, estimated from a
    :data:`QUANTILE_BINS`-bin histogram per component between its min and max. With fewer than two rows the
    quantiles are the mean.
    """
    values = np.asarray(values)
    flat = values.reshape(-1, 1) if values.ndim == 1 else values.reshape(-1, values.shape[-1])
    count = np.array([len(values)])
    qkeys = STAT_KEYS[5:]
    if len(values) < 2:
        stats = {"min": np.min(flat, axis=0), "max": np.max(flat, axis=0), "mean": np.mean(flat, axis=0),
                 "std": np.std(flat, axis=0), "count": count}
        stats.update({k: stats["mean"].copy() for k in qkeys})
        return stats
    x = flat.astype(np.result_type(flat.dtype, np.float32), copy=False)
    mean = np.mean(x, axis=0)
    mean_sq = np.mean(x ** 2, axis=0)
    lo, hi = np.min(x, axis=0), np.max(x, axis=0)
    stats = {"min": lo.copy(), "max": hi.copy(), "mean": mean.copy(),
             "std": np.sqrt(np.maximum(0, mean_sq - mean ** 2)), "count": count}
    targets = np.array([q * len(x) for q in QUANTILES])
    per_dim = []
    for j in range(x.shape[1]):
        e = np.linspace(lo[j] - 1e-10, hi[j] + 1e-10, QUANTILE_BINS + 1)
        per_dim.append(_quantiles(np.histogram(x[:, j], bins=e)[0].astype(np.float64), e, targets))
    for i, key in enumerate(qkeys):
        stats[key] = np.array([qs[i] for qs in per_dim])
    return stats


def merge_stats(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The statistics of two parts together, as LeRobot's ``aggregate_stats`` merges them: min of the mins,
    max of the maxes, the count-weighted mean, the pooled variance, and for each quantile the lower envelope
    (q <= 50) or the upper one (q > 50) of the parts' estimates."""
    parts = (a, b)
    counts = np.stack([s["count"] for s in parts])
    total = counts.sum(axis=0)
    means = np.stack([s["mean"] for s in parts])
    var = np.stack([s["std"] ** 2 for s in parts])
    w = counts
    while w.ndim < means.ndim:
        w = np.expand_dims(w, -1)
    mean = (means * w).sum(axis=0) / total
    pooled = ((var + (means - mean) ** 2) * w).sum(axis=0) / total
    out = {"min": np.min(np.stack([s["min"] for s in parts]), axis=0),
           "max": np.max(np.stack([s["max"] for s in parts]), axis=0),
           "mean": mean, "std": np.sqrt(pooled), "count": total}
    for key in STAT_KEYS[5:]:
        if key in a and key in b:
            qs = np.stack([a[key], b[key]])
            out[key] = np.min(qs, axis=0) if int(key[1:]) <= 50 else np.max(qs, axis=0)
    return out


def dataset_stats(per_episode: list[dict[str, dict[str, np.ndarray]]]) -> dict[str, dict[str, np.ndarray]]:
    """The dataset's statistics: the episodes' merged one after the other (as LeRobot does while recording)."""
    total = dict(per_episode[0])
    for ep in per_episode[1:]:
        total = {name: merge_stats(total[name], ep[name]) for name in total}
    return total


def _stats_lists(stats: dict[str, dict[str, np.ndarray]]) -> dict:
    return {name: {k: np.asarray(v).tolist() for k, v in s.items()} for name, s in stats.items()}


# ---------------------------------------------------------------------------------------------- arrow columns
def _hf_feature(dtype: str, shape: Sequence[int]) -> dict:
    """The ``datasets`` feature LeRobot declares for a feature (what the ``huggingface`` schema metadata holds)."""
    shape = list(shape)
    if shape == [1]:
        return {"dtype": dtype, "_type": "Value"}
    if len(shape) == 1:
        return {"feature": {"dtype": dtype, "_type": "Value"}, "length": shape[0], "_type": "List"}
    return {"shape": shape, "dtype": dtype, "_type": f"Array{len(shape)}D"}


def _arrow_field(name: str, dtype: str, shape: Sequence[int]):
    import pyarrow as pa

    value = pa.from_numpy_dtype(np.dtype(dtype))
    shape = list(shape)
    if shape == [1]:
        return pa.field(name, value)
    if len(shape) == 1:
        return pa.field(name, pa.list_(value, shape[0]))
    t = value
    for _ in shape:
        t = pa.list_(t)
    meta = {"ARROW:extension:name": f"datasets.features.features.Array{len(shape)}DExtensionType",
            "ARROW:extension:metadata": json.dumps([shape, dtype])}
    return pa.field(name, t, metadata=meta)


def _arrow_column(arr: np.ndarray, field):
    """``arr [T, ...]`` as the arrow array of ``field``."""
    import pyarrow as pa

    t = field.type
    if not pa.types.is_list(t) and not pa.types.is_fixed_size_list(t):
        return pa.array(arr.reshape(len(arr)), type=t)
    if pa.types.is_fixed_size_list(t):
        return pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1)), t.list_size)
    out = pa.array(arr.reshape(-1))
    for n in reversed(arr.shape[1:]):
        offsets = pa.array(np.arange(0, len(out) + 1, n, dtype=np.int32))
        out = pa.ListArray.from_arrays(offsets, out)
    return out


def _column_values(col, name: str, dtype: str, shape: Sequence[int], where: str) -> np.ndarray:
    """A parquet column as a numpy ``[T, *shape]`` array; a :class:`DatasetError` when its layout differs."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if isinstance(arr, pa.ExtensionArray):
        arr = arr.storage
    n_rows = len(arr)
    shape = [int(s) for s in shape]
    if arr.null_count:
        raise DatasetError(f"{where}: column {name!r} has {arr.null_count} null value(s); every frame needs a value")
    if shape != [1] or not (pa.types.is_primitive(arr.type) or pa.types.is_boolean(arr.type)):
        for axis, n in enumerate(shape):
            if pa.types.is_fixed_size_list(arr.type):
                size_ok = arr.type.list_size == n
            elif pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
                lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
                size_ok = bool((lengths == n).all())
            else:
                size_ok = False
            if not size_ok:
                raise DatasetError(
                    f"{where}: column {name!r} has type {col.type}, but meta/info.json declares shape {shape} "
                    f"(axis {axis} should hold {n} values per frame); fix the feature's shape in meta/info.json "
                    "or rewrite the data with steerlab.data.lerobot_io.write_lerobot")
            if arr.null_count:
                raise DatasetError(f"{where}: column {name!r} has null values inside its lists")
            arr = arr.flatten()
    if pa.types.is_list(arr.type) or pa.types.is_fixed_size_list(arr.type) or pa.types.is_struct(arr.type):
        raise DatasetError(f"{where}: column {name!r} has type {col.type}, more axes than the shape {shape} "
                           "declared in meta/info.json")
    values = arr.to_numpy(zero_copy_only=False)
    try:
        target = np.dtype(dtype)
    except TypeError:
        raise DatasetError(f"{where}: feature {name!r} has dtype {dtype!r}, not a numeric dtype") from None
    if values.dtype != target:
        if values.dtype.kind not in "biuf":
            raise DatasetError(f"{where}: column {name!r} holds {values.dtype} values, meta/info.json says {dtype}")
        values = values.astype(target)
    return values.reshape(n_rows, *shape)


# ---------------------------------------------------------------------------------------------- writing
def _json_dump(obj: Any, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=4, ensure_ascii=False)


def _tasks_table(tasks: list[str]):
    """``meta/tasks.parquet`` as pandas writes LeRobot's task frame: column task_index, the index "task"."""
    import pyarrow as pa

    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
             "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object",
             "metadata": None},
        ],
        "attributes": {},
        "creator": {"library": "pyarrow", "version": pa.__version__},
    }
    schema = pa.schema([pa.field("task_index", pa.int64()), pa.field("task", pa.string())],
                       metadata={"pandas": json.dumps(pandas_meta)})
    return pa.table([pa.array(np.arange(len(tasks), dtype=np.int64)), pa.array(tasks, type=pa.string())],
                    schema=schema)


def _validate_for_writing(data: dict, episode_ends, names: dict | None):
    if not isinstance(data, dict) or not data:
        raise ValueError("data must be a non-empty dict {key: array [T, ...]}")
    ends = np.asarray(episode_ends)
    if ends.ndim != 1 or len(ends) == 0 or ends.dtype.kind not in "iu":
        raise ValueError(f"episode_ends must be a non-empty 1-D integer array (cumulative episode ends), got "
                         f"shape {ends.shape} dtype {ends.dtype}")
    ends = ends.astype(np.int64)
    steps = np.diff(np.concatenate([[0], ends]))
    if (steps <= 0).any():
        i = int(np.flatnonzero(steps <= 0)[0])
        raise ValueError(f"episode_ends must be strictly increasing and positive, but episode_ends[{i}] = "
                         f"{int(ends[i])} after {int(ends[i - 1]) if i else 0}")
    total = int(ends[-1])
    names = dict(names or {})
    unknown = sorted(set(names) - set(data))
    if unknown:
        raise ValueError(f"names= gives LeRobot names for key(s) {unknown} that are not in data ({sorted(data)})")
    arrays, mapping = {}, {}
    for key, value in data.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"invalid key {key!r}: keys must be non-empty strings")
        arr = np.asarray(value)
        name = names.get(key, lerobot_name(key))
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"key {key!r}: LeRobot feature name {name!r} must be a non-empty string without '/'")
        if name in INDEX_FEATURES:
            raise ValueError(f"key {key!r}: {name!r} is one of LeRobot's index columns {list(INDEX_FEATURES)}; "
                             "give it another name with names={...}")
        if name in mapping.values():
            other = next(k for k, n in mapping.items() if n == name)
            raise ValueError(f"keys {other!r} and {key!r} both map to the LeRobot name {name!r}; pass "
                             f"names={{{key!r}: '<another name>'}}")
        if arr.ndim == 0 or len(arr) != total:
            raise ValueError(f"key {key!r}: shape {list(arr.shape)} needs one row per step, {total} rows "
                             f"(episode_ends[-1]); fix the array or episode_ends")
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"key {key!r}: dtype {arr.dtype} is not supported (use bool, int or float)")
        if arr.ndim > 6:
            raise ValueError(f"key {key!r}: {arr.ndim - 1} axes per step; LeRobot features have at most 5")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            first = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
            raise ValueError(f"key {key!r}: non-finite value (NaN or inf) at index {first}; clean the data first")
        arrays[key] = arr
        mapping[key] = name
    return arrays, mapping, ends


@contextlib.contextmanager
def _staged(path: str):
    """Yield a fresh ``path + ".tmp-<pid>"`` to build a dataset in; on success it replaces ``path`` (an old
    dataset there is moved aside first and deleted after), on any error it is deleted."""
    tmp = f"{path}.tmp-{os.getpid()}"
    remove_path(tmp)  # a leftover of a crashed run with the same pid
    try:
        yield tmp
        aside = f"{path}.old-{os.getpid()}" if os.path.lexists(path) else None
        if aside:
            remove_path(aside)
            os.replace(path, aside)
        os.replace(tmp, path)
        if aside:
            remove_path(aside)
    except BaseException:
        remove_path(tmp)
        raise


def write_lerobot(path: str | os.PathLike, data: dict[str, np.ndarray], episode_ends, fps: int,
                  task: str | Sequence[str] = "demonstration", robot_type: str | None = None,
                  names: dict[str, str] | None = None, feature_names: dict[str, Any] | None = None,
                  attrs: dict | None = None, chunks_size: int = DEFAULT_CHUNK_SIZE,
                  data_files_size_in_mb: float = DEFAULT_DATA_FILE_SIZE_IN_MB, overwrite: bool = False) -> None:
    """Write ``data`` (``{key: array [T, ...]}``) with ``episode_ends`` as a LeRobotDataset v3.0 directory.

    ``fps``: frames per second (``timestamp = frame_index / fps``). ``task``: one task string for every episode
    or one per episode. ``names``: LeRobot names for steerlab keys (default :func:`lerobot_name`).
    ``feature_names``: the ``names`` entry of a feature in ``meta/info.json`` (by steerlab key; default None),
    e.g. a list naming the components of a vector. ``attrs`` (JSON-serializable) go to ``meta/steerlab.json``.
    ``chunks_size`` / ``data_files_size_in_mb``: LeRobot's limits on files per chunk directory and on a data
    file's size. The directory is built in ``path + ".tmp-<pid>"`` and moved into place, so readers never see
    half a dataset. Raises ``FileExistsError`` if ``path`` exists and ``overwrite`` is False, ``ValueError``
    for malformed input.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = os.path.normpath(os.fspath(path))
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (or --overwrite) to replace it")
    if isinstance(fps, bool) or not float(fps).is_integer() or int(fps) <= 0:
        raise ValueError(f"fps must be a positive integer (LeRobot stores an int), got {fps!r}")
    fps = int(fps)
    if isinstance(chunks_size, bool) or int(chunks_size) != chunks_size or chunks_size < 1:
        raise ValueError(f"chunks_size (files per chunk directory) must be a positive integer, got {chunks_size!r}")
    if isinstance(data_files_size_in_mb, bool) or not float(data_files_size_in_mb) > 0:
        raise ValueError(f"data_files_size_in_mb must be > 0, got {data_files_size_in_mb!r}")
    size_mb = float(data_files_size_in_mb)
    data_files_size_in_mb = int(size_mb) if size_mb.is_integer() else size_mb  # LeRobot writes an int
    arrays, mapping, ends = _validate_for_writing(data, episode_ends, names)
    n_eps, total = len(ends), int(ends[-1])
    starts = np.concatenate([[0], ends[:-1]])
    lengths = ends - starts
    ep_tasks = [task] * n_eps if isinstance(task, str) else list(task)
    if len(ep_tasks) != n_eps or not all(isinstance(t, str) and t for t in ep_tasks):
        raise ValueError(f"task must be a non-empty string or one per episode ({n_eps}), got {task!r}")
    feature_names = dict(feature_names or {})
    unknown = sorted(set(feature_names) - set(arrays))
    if unknown:
        raise ValueError(f"feature_names= names key(s) {unknown} that are not in data ({sorted(arrays)})")
    attrs = jsonable(dict(attrs or {}))
    try:
        json.dumps(attrs)
    except TypeError as e:
        raise ValueError(f"attrs must be JSON-serializable: {e}") from None

    tasks = list(dict.fromkeys(ep_tasks))  # first appearance order -> task_index
    task_of = {t: i for i, t in enumerate(tasks)}
    episode_index = np.repeat(np.arange(n_eps, dtype=np.int64), lengths)
    columns = {mapping[k]: a for k, a in arrays.items()}
    frame_index = np.arange(total, dtype=np.int64) - np.repeat(starts, lengths)
    columns["timestamp"] = (frame_index / fps).astype(np.float32)
    columns["frame_index"] = frame_index
    columns["episode_index"] = episode_index
    columns["index"] = np.arange(total, dtype=np.int64)
    columns["task_index"] = np.repeat(np.array([task_of[t] for t in ep_tasks], dtype=np.int64), lengths)
    features = {}
    for k, a in arrays.items():
        features[mapping[k]] = {"dtype": a.dtype.name, "shape": list(a.shape[1:]) or [1],
                                "names": feature_names.get(k)}
    for name, dtype in INDEX_FEATURES.items():
        features[name] = {"dtype": dtype, "shape": [1], "names": None}

    fields = [_arrow_field(n, f["dtype"], f["shape"]) for n, f in features.items()]
    hf_meta = {"info": {"features": {n: _hf_feature(f["dtype"], f["shape"]) for n, f in features.items()}}}
    schema = pa.schema(fields, metadata={"huggingface": json.dumps(hf_meta)})

    ep_stats = [{n: feature_stats(columns[n][s:e]) for n in features} for s, e in zip(starts, ends)]
    stats = dataset_stats(ep_stats)

    with _staged(path) as tmp:
        os.makedirs(os.path.join(tmp, "meta"))
        # data files: whole episodes, one row group each; a new file once the next episode would reach the limit
        chunk, file, writer, file_bytes, file_frames = 0, 0, None, 0, 0
        ep_files = []
        for i in range(n_eps):
            if writer is not None:
                per_frame = file_bytes / file_frames
                if (file_bytes + per_frame * lengths[i]) / _MB >= data_files_size_in_mb:
                    writer.close()
                    writer = None
                    chunk, file = next_file(chunk, file, int(chunks_size))
            if writer is None:
                fpath = os.path.join(tmp, DATA_PATH.format(chunk_index=chunk, file_index=file))
                os.makedirs(os.path.dirname(fpath), exist_ok=True)
                writer = pq.ParquetWriter(fpath, schema, compression="snappy", use_dictionary=True)
                file_frames = 0
            rows = slice(int(starts[i]), int(ends[i]))  # one table per episode keeps list offsets small
            writer.write_table(pa.table([_arrow_column(columns[f.name][rows], f) for f in fields], schema=schema))
            file_frames += int(lengths[i])
            file_bytes = os.path.getsize(fpath)
            ep_files.append((chunk, file))
        writer.close()

        _write_episodes_meta(tmp, features, ep_tasks, lengths, starts, ends, ep_files, ep_stats,
                             data_files_size_in_mb, int(chunks_size))
        pq.write_table(_tasks_table(tasks), os.path.join(tmp, TASKS_PATH), compression="snappy")
        info = {
            "codebase_version": CODEBASE_VERSION,
            "fps": fps,
            "features": features,
            "total_episodes": n_eps,
            "total_frames": total,
            "total_tasks": len(tasks),
            "chunks_size": int(chunks_size),
            "data_files_size_in_mb": data_files_size_in_mb,
            "video_files_size_in_mb": DEFAULT_VIDEO_FILE_SIZE_IN_MB,
            "data_path": DATA_PATH,
            "video_path": None,  # no video features
            "robot_type": robot_type,
            "splits": {"train": f"0:{n_eps}"},
        }
        _json_dump(info, os.path.join(tmp, INFO_PATH))
        _json_dump(_stats_lists(stats), os.path.join(tmp, STATS_PATH))
        scalar = [k for k, a in arrays.items() if a.ndim == 1]
        _json_dump({"keys": mapping, "scalar_keys": scalar, "attrs": attrs}, os.path.join(tmp, STEERLAB_PATH))


def _write_episodes_meta(root, features, ep_tasks, lengths, starts, ends, ep_files, ep_stats, size_mb,
                         chunks_size):
    """``meta/episodes/...parquet``: one row per episode, written in row groups of ten episodes; a new file once
    the next group would take the file past ``size_mb``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def list_type(value: np.ndarray, inner):
        t = inner
        for _ in range(max(1, np.ndim(value))):
            t = pa.list_(t)
        return t

    stat_cols = []
    for name in features:
        for key, value in ep_stats[0][name].items():
            stat_cols.append((name, key, list_type(value, pa.int64() if key == "count" else pa.float64())))
    n_eps = len(lengths)
    chunk, file, writer, file_rows = 0, 0, None, 0
    for g in range(0, n_eps, _EPISODE_ROWS_PER_GROUP):
        rows = range(g, min(n_eps, g + _EPISODE_ROWS_PER_GROUP))
        if writer is not None:
            size = os.path.getsize(fpath)
            if (size + size / file_rows * len(rows)) / _MB >= size_mb:
                writer.close()
                writer = None
                chunk, file = next_file(chunk, file, chunks_size)
        cols = {
            "episode_index": pa.array(list(rows), pa.int64()),
            "tasks": pa.array([[ep_tasks[i]] for i in rows], pa.list_(pa.string())),
            "length": pa.array([int(lengths[i]) for i in rows], pa.int64()),
            "data/chunk_index": pa.array([ep_files[i][0] for i in rows], pa.int64()),
            "data/file_index": pa.array([ep_files[i][1] for i in rows], pa.int64()),
            "dataset_from_index": pa.array([int(starts[i]) for i in rows], pa.int64()),
            "dataset_to_index": pa.array([int(ends[i]) for i in rows], pa.int64()),
        }
        for name, key, t in stat_cols:
            cols[f"stats/{name}/{key}"] = pa.array([np.atleast_1d(ep_stats[i][name][key]).tolist() for i in rows], t)
        cols["meta/episodes/chunk_index"] = pa.array([chunk] * len(rows), pa.int64())
        cols["meta/episodes/file_index"] = pa.array([file] * len(rows), pa.int64())
        table = pa.table(cols)
        if writer is None:
            fpath = os.path.join(root, EPISODES_PATH.format(chunk_index=chunk, file_index=file))
            os.makedirs(os.path.dirname(fpath), exist_ok=True)
            writer = pq.ParquetWriter(fpath, table.schema, compression="snappy", use_dictionary=True)
            file_rows = 0
        writer.write_table(table)
        file_rows += len(rows)
    writer.close()


# ---------------------------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class LeRobotMeta:
    """A LeRobot dataset's metadata: ``info`` (meta/info.json), ``tasks`` (by task_index), ``episodes`` (the
    columns of meta/episodes/, stats columns left out), ``stats`` (meta/stats.json as arrays, None if absent),
    and ``steerlab`` (meta/steerlab.json, None for datasets steerlab did not write)."""

    root: str
    info: dict
    tasks: tuple[str, ...]
    episodes: dict[str, list]
    stats: dict[str, dict[str, np.ndarray]] | None
    steerlab: dict | None

    @property
    def fps(self) -> int:
        return int(self.info["fps"])

    @property
    def features(self) -> dict[str, dict]:
        return self.info["features"]

    def key_to_name(self) -> dict[str, str]:
        """steerlab key -> LeRobot name of every numeric feature (index columns excluded)."""
        written = (self.steerlab or {}).get("keys") or {}
        by_name = {n: k for k, n in written.items()}
        return {by_name.get(n, steerlab_key(n)): n for n, ft in self.features.items()
                if n not in INDEX_FEATURES and ft.get("dtype") not in _NOT_ARRAYS}


def _read_json(path: str, what: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: {what} is not valid JSON ({e}); restore or rewrite it") from None


def _check_version(root: str, version) -> None:
    v = str(version)
    parts = v.removeprefix("v").split(".")
    try:
        major = int(parts[0])
    except ValueError:
        major = None
    if major == 3:
        return
    if major is not None and major < 3:
        raise DatasetError(
            f"{root}: codebase_version {v!r} in meta/info.json is an older LeRobot format; steerlab reads v3.0. "
            "Convert it with lerobot's `python -m lerobot.scripts.convert_dataset_v21_to_v30 --repo-id=...`")
    raise DatasetError(f"{root}: unknown codebase_version {v!r} in meta/info.json; steerlab reads LeRobotDataset "
                       f"{CODEBASE_VERSION} (a directory with meta/info.json, data/ and meta/episodes/)")


def read_lerobot_meta(path: str | os.PathLike) -> LeRobotMeta:
    """Read and check a LeRobot v3 dataset's ``meta/`` files (not the frames)."""
    import pyarrow.parquet as pq

    root = os.fspath(path)
    if not os.path.isdir(root):
        raise DatasetError(f"LeRobot dataset {root} does not exist or is not a directory")
    info_path = os.path.join(root, INFO_PATH)
    if not os.path.isfile(info_path):
        raise DatasetError(f"{root} has no meta/info.json; a LeRobotDataset v3.0 directory needs it (with "
                           "codebase_version, fps and features): copy the dataset whole or rewrite it with "
                           "steerlab.data.lerobot_io.write_lerobot")
    info = _read_json(info_path, "meta/info.json")
    if not isinstance(info, dict):
        raise DatasetError(f"{info_path} must hold a JSON object")
    missing = [k for k in ("codebase_version", "fps", "features", "total_episodes", "total_frames") if k not in info]
    if missing:
        raise DatasetError(f"{info_path} lacks key(s) {missing}; LeRobot's info.json has codebase_version, fps, "
                           "features, total_episodes, total_frames, chunks_size, data_path and more")
    _check_version(root, info["codebase_version"])
    feats = info["features"]
    if not isinstance(feats, dict):
        raise DatasetError(f"{info_path}: features must be an object {{name: {{dtype, shape, names}}}}")
    for name, ft in feats.items():
        if not isinstance(ft, dict) or "dtype" not in ft or "shape" not in ft:
            raise DatasetError(f"{info_path}: feature {name!r} needs 'dtype' and 'shape', got {ft!r}")
        if not isinstance(ft["shape"], list) or not all(isinstance(s, int) and s > 0 for s in ft["shape"]):
            raise DatasetError(f"{info_path}: feature {name!r} has shape {ft['shape']!r}; a shape is a list of "
                               "positive integers, [1] for one value per frame")
    tasks: tuple[str, ...] = ()
    tasks_path = os.path.join(root, TASKS_PATH)
    if os.path.isfile(tasks_path):
        t = pq.read_table(tasks_path)
        if "task" in t.column_names and "task_index" in t.column_names:
            order = np.argsort(t.column("task_index").to_numpy())
            names = t.column("task").to_pylist()
            tasks = tuple(names[i] for i in order)
    ep_files = _parquet_files(os.path.join(root, EPISODES_DIR))
    if not ep_files:
        raise DatasetError(f"{root} has no meta/episodes/chunk-XXX/file-XXX.parquet; LeRobot v3 keeps the episode "
                           "boundaries there: copy the dataset whole or rewrite it with write_lerobot")
    episodes: dict[str, list] = {}
    for f in ep_files:
        schema = pq.read_schema(f)
        cols = [c for c in schema.names if not c.startswith("stats/")]
        t = pq.read_table(f, columns=cols)
        for c in cols:
            episodes.setdefault(c, []).extend(t.column(c).to_pylist())
    stats = None
    stats_path = os.path.join(root, STATS_PATH)
    if os.path.isfile(stats_path):
        raw = _read_json(stats_path, "meta/stats.json")
        stats = {n: {k: np.atleast_1d(np.array(v)) for k, v in s.items()} for n, s in raw.items()}
    sl_path = os.path.join(root, STEERLAB_PATH)
    steerlab = _read_json(sl_path, "meta/steerlab.json") if os.path.isfile(sl_path) else None
    return LeRobotMeta(root=root, info=info, tasks=tasks, episodes=episodes, stats=stats, steerlab=steerlab)


def read_lerobot(path: str | os.PathLike, keys: Sequence[str] | None = None) -> EpisodeData:
    """Load a LeRobot v3 dataset into an :class:`EpisodeData` with steerlab keys (``obs``, ``action``, ...).

    ``keys``: steerlab keys (all numeric features when None); LeRobot names and the index columns
    (``timestamp``, ``frame_index``, ``episode_index``, ``index``, ``task_index``, as ``[T]``) may be asked for
    too. A feature of shape ``S`` comes back as ``[T, *S]`` (``[T]`` for 1-D arrays steerlab wrote). Episode
    ends come from the ``episode_index`` column and are checked against meta/episodes and meta/info.json.
    ``attrs``: those of meta/steerlab.json plus ``attrs["lerobot"]`` (fps, robot_type, tasks, the episodes'
    task strings). Raises :class:`DatasetError` with what to fix for anything malformed.
    """
    import pyarrow.parquet as pq

    meta = read_lerobot_meta(path)
    root = meta.root
    features = meta.features
    key_to_name = meta.key_to_name()
    if keys is None:
        wanted = dict(key_to_name)
    else:
        wanted = {}
        for k in keys:
            name = key_to_name.get(k, k if (k in features or k in INDEX_FEATURES) else None)
            if name is None:
                raise DatasetError(f"{root}: key {k!r} is not a feature of this LeRobot dataset; available keys: "
                                   f"{sorted(key_to_name)} (LeRobot names {sorted(key_to_name.values())})")
            ft = features.get(name, {})
            if ft.get("dtype") in _NOT_ARRAYS:
                raise DatasetError(f"{root}: feature {name!r} is stored as {ft['dtype']}, which steerlab does not "
                                   "decode; use the numeric features")
            wanted[k] = name
    files = _parquet_files(os.path.join(root, "data"))
    if not files:
        raise DatasetError(f"{root} has no data/chunk-XXX/file-XXX.parquet files; the frames are missing")
    columns = sorted(set(wanted.values()) | {"episode_index", "index", "frame_index"})
    parts: dict[str, list[np.ndarray]] = {c: [] for c in columns}
    for f in files:
        where = os.path.relpath(f, root)
        present = set(pq.read_schema(f).names)
        lacking = [c for c in columns if c not in present]
        if lacking:
            raise DatasetError(
                f"{root}: {where} has no column(s) {lacking} (declared in meta/info.json features or required "
                f"by LeRobot v3); its columns are {sorted(present)}. Remove the feature from meta/info.json or "
                "rewrite the dataset with write_lerobot")
        t = pq.read_table(f, columns=columns)
        for c in columns:
            ft = features.get(c) or {"dtype": INDEX_FEATURES[c], "shape": [1]}
            parts[c].append(_column_values(t.column(c), c, ft["dtype"], ft["shape"], where))
    cols = {c: np.concatenate(v) for c, v in parts.items()}
    ep = cols["episode_index"].reshape(-1)
    total = len(ep)
    if total == 0:
        raise DatasetError(f"{root}: the data files hold no frames")
    change = np.flatnonzero(np.diff(ep)) + 1
    run_starts = np.concatenate([[0], change])
    run_ids = ep[run_starts]
    if not np.array_equal(run_ids, np.arange(len(run_ids))):
        bad = int(np.flatnonzero(run_ids != np.arange(len(run_ids)))[0])
        prev = f"after the frames of episode {int(run_ids[bad - 1])}" if bad else "first"
        raise DatasetError(
            f"{root}: episode_index is not contiguous: {prev} comes episode {int(run_ids[bad])} (frame "
            f"{int(run_starts[bad])}), expected {bad}; the data files must hold episodes 0..N-1 in order, each "
            "episode's frames together (rewrite the dataset with write_lerobot)")
    episode_ends = np.concatenate([change, [total]]).astype(np.int64)
    lengths = np.diff(np.concatenate([[0], episode_ends]))
    index = cols["index"].reshape(-1)
    if not np.array_equal(index, np.arange(total)):
        i = int(np.flatnonzero(index != np.arange(total))[0])
        raise DatasetError(f"{root}: the index column must count frames 0..{total - 1}, but frame {i} has index "
                           f"{int(index[i])}")
    frame_index = cols["frame_index"].reshape(-1)
    expected = np.arange(total) - np.repeat(episode_ends - lengths, lengths)
    if not np.array_equal(frame_index, expected):
        i = int(np.flatnonzero(frame_index != expected)[0])
        raise DatasetError(f"{root}: frame_index must restart at 0 in every episode, but frame {i} (episode "
                           f"{int(ep[i])}) has frame_index {int(frame_index[i])}, expected {int(expected[i])}")
    n_eps = len(episode_ends)
    if int(meta.info["total_episodes"]) != n_eps or int(meta.info["total_frames"]) != total:
        raise DatasetError(f"{root}: meta/info.json says {meta.info['total_episodes']} episodes and "
                           f"{meta.info['total_frames']} frames, the data files hold {n_eps} and {total}; fix "
                           "total_episodes / total_frames in meta/info.json")
    epm = meta.episodes
    for col in ("episode_index", "length", "dataset_from_index", "dataset_to_index"):
        if col not in epm:
            raise DatasetError(f"{root}: meta/episodes lacks the column {col!r}")
    order = np.argsort(np.asarray(epm["episode_index"]))
    if not np.array_equal(np.asarray(epm["episode_index"])[order], np.arange(n_eps)):
        raise DatasetError(f"{root}: meta/episodes lists episodes {sorted(epm['episode_index'])[:10]}..., the data "
                           f"files hold episodes 0..{n_eps - 1}")
    for col, want in (("length", lengths), ("dataset_from_index", episode_ends - lengths),
                      ("dataset_to_index", episode_ends)):
        got = np.asarray(epm[col])[order]
        if not np.array_equal(got, want):
            i = int(np.flatnonzero(got != want)[0])
            raise DatasetError(f"{root}: meta/episodes gives episode {i} {col} = {int(got[i])}, the data files "
                               f"{int(want[i])}; the episode metadata does not match the frames")
    data = {}
    written = (meta.steerlab or {}).get("keys") or {}
    scalar = {written.get(k) for k in (meta.steerlab or {}).get("scalar_keys") or []}  # LeRobot names of [T] arrays
    for k, name in wanted.items():
        arr = cols[name]
        if name in INDEX_FEATURES or (name in scalar and arr.shape[1:] == (1,)):
            arr = arr.reshape(total)
        if arr.dtype.kind in "fc":
            bad = ~np.isfinite(arr)
            if bad.any():
                first = tuple(int(i) for i in np.argwhere(bad)[0])
                raise DatasetError(f"{root}: feature {name!r} has {int(bad.sum())} non-finite value(s) (NaN or "
                                   f"inf); first at index {first} (episode {int(ep[first[0]])}); clean or re-collect "
                                   "the data")
        data[k] = arr
    attrs = dict((meta.steerlab or {}).get("attrs") or {})
    ep_tasks = [list(epm["tasks"][i]) for i in order] if "tasks" in epm else []
    attrs["lerobot"] = {"codebase_version": meta.info["codebase_version"], "fps": meta.fps,
                        "robot_type": meta.info.get("robot_type"), "tasks": list(meta.tasks),
                        "episode_tasks": ep_tasks}
    return EpisodeData(data=data, episode_ends=episode_ends, attrs=attrs)


def write_lerobot_episodes(path: str | os.PathLike, episodes: list[dict[str, np.ndarray]], fps: int,
                           attrs: dict | None = None, overwrite: bool = False, **kwargs) -> None:
    """:func:`write_lerobot` for a list of episodes (``{key: array [T_i, ...]}``, same keys in all), the form
    :func:`steerlab.data.zarr_io.write_episodes` takes."""
    data, ends = concat_episodes(episodes)
    write_lerobot(path, data, ends, fps, attrs=attrs, overwrite=overwrite, **kwargs)
