"""Command line: help texts, presets, overrides from flags and files, clear errors."""

import json

import pytest

from steerlab.cli import main, resolve_train_config
from steerlab.presets import PRESETS, get_preset
from steerlab.train.config import TrainConfig, config_to_dict, from_dict


def test_help_texts(capsys):
    main(["--help"])
    assert "steerlab demo" in capsys.readouterr().out
    main(["train", "--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in PRESETS)
    with pytest.raises(SystemExit) as e:
        main(["train", "ibc-particle-langevin", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--policy.num-counter-examples" in out and "--n-dim" in out and "--max-minutes" in out
    for cmd in ("eval", "collect", "demo"):
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


def test_bad_input_errors(tmp_path):
    with pytest.raises(SystemExit, match="unknown preset 'nope'"):
        main(["train", "nope"])
    with pytest.raises(SystemExit, match="unknown command"):
        main(["fly"])
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
