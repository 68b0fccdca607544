"""The run configuration: one frozen dataclass that holds every hyper-parameter of a run.

``TrainConfig.policy`` is a config of any registered policy (:mod:`steerlab.registry`); its ``kind`` tells
which, so a ``config.json`` written by a run can be read back by :func:`from_dict`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Literal, TypeVar, Union

from steerlab.ebm.policy import IBCConfig
from steerlab.registry import UnknownPolicyError, policy_entry, registered_kinds

#: the policy config of a :class:`TrainConfig`: any registered policy's config
P = TypeVar("P")


@dataclass(frozen=True)
class EvalConfig:
    episodes: int = 100
    """evaluation episodes; episode i uses env seed seed0 + i"""
    seed0: int = 100_000
    """first env seed of evaluation (far from the demo seeds 0..episodes-1)"""
    batch: int = 100
    """environments stepped together (one batched policy call per step)"""
    inference_seed: int = 0
    """seed of the policy's sampling generator during evaluation"""
    nav_rerank: int = 0
    """nav2d: draw this many chunks per decision and execute the first that keeps the robot radius + nav_safety_margin
    from the occupied pixels of the robot's egocentric image (steerlab.nav.safety); 0: the single draw"""
    nav_execute_waypoints: int | None = None
    """nav2d: execute only the first W of the 8 waypoints per decision (receding horizon); None: all"""
    nav_safety_margin: float = 0.01
    """nav2d: clearance beyond the robot radius a re-ranked chunk must keep"""


@dataclass(frozen=True)
class TrainConfig(Generic[P]):
    """A whole run. Every field can be overridden on the command line or from a JSON/YAML file."""

    preset: str = "custom"
    """name of the preset this run started from (informational)"""
    env: str = "particle"
    """task: 'particle' (steerlab/Particle-v0), 'nav2d' (steerlab/Nav2D-v0, the nav policy) or 'particle-wm' (a
    world model of future particle positions given the state and a plan; needs --dataset, see
    steerlab.data.collect_wm; no rollout evaluation), 'metaworld/<task>' (a MetaWorld task from state, e.g.
    metaworld/push-v3); any name registered in steerlab.tasks"""
    n_dim: int = 2
    """particle dimension N (observations 4N, actions N)"""
    episodes: int = 2000
    """demonstrations in the default dataset (part of its name; the count collected when it is missing); a
    --dataset store has its own count, which the run's report states"""
    multimodal: bool = False
    """use the multimodal oracle for demonstrations"""
    demo_noise: float = 0.0
    """nav2d and metaworld/<task>: DART noise injection of the collector (std in action units; `steerlab collect
    nav2d|metaworld --action-noise`), applied to half the decisions; 0: noise-free demonstrations"""
    dataset: str | None = None
    """an existing zarr dataset or LeRobot v3 directory; a missing path is an error (create it with `steerlab
    collect <task> --out PATH`). Without it: data/particle-<N>d-<episodes>.zarr (nav2d:
    data/nav2d-mixed-<episodes>[-dart..].zarr, metaworld/<task>: data/metaworld-<task>-<episodes>[-mm][-dart..].zarr),
    collected if missing"""
    policy: P = field(default_factory=IBCConfig)
    """the policy and all its hyper-parameters"""
    steps: int = 100_000
    """optimizer steps"""
    batch_size: int = 512
    """global batch size (split across processes under torchrun)"""
    lr: float = 1e-3
    """initial learning rate"""
    optimizer: Literal["adam", "adam_keras", "adamw"] = "adam"
    """'adam' (torch.optim.Adam, eps 1e-8), 'adam_keras' (Keras' Adam as IBC trains with it: eps 1e-7 added to
    sqrt(v) after the bias correction is folded into the step size, see steerlab.train.optim) or 'adamw'
    (diffusion_policy)"""
    betas: tuple[float, float] = (0.9, 0.999)
    lr_schedule: Literal["tf_exponential", "cosine", "constant"] = "tf_exponential"
    """tf_exponential: lr0 * rate ** (step / decay_steps) (IBC); cosine: to 0 at `steps` after a linear
    warm-up (diffusion_policy)"""
    lr_decay_rate: float = 0.99
    """TF ExponentialDecay rate: lr = lr0 * rate ** (step / decay_steps), not staircase"""
    lr_decay_steps: int = 100
    warmup_steps: int = 0
    """linear warm-up steps of the cosine schedule"""
    weight_decay: float = 0.0
    ema_decay: float | None = None
    """EMA of the weights (None: off); evaluation uses the EMA weights when on"""
    seed: int = 0
    """seed of initialization, batches and counter-examples"""
    max_minutes: float | None = None
    """wall-clock budget of the training loop; stops (and checkpoints) when reached"""
    log_interval: int = 100
    ckpt_interval: int = 1000
    keep_checkpoints: int = 2
    eval_interval: int = 0
    """evaluate every this many steps (0: only at the end)"""
    monitor_batch: int = 16
    """rows used for the monitor metrics at each log (from the held-out episodes when val_episodes > 0)"""
    val_episodes: int = 0
    """hold out the dataset's last episodes from training; the monitor metrics are computed on them"""
    eval: EvalConfig = field(default_factory=EvalConfig)
    threads: int | None = None
    """torch intra-op threads (None: torch's default)"""
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    """where the policy, batches and sampling generators live: auto (CUDA when a GPU is visible, else the CPU),
    cpu or cuda; checkpoints hold CPU tensors, so a run may resume or be evaluated on the other device"""
    out_dir: str = "runs"
    """parent of run directories"""
    run_name: str | None = None
    """run directory name; default <preset>-<N>d-s<seed>"""
    progress: bool = True
    """show progress bars"""

    def dataset_path(self) -> Path:
        if self.dataset:
            return Path(self.dataset)
        from steerlab.tasks import get_task

        return get_task(self.env).default_dataset_path(self)

    def run_dir(self) -> Path:
        from steerlab.tasks import get_task

        return Path(self.out_dir) / (self.run_name or f"{self.preset}{get_task(self.env).run_dir_suffix(self)}-s{self.seed}")


