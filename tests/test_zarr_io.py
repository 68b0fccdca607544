import json
import os

import numcodecs
import numpy as np
import pytest
import zarr

from steerlab.data.collect import collect_particle
from steerlab.data.zarr_io import DatasetError, EpisodeData, load_episodes, write_episodes
from steerlab.envs.particle import OBS_KEYS, flatten_obs


def _episodes(lengths=(3, 5, 2), n=2, seed=0):
    rng = np.random.default_rng(seed)
    return [{"obs": rng.random((t, 4 * n)).astype(np.float32), "action": rng.random((t, n)).astype(np.float32),
             "step": np.arange(t, dtype=np.int64)} for t in lengths]


def _leftovers(tmp_path):
    return [p for p in os.listdir(tmp_path) if ".tmp-" in p or ".old-" in p]


# ----------------------------------------------------------------------------- round trip
def test_round_trip(tmp_path):
    path = tmp_path / "d.zarr"
    eps = _episodes()
    attrs = {"env_id": "steerlab/Particle-v0", "n_dim": np.int64(2), "seed": 0, "oracle": "x"}
    write_episodes(path, eps, attrs=attrs, chunk_len=4)
    assert _leftovers(tmp_path) == []
    d = load_episodes(path)
    assert isinstance(d, EpisodeData)
    np.testing.assert_array_equal(d.episode_ends, [3, 8, 10])
    assert d.episode_ends.dtype == np.int64
    assert d.n_episodes == 3 and d.n_steps == 10
    assert d.episode_slices() == [slice(0, 3), slice(3, 8), slice(8, 10)]
    assert d.attrs == {"env_id": "steerlab/Particle-v0", "n_dim": 2, "seed": 0, "oracle": "x"}
    assert sorted(d.data) == ["action", "obs", "step"]
    for i, ep in enumerate(eps):
        for k, v in ep.items():
            np.testing.assert_array_equal(d.episode(i)[k], v)
            assert d.data[k].dtype == v.dtype
    # subset of keys; zarr format 2 on disk (readable by zarr 2 / diffusion_policy)
    assert sorted(load_episodes(path, keys=["action"]).data) == ["action"]
    assert os.path.exists(path / ".zgroup") and os.path.exists(path / "data" / "obs" / ".zarray")
    meta = json.loads((path / "meta" / "episode_ends" / ".zarray").read_text())
    assert meta["dtype"] == "<i8"


def test_overwrite_and_exists(tmp_path):
    path = tmp_path / "d.zarr"
    write_episodes(path, _episodes())
    with pytest.raises(FileExistsError, match="overwrite"):
        write_episodes(path, _episodes(lengths=(4,)))
    write_episodes(path, _episodes(lengths=(4,)), overwrite=True)
    assert load_episodes(path).n_steps == 4
    assert _leftovers(tmp_path) == []


def test_failed_write_leaves_no_tmp(tmp_path):
    path = tmp_path / "d.zarr"
    with pytest.raises(ValueError, match="first .*time.* axis"):
        write_episodes(path, [{"obs": np.zeros((3, 2)), "action": np.zeros((2, 1))}])
    with pytest.raises(ValueError, match="JSON"):
        write_episodes(path, _episodes(), attrs={"bad": object()})
    assert os.listdir(tmp_path) == []


def test_reads_diffusion_policy_style_raw_store_v2_and_v3(tmp_path):
    for fmt in (2, 3):
        path = str(tmp_path / f"dp{fmt}.zarr")
        root = zarr.open_group(path, mode="w", zarr_format=fmt)
        data = root.create_group("data")
        meta = root.create_group("meta")
        kw = {"compressor": numcodecs.Blosc("lz4")} if fmt == 2 else {}
        for key, shape, dtype in [("state", (7, 5), "f4"), ("action", (7, 2), "f4"), ("img", (7, 4, 4, 3), "u1"),
                                  ("keypoint", (7, 9, 2), "f8")]:
            a = data.create_array(key, shape=shape, dtype=dtype, chunks=(3, *shape[1:]), **kw)
            a[...] = np.arange(np.prod(shape)).reshape(shape).astype(dtype)
        meta.create_array("episode_ends", shape=(2,), dtype="i8")[...] = [4, 7]
        d = load_episodes(path, keys=["state", "action"])
        assert sorted(d.data) == ["action", "state"]
        np.testing.assert_array_equal(d.data["state"], np.arange(35).reshape(7, 5))
        assert load_episodes(path).data["img"].shape == (7, 4, 4, 3)
        assert d.attrs == {}


