"""LeRobotDataset v3.0 I/O: exact round trips, LeRobot's layout and column types, chunking, the zarr reader's
equal, training from a LeRobot directory, and an error that says what to fix for each malformed dataset."""

import csv
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from steerlab.data import open_dataset
from steerlab.data.lerobot_io import (
    INDEX_FEATURES,
    STAT_KEYS,
    dataset_stats,
    feature_stats,
    lerobot_name,
    read_lerobot,
    read_lerobot_meta,
    steerlab_key,
    write_lerobot,
)
from steerlab.data.zarr_io import DatasetError, load_episodes, write_episodes

ENDS = np.array([12, 20, 31, 40], dtype=np.int64)


def _demo_data(total=int(ENDS[-1]), seed=0):
    rng = np.random.default_rng(seed)
    return {
        "obs": rng.standard_normal((total, 8)).astype(np.float32),
        "action": rng.uniform(-1, 1, (total, 2)).astype(np.float32),
        "occupancy": rng.integers(0, 2, (total, 5, 4)).astype(np.uint8),
        "ref_traj": rng.standard_normal((total, 6, 2)).astype(np.float32),
        "distance": rng.random(total).astype(np.float32),
        "action_mask": rng.random(total) > 0.3,
        "route_id": rng.integers(0, 3, total).astype(np.int64),
        "wide": rng.standard_normal((total, 1)).astype(np.float64),
    }


@pytest.fixture
def demo(tmp_path):
    path = tmp_path / "demo"
    data = _demo_data()
    write_lerobot(path, data, ENDS, fps=20, task=["reach", "push", "reach", "reach"], robot_type="particle",
                  feature_names={"action": ["x", "y"]}, attrs={"n_dim": 2, "seed": np.int64(3)})
    return path, data


def _rewrite_parquet(path: Path, column: str, values) -> None:
    """Replace one column of a parquet file, keeping its schema (with its metadata)."""
    t = pq.read_table(path)
    i = t.schema.get_field_index(column)
    t = t.set_column(i, t.schema.field(i), pa.array(values, type=t.schema.field(i).type))
    pq.write_table(t, path)


def _edit_info(path: Path, edit) -> None:
    f = path / "meta" / "info.json"
    info = json.loads(f.read_text())
    edit(info)
    f.write_text(json.dumps(info, indent=4))


# ---------------------------------------------------------------------------------------------- round trip
def test_round_trip_is_exact(demo):
    path, data = demo
    got = read_lerobot(path)
    assert sorted(got.data) == sorted(data)
    for k, v in data.items():
        assert got.data[k].dtype == v.dtype and got.data[k].shape == v.shape, k
        assert got.data[k].tobytes() == v.tobytes(), k  # bit-identical
    np.testing.assert_array_equal(got.episode_ends, ENDS)
    assert got.episode_ends.dtype == np.int64
    assert got.attrs["n_dim"] == 2 and got.attrs["seed"] == 3
    lr = got.attrs["lerobot"]
    assert lr["fps"] == 20 and lr["robot_type"] == "particle" and lr["tasks"] == ["reach", "push"]
    assert lr["episode_tasks"] == [["reach"], ["push"], ["reach"], ["reach"]]
    # keys= picks features by steerlab key, by LeRobot name, and the index columns as [T]
    part = read_lerobot(path, keys=["obs", "action", "observation.distance", "timestamp", "task_index"])
    np.testing.assert_array_equal(part.data["observation.distance"], data["distance"])
    np.testing.assert_array_equal(part.data["task_index"], np.repeat([0, 1, 0, 0], np.diff(ENDS, prepend=0)))
    assert part.data["timestamp"].dtype == np.float32 and part.data["timestamp"].shape == (40,)