def config_to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


class ConfigError(ValueError):
    """A configuration value of the wrong type or out of range; the message names the key, what it expects and
    what it got."""


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}"
        return f"a list of {len(args)} ({', '.join(_type_name(a) for a in args)})"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _bad(where: str, tp, value) -> ConfigError:
    return ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _number(value, where: str, tp):
    """``value`` as a float: numbers, and strings that spell one ("1e-3", which YAML 1.1 reads as a string)."""
    if isinstance(value, bool):
        raise _bad(where, tp, value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise _bad(where, tp, value)


def _convert(tp, value, where: str):
    """Build a value of declared type ``tp`` from JSON/YAML data (dataclasses recursively, policy configs and
    unions of configs by ``kind``), or raise :class:`ConfigError` naming the key, the expected type and the value."""
    if isinstance(tp, TypeVar):  # TrainConfig.policy: the registered config class of the value's kind
        return config_from_dict_policy(value, where)
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            if len(args) < len(typing.get_args(tp)):
                return None
            raise _bad(where, tp, value)
        dcs = [a for a in args if dataclasses.is_dataclass(a)]
        if dcs:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: expected a mapping with a 'kind' key, got {value!r}")
            kind = value.get("kind")
            for a in dcs:
                if kind is None or a.__dataclass_fields__["kind"].default == kind:
                    return _convert(a, value, where)
            known = sorted(a.__dataclass_fields__["kind"].default for a in dcs)
            raise ConfigError(f"{where}: unknown kind {kind!r}; known: {known}")
        for a in args:
            try:
                return _convert(a, value, where)
            except ConfigError:
                pass
        raise _bad(where, tp, value)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices and not isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool) and str(value) in choices:
            return str(value)  # YAML reads `norm: 2` as a number
        raise _bad(where, tp, value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise _bad(where, tp, value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        x = _number(value, where, tp)
        if math.isfinite(x) and x == int(x):
            return int(x)
        raise _bad(where, tp, value)
    if tp is float:
        return _number(value, where, tp)
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _bad(where, tp, value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _bad(where, tp, value)
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise _bad(where, tp, value)
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    return value


def from_dict(cls, data: dict, where: str = "config"):
    """``cls(**data)`` recursively, with an error naming unknown keys."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown} for {cls.__name__}; valid keys: {sorted(names)}")
    return cls(**{k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()})


def merge(cfg, overrides: dict, where: str = "config"):
    """A copy of dataclass ``cfg`` with ``overrides`` (nested dicts) applied; unknown keys are errors."""
    hints = typing.get_type_hints(type(cfg))
    names = {f.name for f in dataclasses.fields(cfg)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown} for {type(cfg).__name__}; valid keys: {sorted(names)}")
    changes = {}
    for k, v in overrides.items():
        cur = getattr(cfg, k)
        if dataclasses.is_dataclass(cur) and isinstance(v, dict):
            if "kind" in v and v["kind"] != getattr(cur, "kind", v["kind"]):
                changes[k] = _convert(hints[k], v, f"{where}.{k}")
            else:
                changes[k] = merge(cur, v, f"{where}.{k}")
        else:
            changes[k] = _convert(hints[k], v, f"{where}.{k}")
    return dataclasses.replace(cfg, **changes)


def load_config_file(path: str | Path) -> dict:
    """Read a JSON or YAML file of overrides."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"config file {p} does not exist")
    try:
        text = p.read_text()
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p} is not UTF-8 text: {e}") from None
    try:
        if p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except ValueError as e:  # json.JSONDecodeError
        raise ConfigError(f"{p} is not valid JSON: {e}") from None
    except Exception as e:  # yaml.YAMLError and its subclasses
        raise ConfigError(f"{p} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of config keys, got {type(data).__name__}")
    if any(not isinstance(k, str) for k in _all_keys(data)):
        raise ConfigError(f"{p}: every key must be a string, got {[k for k in _all_keys(data) if not isinstance(k, str)]}")
    return data


def _all_keys(data: dict):
    for k, v in data.items():
        yield k
        if isinstance(v, dict):
            yield from _all_keys(v)


def config_from_dict_policy(data: dict, where: str = "policy"):
    """A policy config from its JSON form (``kind`` picks the registered class)."""
    if not isinstance(data, dict) or "kind" not in data:
        raise ConfigError(f"{where}: expected a mapping with a 'kind' key (one of {', '.join(registered_kinds())}), "
                          f"got {data!r}")
    try:
        entry = policy_entry(data["kind"])
    except UnknownPolicyError as e:
        raise ConfigError(f"{where}: {e}") from None
    return from_dict(entry.config_cls, data, where)


# (field path, lowest allowed, highest allowed, lowest included); None as a value is always allowed where the
# type admits it
_RANGES = [
    ("n_dim", 1, None, True), ("episodes", 1, None, True), ("demo_noise", 0, None, True),
    ("steps", 0, None, True), ("batch_size", 1, None, True), ("lr", 0, None, False),
    ("lr_decay_rate", 0, 1, False), ("lr_decay_steps", 1, None, True), ("warmup_steps", 0, None, True),
    ("weight_decay", 0, None, True), ("ema_decay", 0, 1, False), ("max_minutes", 0, None, False),
    ("log_interval", 1, None, True), ("ckpt_interval", 1, None, True), ("keep_checkpoints", 0, None, True),
    ("eval_interval", 0, None, True), ("monitor_batch", 0, None, True), ("val_episodes", 0, None, True),
    ("threads", 1, None, True), ("eval.episodes", 1, None, True), ("eval.batch", 1, None, True),
    ("eval.nav_rerank", 0, None, True), ("eval.nav_execute_waypoints", 1, None, True),
    ("eval.nav_safety_margin", 0, None, True),
]


def validate_config(cfg: "TrainConfig") -> "TrainConfig":
    """Check every value of a resolved config against its declared type (recursively, policy included) and the
    ranges above; raise :class:`ConfigError` naming the first offending key. Returns ``cfg``."""
    _check_types(cfg, "config")
    for name, lo, hi, lo_in in _RANGES:
        v = cfg
        for part in name.split("."):
            v = getattr(v, part)
        if v is None:
            continue
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"config.{name}: expected a finite number, got {v!r}")
        if (v < lo if lo_in else v <= lo) or (hi is not None and v >= hi):
            rng = f"{'>=' if lo_in else '>'} {lo}" + (f" and < {hi}" if hi is not None else "")
            raise ConfigError(f"config.{name}: expected a value {rng}, got {v!r}")
    for i, b in enumerate(cfg.betas):
        if not 0 <= b < 1:
            raise ConfigError(f"config.betas[{i}]: expected a value in [0, 1), got {b!r}")
    return cfg


def _check_types(obj, where: str) -> None:
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        v, tp = getattr(obj, f.name), hints[f.name]
        key = f"{where}.{f.name}"
        if dataclasses.is_dataclass(v):
            _check_types(v, key)
            continue
        converted = _convert(tp, v, key)
        if isinstance(v, str) and not isinstance(converted, str):
            raise _bad(key, tp, v)  # the string "1e-3" converts to a float, but a float field holding it is wrong


# what a resume may change: how long to train, logging, checkpointing, evaluation and the device
RESUMABLE_FIELDS = ("preset", "steps", "max_minutes", "log_interval", "ckpt_interval", "keep_checkpoints",
                    "eval_interval", "monitor_batch", "eval", "threads", "device", "out_dir", "run_name", "progress")


def flatten_config(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten_config(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def config_changes(old: dict, new: dict) -> dict[str, tuple]:
    """``{field.path: (old, new)}`` for every value that differs between two ``config_to_dict`` forms."""
    a, b = flatten_config(old), flatten_config(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def split_resume_changes(changes: dict[str, tuple]) -> tuple[dict, dict]:
    """``(allowed, forbidden)``: changes a resume may make, and those that change what is being trained."""
    allowed = {k: v for k, v in changes.items() if k.split(".")[0] in RESUMABLE_FIELDS}
    return allowed, {k: v for k, v in changes.items() if k not in allowed}
