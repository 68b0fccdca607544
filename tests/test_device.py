"""--device: resolution, the error without a GPU, and a CPU run through the CLI that loads on the CPU."""

import dataclasses

import pytest
import torch

from steerlab.hw import module_device, resolve_device, to_device
from steerlab.train.config import RESUMABLE_FIELDS, ConfigError, TrainConfig, validate_config


def test_auto_and_cpu_resolve_here():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_cuda_without_gpu_names_the_fix():
    with pytest.raises(ValueError, match="--device cpu"):
        resolve_device("cuda")


def test_device_field_checked_and_resumable():
    assert TrainConfig().device == "cpu" and "device" in RESUMABLE_FIELDS
    with pytest.raises(ConfigError, match="config.device"):
        validate_config(dataclasses.replace(TrainConfig(), device="tpu"))


def test_to_device_and_module_device():
    out = to_device({"a": torch.zeros(2), "b": [torch.ones(1)], "c": 3}, "cpu")
    assert out["a"].device.type == "cpu" and out["c"] == 3 and isinstance(out["b"], list)
    assert module_device(torch.nn.Linear(2, 2)).type == "cpu" and module_device(object()).type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_train_cli_cuda_without_gpu_is_a_clear_error(tmp_path):
    from steerlab.cli import main

    with pytest.raises(SystemExit, match="--device cpu"):
        main(["train", "mse-particle", "--device", "cuda", "--out-dir", str(tmp_path), "--steps", "1"])
    assert not (tmp_path / "mse-particle-2d-s0").exists()  # nothing written


def test_cpu_train_and_eval_through_the_cli(tmp_path):
    from steerlab.cli import main
    from steerlab.eval.run import load_run

    args = ["--device", "cpu", "--out-dir", str(tmp_path), "--run-name", "r", "--steps", "3", "--episodes", "5",
            "--dataset", str(tmp_path / "d.zarr"), "--eval.episodes", "2", "--no-progress"]
    main(["collect", "particle", "--episodes", "5", "--out", str(tmp_path / "d.zarr")])
    main(["train", "mse-particle", *args, "--no-eval"])
    main(["eval", str(tmp_path / "r"), "--device", "cpu", "--episodes", "2"])
    assert (tmp_path / "r" / "metrics.json").exists()
    cfg, policy, _ = load_run(tmp_path / "r", device="cpu")
    assert cfg.device == "cpu" and module_device(policy).type == "cpu"