# ----------------------------------------------------------------------------- errors
def _raw_store(path, ends=(3, 5), length=5, nan_at=None, with_meta=True):
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    x = np.zeros((length, 3), np.float32)
    if nan_at is not None:
        x[nan_at] = np.nan
        x[-1, -1] = np.inf
    root.create_group("data").create_array("obs", shape=x.shape, dtype=x.dtype)[...] = x
    root["data"].create_array("action", shape=(length, 1), dtype="f4")[...] = 0.5
    if with_meta:
        root.create_group("meta").create_array("episode_ends", shape=(len(ends),), dtype="i8")[...] = list(ends)
    return str(path)


def test_error_missing_path_and_not_a_group(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_episodes(tmp_path / "nope.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DatasetError, match="not a zarr group"):
        load_episodes(tmp_path / "plain")


def test_error_missing_episode_ends(tmp_path):
    with pytest.raises(DatasetError, match="meta/episode_ends"):
        load_episodes(_raw_store(tmp_path / "a.zarr", with_meta=False))


def test_error_missing_key_lists_available(tmp_path):
    path = _raw_store(tmp_path / "a.zarr")
    with pytest.raises(DatasetError, match=r"\['pos_agent'\].*available keys: \['action', 'obs'\]"):
        load_episodes(path, keys=["obs", "pos_agent"])


def test_error_length_mismatch(tmp_path):
    with pytest.raises(DatasetError, match="data/\\w+ has length 5 but meta/episode_ends\\[-1\\] = 6"):
        load_episodes(_raw_store(tmp_path / "a.zarr", ends=(3, 6)))


def test_error_not_strictly_increasing(tmp_path):
    with pytest.raises(DatasetError, match=r"strictly increasing.*episode_ends\[1\] = 3 after 3"):
        load_episodes(_raw_store(tmp_path / "a.zarr", ends=(3, 3, 5)))


def test_error_nan_reports_key_count_and_index(tmp_path):
    path = _raw_store(tmp_path / "a.zarr", nan_at=(3, 1))
    with pytest.raises(DatasetError, match=r"data/obs has 2 non-finite .*first at index \(3, 1\) \(episode 1\)"):
        load_episodes(path)
    assert load_episodes(path, keys=["action"]).n_steps == 5  # only loaded keys are checked


# ----------------------------------------------------------------------------- collect
def test_collect_worker_count_invariant(tmp_path):
    r1 = collect_particle(tmp_path / "w1.zarr", n_dim=2, episodes=6, seed=3, workers=1, progress=False)
    r2 = collect_particle(tmp_path / "w2.zarr", n_dim=2, episodes=6, seed=3, workers=2, progress=False)
    assert r1["episodes"] == 6 and r1["steps"] == 300 and r1["success_rate"] == 1.0
    assert {"episodes", "steps", "success_rate", "seconds", "path"} <= set(r1)
    a, b = load_episodes(r1["path"]), load_episodes(r2["path"])
    assert sorted(a.data) == sorted(["obs", "action", *OBS_KEYS])
    for k in a.data:
        np.testing.assert_array_equal(a.data[k], b.data[k])
        assert a.data[k].dtype == np.float32
    np.testing.assert_array_equal(a.episode_ends, np.arange(1, 7) * 50)
    assert a.data["obs"].shape == (300, 8) and a.data["action"].shape == (300, 2)
    np.testing.assert_array_equal(a.data["obs"], flatten_obs(a.data))
    assert a.attrs["n_success"] == 6 and a.attrs["n_dim"] == 2 and a.attrs["seed"] == 3
    assert a.attrs["env_id"] == "steerlab/Particle-v0" and a.attrs["multimodal"] is False
    assert "steerlab_version" in a.attrs and a.attrs["episodes"] == 6
    # episode 1 used env seed 4: obs[0] is the reset observation, action[0] the oracle's first action (g0)
    from steerlab.envs.particle import ParticleEnv

    obs0, _ = ParticleEnv(n_dim=2).reset(seed=4)
    ep1 = a.episode(1)
    np.testing.assert_array_equal(ep1["obs"][0], flatten_obs(obs0))
    np.testing.assert_array_equal(ep1["action"][0], obs0["pos_first_goal"])
    with pytest.raises(FileExistsError):
        collect_particle(tmp_path / "w1.zarr", n_dim=2, episodes=2, workers=1, progress=False)
    assert _leftovers(tmp_path) == []