def test_stats_read_back_exactly_and_match_the_data(demo):
    path, data = demo
    meta = read_lerobot_meta(path)
    starts = np.concatenate([[0], ENDS[:-1]])
    names = {k: lerobot_name(k) for k in data}
    columns = {names[k]: v for k, v in data.items()}
    index = read_lerobot(path, keys=list(INDEX_FEATURES))
    columns.update(index.data)
    per_ep = [{n: feature_stats(v[s:e]) for n, v in columns.items()} for s, e in zip(starts, ENDS)]
    want = dataset_stats(per_ep)
    assert set(meta.stats) == set(want) == set(meta.features)
    for name, stats in want.items():
        assert list(meta.stats[name]) == list(STAT_KEYS)
        for k, v in stats.items():
            np.testing.assert_array_equal(meta.stats[name][k], np.atleast_1d(v), err_msg=f"{name}/{k}")
    # the figures are those of the data: exact min/max/count, mean/std to float32 precision, medians within a bin
    obs = data["obs"]
    s = meta.stats["observation.state"]
    np.testing.assert_array_equal(s["min"], obs.min(0))
    np.testing.assert_array_equal(s["max"], obs.max(0))
    assert s["count"].tolist() == [40]
    np.testing.assert_allclose(s["mean"], obs.mean(0, dtype=np.float64), atol=1e-5)
    np.testing.assert_allclose(s["std"], obs.std(0, dtype=np.float64), atol=1e-4)
    assert (s["q01"] <= s["q50"]).all() and (s["q50"] <= s["q99"]).all()
    d = meta.stats["observation.distance"]
    assert d["min"].shape == (1,) and d["count"].tolist() == [40]
    # per-episode stats columns of meta/episodes
    t = pq.read_table(path / "meta/episodes/chunk-000/file-000.parquet")
    for i in range(len(ENDS)):
        for k in STAT_KEYS:
            got = np.asarray(t.column(f"stats/action/{k}")[i].as_py())
            np.testing.assert_array_equal(got, np.atleast_1d(per_ep[i]["action"][k]))
    q = feature_stats(np.linspace(0, 1, 1001, dtype=np.float32)[:, None])
    np.testing.assert_allclose(q["q10"], [0.1], atol=1e-3)
    np.testing.assert_allclose(q["q90"], [0.9], atol=1e-3)


# ---------------------------------------------------------------------------------------------- layout
def test_layout_and_column_types_are_lerobots(demo):
    path, data = demo
    files = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
    assert files == ["data/chunk-000/file-000.parquet", "meta/episodes/chunk-000/file-000.parquet",
                     "meta/info.json", "meta/stats.json", "meta/steerlab.json", "meta/tasks.parquet"]
    info = json.loads((path / "meta/info.json").read_text())
    assert list(info) == ["codebase_version", "fps", "features", "total_episodes", "total_frames", "total_tasks",
                          "chunks_size", "data_files_size_in_mb", "video_files_size_in_mb", "data_path",
                          "video_path", "robot_type", "splits"]
    assert info["codebase_version"] == "v3.0" and info["fps"] == 20 and info["robot_type"] == "particle"
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (4, 40, 2)
    assert (info["chunks_size"], info["data_files_size_in_mb"], info["video_files_size_in_mb"]) == (1000, 100, 200)
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["splits"] == {"train": "0:4"}
    feats = info["features"]
    assert list(feats) == ["observation.state", "action", "observation.occupancy", "observation.ref_traj",
                           "observation.distance", "observation.action_mask", "observation.route_id",
                           "observation.wide", "timestamp", "frame_index", "episode_index", "index", "task_index"]
    assert feats["observation.state"] == {"dtype": "float32", "shape": [8], "names": None}
    assert feats["action"] == {"dtype": "float32", "shape": [2], "names": ["x", "y"]}
    assert feats["observation.occupancy"] == {"dtype": "uint8", "shape": [5, 4], "names": None}
    assert feats["observation.action_mask"]["dtype"] == "bool" and feats["observation.distance"]["shape"] == [1]
    assert feats["timestamp"] == {"dtype": "float32", "shape": [1], "names": None}
    for name in ("frame_index", "episode_index", "index", "task_index"):
        assert feats[name] == {"dtype": "int64", "shape": [1], "names": None}

    schema = pq.read_schema(path / "data/chunk-000/file-000.parquet")
    assert schema.names == list(feats)
    assert schema.field("observation.state").type == pa.list_(pa.float32(), 8)  # fixed_size_list<float32>[8]
    assert schema.field("action").type == pa.list_(pa.float32(), 2)
    assert schema.field("timestamp").type == pa.float32()
    for name in ("frame_index", "episode_index", "index", "task_index", "observation.route_id"):
        assert schema.field(name).type == pa.int64()
    assert schema.field("observation.distance").type == pa.float32()
    assert schema.field("observation.action_mask").type == pa.bool_()
    occ = schema.field("observation.occupancy")
    assert occ.type == pa.list_(pa.list_(pa.uint8()))
    assert occ.metadata[b"ARROW:extension:name"] == b"datasets.features.features.Array2DExtensionType"
    assert json.loads(occ.metadata[b"ARROW:extension:metadata"]) == [[5, 4], "uint8"]
    hf = json.loads(schema.metadata[b"huggingface"])["info"]["features"]
    assert hf["observation.state"] == {"feature": {"dtype": "float32", "_type": "Value"}, "length": 8, "_type": "List"}
    assert hf["timestamp"] == {"dtype": "float32", "_type": "Value"}
    assert hf["observation.ref_traj"] == {"shape": [6, 2], "dtype": "float32", "_type": "Array2D"}
    f = pq.ParquetFile(path / "data/chunk-000/file-000.parquet")
    assert f.metadata.num_row_groups == 4  # one per episode
    assert f.metadata.row_group(0).column(0).compression == "SNAPPY"
    t = f.read()
    np.testing.assert_array_equal(t.column("timestamp").to_numpy(),
                                  (t.column("frame_index").to_numpy() / 20).astype(np.float32))

    ep = pq.read_table(path / "meta/episodes/chunk-000/file-000.parquet")
    assert ep.column_names[:7] == ["episode_index", "tasks", "length", "data/chunk_index", "data/file_index",
                                   "dataset_from_index", "dataset_to_index"]
    assert ep.column_names[-2:] == ["meta/episodes/chunk_index", "meta/episodes/file_index"]
    assert "stats/observation.state/q99" in ep.column_names and "stats/index/count" in ep.column_names
    assert ep.schema.field("tasks").type == pa.list_(pa.string())
    assert ep.schema.field("stats/action/mean").type == pa.list_(pa.float64())
    assert ep.schema.field("stats/action/count").type == pa.list_(pa.int64())
    assert ep.column("length").to_pylist() == [12, 8, 11, 9]
    assert ep.column("dataset_from_index").to_pylist() == [0, 12, 20, 31]
    assert ep.column("dataset_to_index").to_pylist() == ENDS.tolist()

    tasks = pq.read_table(path / "meta/tasks.parquet")
    assert tasks.column_names == ["task_index", "task"]
    assert tasks.column("task").to_pylist() == ["reach", "push"] and tasks.column("task_index").to_pylist() == [0, 1]
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]  # pandas reads task as index
    stats = json.loads((path / "meta/stats.json").read_text())
    assert set(stats["action"]) == {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}


