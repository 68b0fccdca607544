"""Loading a policy for inference: from a run directory of ``steerlab train`` or from a directory written by
:meth:`steerlab.policy.Policy.save` (LeRobot's ``from_pretrained`` / ``save_pretrained`` pair).

Loading builds the policy through :mod:`steerlab.registry` and reads its weights; it imports neither the training
loop nor the evaluation and plotting modules.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from steerlab.hw import resolve_device
from steerlab.policy import SAVED_POLICY_FORMAT, Policy
from steerlab.registry import build_policy
from steerlab.train.checkpoint import CheckpointError, check_sha256, latest_checkpoint, load_meta, load_weights, read_safetensors
from steerlab.train.config import TrainConfig, config_from_dict_policy, from_dict

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def load_policy(path: str | Path, *, ema: bool | None = None, device: str | torch.device = "cpu") -> Policy:
    """The policy stored at ``path``, in eval mode on ``device`` ("cpu", "cuda", "auto").

    ``path`` is either a run directory written by ``steerlab train`` (its latest checkpoint; the EMA weights when
    the run has them, unless ``ema=False``) or a directory written by ``policy.save(path)``."""
    path = Path(path)
    data = _read_json(path / CONFIG_NAME) if (path / CONFIG_NAME).is_file() else None
    if isinstance(data, dict) and data.get("format") == SAVED_POLICY_FORMAT:
        if ema:
            raise ValueError(f"{path} holds one set of weights (written by policy.save); ema=True applies to run "
                             f"directories only")
        return _load_saved(path, data, device)
    if data is not None:
        return load_run_policy(path, ema=ema, device=device)[1]
    if (path / WEIGHTS_NAME).exists():
        raise CheckpointError(f"{path} holds {WEIGHTS_NAME} but no {CONFIG_NAME}; restore {CONFIG_NAME}, or save the "
                              f"policy again with policy.save({str(path)!r})")
    raise CheckpointError(f"{path} is not a run directory (no {CONFIG_NAME} and checkpoints/, as `steerlab train` "
                          f"writes) nor a saved policy (no {CONFIG_NAME} and {WEIGHTS_NAME}, as policy.save writes)")


def load_run_policy(run_dir: str | Path, ema: bool | None = None, device: str | torch.device | None = "cpu"):
    """``(cfg, policy, checkpoint_path)`` of a run directory (latest checkpoint; EMA weights when the run has them),
    the policy on ``device`` ("auto", "cpu", "cuda"; None: the run's own ``device``). Checkpoints hold CPU tensors,
    so a run trained on either device loads on either."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_NAME).exists():
        raise CheckpointError(f"{run_dir} is not a run directory (no config.json); pass the directory `steerlab train` wrote")
    cfg = from_dict(TrainConfig, _read_json(run_dir / CONFIG_NAME), "config.json")
    ckpt = latest_checkpoint(run_dir)
    meta = load_meta(ckpt)
    use_ema = cfg.ema_decay is not None if ema is None else ema
    if use_ema and cfg.ema_decay is None:
        raise CheckpointError(f"{run_dir} was trained without EMA weights (ema_decay is None); load it with ema=False")
    policy = build_policy(cfg.policy, meta["obs_dim"], meta["act_dim"])
    _load_state(policy, load_weights(ckpt, ema=use_ema), ckpt)
    return cfg, _ready(policy, cfg.device if device is None else device), ckpt


def _load_saved(path: Path, data: dict, device) -> Policy:
    where = path / CONFIG_NAME
    missing = [k for k in ("kind", "policy", "obs_dim", "act_dim") if k not in data]
    if missing:
        raise CheckpointError(f"{where} lacks {missing}; save the policy again with policy.save")
    if not isinstance(data["policy"], dict):
        raise CheckpointError(f"{where}: 'policy' must be the policy config as a mapping, got {data['policy']!r}")
    cfg = config_from_dict_policy({**data["policy"], "kind": data["kind"]}, f"{where}: policy")
    weights = path / WEIGHTS_NAME
    remedy = f"save the policy again with policy.save({str(path)!r}), or restore the file"
    if not weights.exists():
        raise CheckpointError(f"{weights} is missing: {path} holds the config of a saved policy but not its weights; "
                              f"{remedy}")
    check_sha256(weights, data.get("files", {}).get(WEIGHTS_NAME), remedy)
    policy = build_policy(cfg, data["obs_dim"], data["act_dim"])
    _load_state(policy, read_safetensors(weights, remedy), weights)
    return _ready(policy, device)


def _load_state(policy: Policy, state: dict[str, torch.Tensor], source: Path) -> None:
    """Load ``state`` into ``policy``; a :class:`CheckpointError` naming the keys or shapes that do not fit."""
    try:
        missing, unexpected = policy.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shapes that disagree with the config
        raise CheckpointError(f"{source}: weights do not match the config: {e}") from None
    if missing or unexpected:
        raise CheckpointError(f"{source}: weights do not match the config: missing {missing}, unexpected {unexpected}")


def _ready(policy: Policy, device) -> Policy:
    policy.to(resolve_device(str(device)))
    return policy.eval()


def _read_json(f: Path):
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{f} is unreadable ({e}); restore it") from None
