"""Command line: help texts, presets, overrides from flags and files, clear errors."""

import json

import pytest

from steerlab.cli import main, resolve_train_config
from steerlab.presets import PRESETS, get_preset
from steerlab.train.config import TrainConfig, config_to_dict, from_dict


def test_help_texts(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "steerlab demo" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in PRESETS)
    with pytest.raises(SystemExit) as e:
        main(["train", "ibc-particle-langevin", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--policy.num-counter-examples" in out and "--n-dim" in out and "--max-minutes" in out
    for cmd in ("eval", "collect", "demo", "noise", "intent", "presets"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0


def test_flag_and_file_overrides(tmp_path):
    f = tmp_path / "o.yaml"
    f.write_text("batch_size: 64\npolicy:\n  langevin:\n    num_steps: 7\n")
    cfg = resolve_train_config("ibc-particle-langevin", ["--n-dim", "8", "--config-file", str(f), "--lr", "3e-4"])
    assert (cfg.n_dim, cfg.batch_size, cfg.lr, cfg.policy.langevin.num_steps) == (8, 64, 3e-4, 7)
    assert cfg.policy.num_counter_examples == 8 and cfg.preset == "ibc-particle-langevin"
    # flags win over the file
    cfg = resolve_train_config("ibc-particle-langevin", ["--config-file", str(f), "--batch-size", "32"])
    assert cfg.batch_size == 32
    j = tmp_path / "o.json"
    j.write_text(json.dumps({"policy": {"width": 64}}))
    assert resolve_train_config("mse-particle", ["--config-file", str(j)]).policy.width == 64


def test_config_round_trip_through_json():
    for name in PRESETS:
        cfg = get_preset(name)
        assert from_dict(TrainConfig, json.loads(json.dumps(config_to_dict(cfg)))) == cfg


def test_bad_input_errors(tmp_path, capsys):
    for argv, choices in ((["train", "nope"], PRESETS), (["fly"], ["demo", "collect", "train", "eval", "noise"])):
        with pytest.raises(SystemExit) as e:  # tyro names the bad choice and the valid ones
            main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert argv[-1] in err and all(c in err for c in choices)
    with pytest.raises(KeyError, match="unknown preset 'nope'"):
        resolve_train_config("nope", [])
    f = tmp_path / "bad.yaml"
    f.write_text("policy:\n  widht: 64\n")
    with pytest.raises(SystemExit, match="unknown key.*widht"):
        main(["train", "mse-particle", "--config-file", str(f)])
    with pytest.raises(SystemExit, match="does not exist"):
        main(["train", "mse-particle", "--config-file", str(tmp_path / "missing.yaml")])
    with pytest.raises(SystemExit, match="not a run directory"):
        main(["eval", str(tmp_path)])
    with pytest.raises(SystemExit):  # tyro rejects an unknown flag
        main(["train", "mse-particle", "--no-such-flag", "1"])


def test_train_a_flow_policy_then_optimize_its_noise(tmp_path, particle2d):
    """`steerlab train flow-particle` on a tiny budget, then `steerlab noise` with the seed's parameter file:
    the outputs exist, the gradient reached z0, and maximizing the goal distance raised it."""
    from safetensors.torch import load_file

    main(["train", "flow-particle", "--steps", "30", "--dataset", str(particle2d), "--out-dir", str(tmp_path),
          "--run-name", "flow", "--no-progress", "--eval.episodes", "4", "--eval.batch", "4",
          "--policy.denoiser.width", "32", "--policy.denoiser.depth", "2", "--batch-size", "32"])
    params = tmp_path / "params_learnable.json"
    params.write_text(json.dumps({"learn_noise": True, "noise_steps": 5, "noise_lr": 0.1, "learnable_step_noise": True}))
    main(["noise", str(tmp_path / "flow"), "--direction", "maximize", "--episodes", "3", "--params-file", str(params),
          "--no-progress", "--out", str(tmp_path / "nz")])
    res = json.loads((tmp_path / "nz" / "result.json").read_text())
    assert res["args"]["steps"] == 5 and res["args"]["noise_mode"] == "from_seed" and res["steps"] == 5
    assert res["grad_report"]["max_abs"] > 0
    assert all(b >= i for b, i in zip(res["best_loss"], res["initial_loss"]))
    t = load_file(str(tmp_path / "nz" / "noise.safetensors"))
    assert t["z_opt"].shape == t["z_init"].shape == (3, 16, 2)
    assert (tmp_path / "nz" / "loss.png").exists() and (tmp_path / "nz" / "chunks.png").exists()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"noise_stepz": 3}))
    with pytest.raises(SystemExit, match="unknown key 'noise_stepz'"):
        main(["noise", str(tmp_path / "flow"), "--params-file", str(bad)])


def test_collect_nav2d_command(tmp_path):
    from steerlab.data.zarr_io import load_episodes

    out = tmp_path / "nav.zarr"
    main(["collect", "nav2d", "--episodes", "2", "--workers", "1", "--out", str(out), "--family", "rooms"])
    data = load_episodes(str(out), keys=["occupancy", "action", "ref_traj", "goal_pos"])
    assert data.data["occupancy"].shape[1:] == (32, 32) and data.data["action"].shape[1:] == (16,)
    assert data.data["ref_traj"].shape[1:] == (32, 2) and len(data.episode_ends) >= 1


def test_demo_runs_end_to_end_and_reports_what_it_measured(tmp_path, monkeypatch, capsys):
    """A miniature demo: collect (the default dataset), train, evaluate, stress-test, and a demo.md whose numbers
    are the run's own."""
    monkeypatch.chdir(tmp_path)
    main(["demo", "--demos", "30", "--steps", "30", "--episodes", "4", "--stress-episodes", "3", "--budget-nfe", "20",
          "--run-name", "mini"])
    assert "default dataset data/particle-2d-30.zarr not found: collecting 30 oracle demos" in capsys.readouterr().out
    assert (tmp_path / "data" / "particle-2d-30.zarr").exists()
    run = tmp_path / "runs" / "mini"
    report = (run / "demo.md").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    stress = json.loads((run / "stress.json").read_text())
    assert [r["method"] for r in stress["rows"]] == ["own noise", "best-of-N", "gradient"]
    assert all(r["episodes"] == 3 for r in stress["rows"])
    assert f"**{100 * metrics['success_rate']:.0f}%**" in report
    for r in stress["rows"]:
        assert f"| {r['method']} | {r['failures']}/3 |" in report
    assert "## Expected" in report and "## Next" in report and "steerlab noise" in report
    assert "below the expected 90%" in report  # 30 steps cannot reach it, and the report says so
    with pytest.raises(SystemExit, match="--budget-nfe must be a positive integer"):
        main(["demo", "--budget-nfe", "0"])