def test_key_names_map_both_ways():
    assert lerobot_name("obs") == "observation.state" and steerlab_key("observation.state") == "obs"
    assert lerobot_name("action") == "action" and steerlab_key("action") == "action"
    assert lerobot_name("pos_agent") == "observation.pos_agent" and steerlab_key("observation.pos_agent") == "pos_agent"
    assert lerobot_name("next.reward") == "next.reward" and steerlab_key("next.reward") == "next.reward"
    assert steerlab_key("observation.images.top") == "observation.images.top"


def test_explicit_names_and_a_foreign_dataset_without_steerlab_meta(tmp_path):
    data = _demo_data()
    path = tmp_path / "d"
    write_lerobot(path, {"state": data["obs"], "action": data["action"]}, ENDS, fps=10,
                  names={"state": "observation.state"})
    assert sorted(read_lerobot(path).data) == ["action", "state"]  # meta/steerlab.json restores the key
    os.remove(path / "meta" / "steerlab.json")  # as a dataset LeRobot wrote: the default rule applies
    got = read_lerobot(path)
    assert sorted(got.data) == ["action", "obs"] and got.attrs["lerobot"]["fps"] == 10
    np.testing.assert_array_equal(got.data["obs"], data["obs"])


# ---------------------------------------------------------------------------------------------- chunking
def test_files_and_chunks_roll_over_by_size_and_chunks_size(tmp_path):
    rng = np.random.default_rng(1)
    lengths = rng.integers(600, 900, 20)
    ends = np.cumsum(lengths)
    total = int(ends[-1])
    data = {"obs": rng.standard_normal((total, 32)).astype(np.float32),
            "action": rng.standard_normal((total, 4)).astype(np.float32)}
    path = tmp_path / "big"
    write_lerobot(path, data, ends, fps=10, chunks_size=2, data_files_size_in_mb=1)
    files = sorted(str(p.relative_to(path)) for p in (path / "data").rglob("*.parquet"))
    assert len(files) >= 4  # ~2.9 MB of floats in files of at most 1 MB
    assert files[:4] == ["data/chunk-000/file-000.parquet", "data/chunk-000/file-001.parquet",
                         "data/chunk-001/file-000.parquet", "data/chunk-001/file-001.parquet"]
    ep = pq.read_table(path / "meta/episodes/chunk-000/file-000.parquet").to_pydict()
    for i in range(len(ends)):  # each episode lies whole in the file its metadata names
        f = path / f"data/chunk-{ep['data/chunk_index'][i]:03d}/file-{ep['data/file_index'][i]:03d}.parquet"
        idx = pq.read_table(f, columns=["episode_index", "index"]).to_pydict()
        rows = [j for j, e in zip(idx["index"], idx["episode_index"]) if e == i]
        assert rows == list(range(ep["dataset_from_index"][i], ep["dataset_to_index"][i]))
    for f in files[:-1]:  # full files stay under the limit, give or take one episode's share
        assert os.path.getsize(path / f) < 1.1 * 1024 ** 2
    got = read_lerobot(path)
    np.testing.assert_array_equal(got.episode_ends, ends)
    assert got.data["obs"].tobytes() == data["obs"].tobytes()
    assert got.data["action"].tobytes() == data["action"].tobytes()
    assert json.loads((path / "meta/info.json").read_text())["chunks_size"] == 2


# ---------------------------------------------------------------------------------------------- zarr equality
def test_zarr_and_lerobot_readers_agree_on_collected_demos(tmp_path):
    from steerlab.data.collect import collect_particle
    from steerlab.data.collect_nav2d import collect_nav2d

    kw = dict(workers=1, progress=False)
    collect_particle(tmp_path / "p.zarr", n_dim=2, episodes=5, **kw)
    collect_particle(tmp_path / "p-lerobot", n_dim=2, episodes=5, format="lerobot", **kw)
    collect_nav2d(tmp_path / "n.zarr", episodes=2, family="rooms", **kw)
    collect_nav2d(tmp_path / "n-lerobot", episodes=2, family="rooms", format="lerobot", **kw)
    for z, lr in (("p.zarr", "p-lerobot"), ("n.zarr", "n-lerobot")):
        a, b = open_dataset(tmp_path / z), open_dataset(tmp_path / lr)
        assert sorted(a.data) == sorted(b.data)
        for k in a.data:
            assert a.data[k].dtype == b.data[k].dtype and a.data[k].shape == b.data[k].shape, k
            assert a.data[k].tobytes() == b.data[k].tobytes(), k
        np.testing.assert_array_equal(a.episode_ends, b.episode_ends)
        assert a.attrs == {k: v for k, v in b.attrs.items() if k != "lerobot"}
        c = load_episodes(tmp_path / lr, keys=["action"])  # the loader training uses dispatches too
        np.testing.assert_array_equal(c.data["action"], a.data["action"])
    info = json.loads((tmp_path / "p-lerobot/meta/info.json").read_text())
    assert info["fps"] == 20 and len(info["features"]["observation.state"]["names"]) == 8
    info = json.loads((tmp_path / "n-lerobot/meta/info.json").read_text())
    assert info["fps"] == 4 and info["features"]["observation.state"]["shape"] == [6]
    from steerlab.nav.data import load_nav_dataset  # nav2d's loader: "state" comes back under its own key

    assert load_nav_dataset(tmp_path / "n-lerobot").data["state"].shape[1:] == (6,)


# ---------------------------------------------------------------------------------------------- training
def test_particle_training_runs_from_a_lerobot_directory(tmp_path):
    from steerlab.cli import main
    from steerlab.ebm.policy import IBCConfig, LangevinConfig
    from steerlab.train.config import EvalConfig, TrainConfig
    from steerlab.train.loop import train

    out = tmp_path / "demos"
    main(["collect", "particle", "--episodes", "12", "--workers", "1", "--format", "lerobot", "--out", str(out)])
    assert (out / "meta" / "info.json").is_file()
    policy = IBCConfig(width=32, depth=2, num_counter_examples=4, langevin=LangevinConfig(num_steps=5),
                       inference_samples=16, stats_samples=None)
    cfg = TrainConfig(preset="test", dataset=str(out), policy=policy, steps=4, batch_size=16, log_interval=1,
                      ckpt_interval=4, out_dir=str(tmp_path / "runs"), run_name="lr", progress=False,
                      monitor_batch=4, eval=EvalConfig(episodes=2, batch=2))
    run_dir = train(cfg)
    with open(Path(run_dir) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert all(np.isfinite(float(r["loss"])) for r in rows)


def test_collect_command_default_path(tmp_path, monkeypatch):
    from steerlab.cli import main

    monkeypatch.chdir(tmp_path)
    main(["collect", "particle", "--episodes", "2", "--workers", "1", "--format", "lerobot"])
    assert (tmp_path / "data" / "particle-2d-2-lerobot" / "meta" / "info.json").is_file()
    assert open_dataset(tmp_path / "data" / "particle-2d-2-lerobot").n_episodes == 2


# ---------------------------------------------------------------------------------------------- errors
def test_missing_info_json(demo):
    path, _ = demo
    os.remove(path / "meta" / "info.json")
    with pytest.raises(DatasetError, match="no meta/info.json.*copy the dataset whole"):
        open_dataset(path)
    with pytest.raises(DatasetError, match="no meta/info.json"):
        read_lerobot(path)


@pytest.mark.parametrize("version,match", [("v2.1", "older LeRobot format.*convert_dataset_v21_to_v30"),
                                           ("v9.0", "unknown codebase_version 'v9.0'"),
                                           ("banana", "unknown codebase_version 'banana'")])
def test_unknown_codebase_version(demo, version, match):
    path, _ = demo
    _edit_info(path, lambda info: info.update(codebase_version=version))
    with pytest.raises(DatasetError, match=match):
        open_dataset(path)


def test_feature_missing_from_the_parquet(demo):
    path, _ = demo
    _edit_info(path, lambda info: info["features"].update({"observation.extra": {"dtype": "float32", "shape": [3],
                                                                                 "names": None}}))
    with pytest.raises(DatasetError, match=r"data/chunk-000/file-000.parquet has no column\(s\) \['observation.extra'\]"
                                           ".*Remove the feature from meta/info.json"):
        open_dataset(path)
    np.testing.assert_array_equal(open_dataset(path, keys=["obs"]).episode_ends, ENDS)  # other keys still load


def test_episode_index_not_contiguous(demo):
    path, _ = demo
    f = path / "data/chunk-000/file-000.parquet"
    ep = pq.read_table(f).column("episode_index").to_numpy().copy()
    ep[ep == 1] = 2  # episode 1's frames labelled 2: 0, 2, 2, 3
    _rewrite_parquet(f, "episode_index", ep)
    with pytest.raises(DatasetError, match="episode_index is not contiguous: after the frames of episode 0 comes "
                                           "episode 2 .*expected 1"):
        open_dataset(path)


def test_wrong_shape_in_info_json(demo):
    path, _ = demo
    _edit_info(path, lambda info: info["features"]["observation.state"].update(shape=[7]))
    with pytest.raises(DatasetError, match=r"column 'observation.state' has type fixed_size_list.*\[8\].*declares "
                                           r"shape \[7\]"):
        open_dataset(path, keys=["obs"])
    _edit_info(path, lambda info: info["features"]["observation.state"].update(shape=[8]))
    _edit_info(path, lambda info: info["features"]["observation.occupancy"].update(shape=[4, 5]))
    with pytest.raises(DatasetError, match=r"'observation.occupancy'.*declares shape \[4, 5\] \(axis 0 should hold 4"):
        open_dataset(path)


def test_metadata_that_disagrees_with_the_frames(demo):
    path, _ = demo
    _edit_info(path, lambda info: info.update(total_frames=41))
    with pytest.raises(DatasetError, match="says 4 episodes and 41 frames, the data files hold 4 and 40"):
        open_dataset(path)
    _edit_info(path, lambda info: info.update(total_frames=40))
    f = path / "meta/episodes/chunk-000/file-000.parquet"
    _rewrite_parquet(f, "length", [12, 9, 11, 9])
    with pytest.raises(DatasetError, match="meta/episodes gives episode 1 length = 9, the data files 8"):
        open_dataset(path)
    os.remove(f)
    with pytest.raises(DatasetError, match="no meta/episodes/chunk-XXX/file-XXX.parquet"):
        open_dataset(path)


def test_writer_rejects_bad_input_with_what_to_fix(tmp_path):
    data = _demo_data()
    with pytest.raises(ValueError, match=r"key 'obs': shape \[39, 8\] needs one row per step, 40 rows"):
        write_lerobot(tmp_path / "a", {**data, "obs": data["obs"][:-1]}, ENDS, fps=10)
    with pytest.raises(ValueError, match=r"strictly increasing.*episode_ends\[2\] = 20 after 20"):
        write_lerobot(tmp_path / "a", data, [12, 20, 20, 40], fps=10)
    with pytest.raises(ValueError, match="both map to the LeRobot name 'observation.state'"):
        write_lerobot(tmp_path / "a", {"obs": data["obs"], "state": data["obs"]}, ENDS, fps=10)
    with pytest.raises(ValueError, match="one of LeRobot's index columns"):
        write_lerobot(tmp_path / "a", {"obs": data["obs"]}, ENDS, fps=10, names={"obs": "timestamp"})
    with pytest.raises(ValueError, match="fps must be a positive integer"):
        write_lerobot(tmp_path / "a", data, ENDS, fps=2.5)
    with pytest.raises(ValueError, match="non-finite value"):
        bad = data["obs"].copy()
        bad[3, 1] = np.nan
        write_lerobot(tmp_path / "a", {**data, "obs": bad}, ENDS, fps=10)
    with pytest.raises(ValueError, match="task must be a non-empty string or one per episode"):
        write_lerobot(tmp_path / "a", data, ENDS, fps=10, task=["a", "b"])
    with pytest.raises(ValueError, match="dtype <U1 is not supported"):
        write_lerobot(tmp_path / "a", {"obs": np.array(["x"] * 40)}, ENDS, fps=10)
    assert not (tmp_path / "a").exists()
    write_lerobot(tmp_path / "a", data, ENDS, fps=10)
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        write_lerobot(tmp_path / "a", data, ENDS, fps=10)


def test_write_is_atomic(tmp_path, monkeypatch):
    import steerlab.data.lerobot_io as lio

    data = _demo_data()
    path = tmp_path / "d"
    write_lerobot(path, data, ENDS, fps=10, task="first")

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(lio, "_write_episodes_meta", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        write_lerobot(path, _demo_data(seed=5), ENDS, fps=10, task="second", overwrite=True)
    assert os.listdir(tmp_path) == ["d"]  # no staging directory left behind
    got = read_lerobot(path)  # the old dataset is untouched
    assert got.attrs["lerobot"]["tasks"] == ["first"] and got.data["obs"].tobytes() == data["obs"].tobytes()
    monkeypatch.undo()
    write_lerobot(path, _demo_data(seed=5), ENDS, fps=10, task="second", overwrite=True)
    assert read_lerobot(path).attrs["lerobot"]["tasks"] == ["second"] and os.listdir(tmp_path) == ["d"]


def test_zarr_store_still_loads_and_a_plain_directory_is_neither(tmp_path):
    data = _demo_data()
    eps = [{k: v[s:e] for k, v in data.items()} for s, e in zip(np.concatenate([[0], ENDS[:-1]]), ENDS)]
    write_episodes(tmp_path / "z.zarr", eps)
    z = open_dataset(tmp_path / "z.zarr")
    np.testing.assert_array_equal(z.episode_ends, ENDS)
    assert "lerobot" not in z.attrs
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="not a zarr group"):
        open_dataset(tmp_path / "empty")
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(tmp_path / "nope")


def test_the_datasets_library_reads_it_with_lerobots_features(demo):
    """What LeRobot's reader does: ``datasets.Dataset.from_parquet`` with the features LeRobot derives from
    meta/info.json (runs where the ``datasets`` package is installed)."""
    datasets = pytest.importorskip("datasets")
    path, data = demo
    info = json.loads((path / "meta/info.json").read_text())
    hf = {}
    for name, ft in info["features"].items():
        shape = tuple(ft["shape"])
        if shape == (1,):
            hf[name] = datasets.Value(ft["dtype"])
        elif len(shape) == 1:
            hf[name] = datasets.Sequence(length=shape[0], feature=datasets.Value(ft["dtype"]))
        else:
            hf[name] = getattr(datasets, f"Array{len(shape)}D")(shape=shape, dtype=ft["dtype"])
    hf = datasets.Features(hf)
    ds = datasets.Dataset.from_parquet([str(p) for p in sorted((path / "data").glob("*/*.parquet"))], features=hf)
    assert ds.features == hf and len(ds) == 40
    np.testing.assert_array_equal(np.asarray(ds["observation.state"], dtype=np.float32), data["obs"])
    np.testing.assert_array_equal(np.asarray(ds["observation.ref_traj"], dtype=np.float32), data["ref_traj"])


def test_reads_a_dataset_written_the_way_lerobot_writes_it(tmp_path):
    """Frames through ``datasets`` (Dataset.from_dict with LeRobot's features, then a ParquetWriter), episode rows
    through ``pa.Table.from_pydict``, tasks through pandas, a video_path template and no meta/steerlab.json: the
    reader maps the names back and finds the episodes (runs where ``datasets`` and ``pandas`` are installed)."""
    datasets = pytest.importorskip("datasets")
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(4)
    lengths = [5, 7]
    total = sum(lengths)
    state = rng.standard_normal((total, 3)).astype(np.float32)
    action = rng.standard_normal((total, 2)).astype(np.float32)
    reward = rng.random(total).astype(np.float32)
    root = tmp_path / "foreign"
    (root / "data/chunk-000").mkdir(parents=True)
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    features = {"observation.state": {"dtype": "float32", "shape": [3], "names": ["a", "b", "c"]},
                "action": {"dtype": "float32", "shape": [2], "names": None},
                "next.reward": {"dtype": "float32", "shape": [1], "names": None},
                "observation.images.top": {"dtype": "video", "shape": [8, 8, 3], "names": ["height", "width", "channel"]},
                **{n: {"dtype": d, "shape": [1], "names": None} for n, d in INDEX_FEATURES.items()}}
    hf = datasets.Features({
        "observation.state": datasets.Sequence(length=3, feature=datasets.Value("float32")),
        "action": datasets.Sequence(length=2, feature=datasets.Value("float32")),
        **{n: datasets.Value(features[n]["dtype"]) for n in ["next.reward", *INDEX_FEATURES]}})
    writer = None
    start = 0
    for e, n in enumerate(lengths):
        rows = slice(start, start + n)
        ep = datasets.Dataset.from_dict({
            "observation.state": state[rows], "action": action[rows], "next.reward": reward[rows],
            "timestamp": [i / 10 for i in range(n)], "frame_index": list(range(n)), "episode_index": [e] * n,
            "index": list(range(start, start + n)), "task_index": [0] * n}, features=hf)
        table = ep.with_format("arrow")[:]
        if writer is None:
            writer = pq.ParquetWriter(root / "data/chunk-000/file-000.parquet", table.schema, compression="snappy",
                                      use_dictionary=True)
        writer.write_table(table)
        start += n
    writer.close()
    pq.write_table(pa.Table.from_pydict({
        "episode_index": [0, 1], "tasks": [["push"], ["push"]], "length": lengths,
        "data/chunk_index": [0, 0], "data/file_index": [0, 0], "dataset_from_index": [0, 5],
        "dataset_to_index": [5, 12], "stats/action/mean": [[0.0, 0.0], [0.0, 0.0]],
        "meta/episodes/chunk_index": [0, 0], "meta/episodes/file_index": [0, 0]}),
        root / "meta/episodes/chunk-000/file-000.parquet")
    pd.DataFrame({"task_index": [0]}, index=pd.Index(["push"], name="task")).to_parquet(root / "meta/tasks.parquet")
    info = {"codebase_version": "v3.0", "fps": 10, "features": features, "total_episodes": 2, "total_frames": total,
            "total_tasks": 1, "chunks_size": 1000, "data_files_size_in_mb": 100, "video_files_size_in_mb": 200,
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
            "robot_type": "so101", "splits": {"train": "0:2"}}
    (root / "meta/info.json").write_text(json.dumps(info, indent=4))
    got = open_dataset(root)
    assert sorted(got.data) == ["action", "next.reward", "obs"]  # the video feature is listed, not decoded
    np.testing.assert_array_equal(got.episode_ends, [5, 12])
    assert got.data["obs"].tobytes() == state.tobytes() and got.data["action"].tobytes() == action.tobytes()
    assert got.data["next.reward"].shape == (12, 1)  # a shape-(1,) feature of a foreign dataset: [T, 1]
    assert got.attrs["lerobot"]["tasks"] == ["push"] and got.attrs["lerobot"]["robot_type"] == "so101"
    with pytest.raises(DatasetError, match="stored as video, which steerlab does not decode"):
        open_dataset(root, keys=["observation.images.top"])
