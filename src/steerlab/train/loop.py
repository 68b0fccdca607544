"""The one training loop of steerlab (every policy goes through :func:`train`).

Read top to bottom: set-up (run dir, data, policy, optimizer), optional resume, the step loop (batch,
loss, NaN check, backward, gradient all-reduce under torchrun, optimizer and schedule, EMA, logging,
checkpoints, evaluation), then the final evaluation, plots and report.

Exact resume: the data and counter-example generators, torch's global RNG (dropout), the optimizer,
the schedule, the EMA and the policy's training state (IBC's persistent chains) are all in the checkpoint; the loss
curve after ``--resume`` equals the uninterrupted run's (``tests/test_train.py``).

Batches carry ``"index"``, the dataset row of each element, for losses that keep per-row state. Under torchrun each
process keeps its own training state and the checkpoint holds rank 0's, which every process restores on resume.

Device (``cfg.device``): the policy, its EMA, every batch and the counter-example / monitor generators live on
it; batch indices are drawn on the CPU (the dataset stays there), so the batches are the same on every device.
Checkpoints hold CPU tensors. A resume on another device type keeps the weights, optimizer and data order, but
the on-device generators restart from a seed derived from the step (CPU and CUDA generator states differ).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from steerlab.hw import resolve_device, to_device
from steerlab.tasks import get_task
from steerlab.train.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_trainer_state,
    load_weights,
    save_checkpoint,
)
from steerlab.registry import build_policy
from steerlab.train.config import (
    RESUMABLE_FIELDS,
    ConfigError,
    TrainConfig,
    config_changes,
    config_to_dict,
    flatten_config,
    from_dict,
    split_resume_changes,
    validate_config,
)
from steerlab.train.rundir import RunLock, atomic_write_json, describe_holder
from steerlab.train.optim import KerasAdam
from steerlab.train.schedule import lr_multiplier


class TrainingError(RuntimeError):
    pass


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _maybe_init_dist() -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")


class MetricsLog:
    """``metrics.csv`` + TensorBoard; on resume, rows after the checkpoint's step are dropped."""

    def __init__(self, run_dir: Path, resume_step: int | None):
        self.path = run_dir / "metrics.csv"
        self.rows: list[dict] = []
        if resume_step is not None and self.path.exists():
            with open(self.path) as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        self._rewrite()
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=resume_step)

    def _rewrite(self):
        keys: list[str] = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        tmp = self.path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys or ["step"])
            w.writeheader()
            w.writerows(self.rows)
        os.replace(tmp, self.path)

    def log(self, step: int, values: dict) -> None:
        row = {"step": step, **{k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in values.items()}}
        self.rows.append(row)
        self._rewrite()
        for k, v in values.items():
            if isinstance(v, (int, float)):
                self.tb.add_scalar(k, v, step)
        self.tb.flush()

    def close(self):
        self.tb.close()


def _trainer_state(policy, optimizer, sched, gens, step, train_seconds) -> dict:
    """Everything besides the weights that an exact resume needs."""
    return {
        "policy_training_state": to_device(policy.training_state(), "cpu"),
        "step": step,
        "train_seconds": train_seconds,
        "optimizer": to_device(optimizer.state_dict(), "cpu") if optimizer is not None else None,
        "scheduler": sched.state_dict() if sched is not None else None,
        "generators": {k: g.get_state() for k, g in gens.items()},
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": np.random.get_state(),
    }


class TrainingInterrupted(TrainingError):
    """SIGINT/SIGTERM stopped training; a checkpoint at the current step was written first."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class _StopRequest:
    """Signal handler: once the step loop has started (``armed``), the first SIGINT/SIGTERM asks it to checkpoint
    and stop after the current step; a second one, or one before the loop, aborts at once."""

    def __init__(self):
        self.signum: int | None = None
        self.armed = False
        self.pid = os.getpid()

    def __call__(self, signum, frame):
        if os.getpid() != self.pid:  # a forked worker (data collection) inherited the handler: die as by default
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if self.signum is not None or not self.armed:
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\n[steerlab] {signal.Signals(signum).name}: finishing the current step and writing a checkpoint "
              f"(press Ctrl-C again to abort at once)", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _stop_on_signals():
    stop = _StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signal handlers can only be installed from the main thread
        return
    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _check_resume(run_dir: Path, cfg: TrainConfig) -> dict:
    """The changes a resume makes to the run's stored config; an error naming the fields if any of them would
    change what is being trained (architecture, dims, data, optimizer, seed...)."""
    f = run_dir / "config.json"
    if not f.exists():
        raise TrainingError(f"{run_dir} has checkpoints but no config.json; it was not written by `steerlab train`")
    try:
        stored = json.loads(f.read_text())
    except ValueError as e:
        raise TrainingError(f"{f} is not valid JSON ({e}); restore it before resuming") from None
    try:  # fields added to steerlab after the run started are missing from its file: they take their defaults
        full = config_to_dict(from_dict(TrainConfig, stored, "config.json"))
    except (ConfigError, TypeError, ValueError):
        full = stored  # compared as written; the differences are listed below
    added = sorted(set(flatten_config(full)) - set(flatten_config(stored)))
    if added:
        print(f"[steerlab] {run_dir}/config.json predates the field(s) {', '.join(added)}; resuming with their "
              "default values")
    allowed, forbidden = split_resume_changes(config_changes(full, config_to_dict(cfg)))
    if forbidden:
        listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in forbidden.items())
        raise TrainingError(
            f"cannot resume {run_dir}: the config differs from the run's config.json in fields a resume may not change "
            f"({listed}). Drop these overrides to continue the run, or pass another --run-name to start a new one "
            f"(a resume may change only: {', '.join(RESUMABLE_FIELDS)})"
        )
    return allowed


def train(cfg: TrainConfig, resume: bool = False) -> Path:
    """Train (or resume) the run described by ``cfg``; returns the run directory.

    Nothing is written before the config is validated and an explicit ``cfg.dataset`` is found to exist (a
    missing one is :meth:`~steerlab.tasks.base.Task.missing_dataset_error`; only the task's default dataset is
    collected when missing); the run directory is locked for the whole run (a second writer gets an error naming
    this one); on ``resume`` the config must match the run's except in :data:`RESUMABLE_FIELDS`, and
    ``config.json`` is replaced only once the checkpoint has loaded. SIGINT/SIGTERM checkpoints the current step
    and raises :class:`TrainingInterrupted`."""
    validate_config(cfg)
    if cfg.dataset and not Path(cfg.dataset).exists():  # before anything is written, on every process
        raise get_task(cfg.env).missing_dataset_error(cfg, Path(cfg.dataset))
    device = resolve_device(cfg.device)
    _maybe_init_dist()
    rank, world = _dist_info()
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))  # one GPU per torchrun process
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the {world} processes")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run_dir = cfg.run_dir()
    lock = None
    if rank == 0:
        created = not run_dir.exists()
        lock = RunLock(run_dir, f"steerlab train {cfg.preset} (run {run_dir})").acquire()
        if lock.stale:
            print(f"[steerlab] {run_dir}: took over the stale lock of {describe_holder(lock.stale)}, which is no "
                  f"longer running")
    try:
        with _stop_on_signals() as stop:
            return _train_locked(cfg, resume, run_dir, rank, world, stop, device)
    except BaseException:
        if rank == 0 and created and not list_checkpoints(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)  # a run that never reached a checkpoint leaves nothing
        raise
    finally:
        if lock is not None:
            lock.release()


def _train_locked(cfg: TrainConfig, resume: bool, run_dir: Path, rank: int, world: int, stop,
                  device: torch.device) -> Path:
    resuming = resume and bool(list_checkpoints(run_dir))
    resume_changes = {}
    if rank == 0:
        if list_checkpoints(run_dir) and not resume:
            raise TrainingError(f"{run_dir} already holds checkpoints: pass --resume to continue it, or choose another --run-name")
        if resuming:
            resume_changes = _check_resume(run_dir, cfg)
        else:
            atomic_write_json(run_dir / "config.json", config_to_dict(cfg))

    # ---- data and policy
    task = get_task(cfg.env)
    obs_dim, act_dim, _, _ = task.dims(cfg.n_dim)
    path = cfg.dataset_path()
    if rank == 0 and not cfg.dataset:  # only the default dataset is collected when missing
        task.ensure_dataset(cfg, path, progress=cfg.progress)
    if world > 1:
        dist.barrier()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    policy = build_policy(cfg.policy, obs_dim, act_dim)
    horizon = getattr(cfg.policy, "horizon", None) or getattr(getattr(cfg.policy, "base", None), "horizon", 1)
    ds, val_ds = task.training_windows(cfg, path, policy, horizon)
    held_out = val_ds.n_episodes if val_ds is not None else 0
    meta = {"obs_dim": obs_dim, "act_dim": act_dim, "dataset": str(path), "n_windows": len(ds),
            "n_episodes": ds.n_episodes + held_out, "n_train_episodes": ds.n_episodes, "n_held_out_episodes": held_out,
            **getattr(policy, "runtime_info", {})}
    if rank == 0:
        atomic_write_json(run_dir / "meta.json", meta)
    policy.to(device)  # after the normalizers were fitted (on the CPU) from the dataset

    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = sched = None
    if policy.trainable and cfg.steps > 0:
        opt_cls = {"adam": torch.optim.Adam, "adam_keras": KerasAdam, "adamw": torch.optim.AdamW}[cfg.optimizer]
        optimizer = opt_cls(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda t: lr_multiplier(cfg.lr_schedule, t, decay_rate=cfg.lr_decay_rate,
                                               decay_steps=cfg.lr_decay_steps, warmup_steps=cfg.warmup_steps,
                                               total_steps=cfg.steps)
        )
    ema = copy.deepcopy(policy).requires_grad_(False) if cfg.ema_decay else None
    gens = {
        "data": torch.Generator().manual_seed(cfg.seed),  # batch indices, on the CPU with the dataset
        "loss": torch.Generator(device=device).manual_seed(cfg.seed * 1000 + 1 + rank),
        "monitor": torch.Generator(device=device).manual_seed(cfg.seed * 1000 + 999),
    }

    # ---- resume
    step, seconds_before = 0, 0.0
    acc: dict[str, float] = {}
    n_acc = 0
    if resuming:
        ckpt = latest_checkpoint(run_dir)
        try:
            policy.load_state_dict(load_weights(ckpt))
        except RuntimeError as e:  # shapes that disagree with the config
            raise CheckpointError(f"{ckpt}: the weights do not fit the policy built from {run_dir}/config.json: {e}") from None
        state = load_trainer_state(ckpt)
        if ema is not None:
            ema.load_state_dict(load_weights(ckpt, ema=True))
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
        step = state["step"]
        policy.load_training_state(state.get("policy_training_state", {}))
        for k, g in gens.items():
            try:
                g.set_state(state["generators"][k])
            except RuntimeError:  # the state of a generator on another device type
                g.manual_seed(cfg.seed * 1_000_003 + step * 7919 + sorted(gens).index(k) + rank)
                if rank == 0:
                    print(f"[steerlab] the {k!r} generator state in {ckpt.name} is from another device type; "
                          f"reseeded (the resume continues, but not bit-exactly)")
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(state["numpy_rng"])
        seconds_before = state.get("train_seconds", 0.0)  # the time budget counts the earlier parts too
        acc, n_acc = dict(state.get("log_acc", {})), state.get("log_n", 0)  # a log interval cut by the stop
        if rank == 0:
            atomic_write_json(run_dir / "config.json", config_to_dict(cfg))
            if resume_changes:
                with open(run_dir / "resume_history.jsonl", "a") as f:
                    f.write(json.dumps({"time": time.time(), "step": step, "checkpoint": ckpt.name,
                                        "changes": {k: list(v) for k, v in resume_changes.items()}}) + "\n")
            print(f"[steerlab] resumed {run_dir} from {ckpt.name} (step {step})"
                  + (f"; changed: {', '.join(resume_changes)}" if resume_changes else ""))
    log = MetricsLog(run_dir, step if resuming else None) if rank == 0 else None

    def checkpoint(at_step: int) -> Path | None:
        if rank != 0:
            return None
        return save_checkpoint(
            run_dir, at_step, policy.state_dict(),
            {**_trainer_state(policy, optimizer, sched, gens, at_step, elapsed()), "log_acc": dict(acc),
             "log_n": n_acc},
            {**meta, "preset": cfg.preset}, ema.state_dict() if ema is not None else None, cfg.keep_checkpoints,
        )

    # ---- the loop
    t_start, eval_seconds = time.time(), 0.0  # evaluation time does not count as training time

    def elapsed() -> float:
        """Training seconds of this run, earlier (resumed) parts included, evaluation excluded."""
        return seconds_before + time.time() - t_start - eval_seconds
    steps = cfg.steps if optimizer is not None else 0
    stopped_by_budget = cfg.max_minutes is not None and seconds_before >= 60 * cfg.max_minutes
    if stopped_by_budget:
        steps = min(steps, step)  # a resumed run whose budget is spent trains no further
    budget = f" (time budget {cfg.max_minutes:g} min)" if cfg.max_minutes is not None else ""
    bar = tqdm(total=steps, initial=step, desc=f"train {cfg.preset}{budget}", disable=not cfg.progress or rank != 0, dynamic_ncols=True)
    t_log, step_log = time.time(), step
    stop.armed = True
    policy.train()
    while step < steps:
        idx = torch.randint(len(ds), (cfg.batch_size,), generator=gens["data"])[rank::world]
        batch = to_device({**ds.batch(idx), "index": idx}, device)
        loss, metrics = policy.compute_loss(batch, generator=gens["loss"], step=step)
        if not torch.isfinite(loss):
            where = checkpoint(step)
            raise TrainingError(
                f"loss became {loss.item()} at step {step + 1} (metrics {metrics}); the last good state "
                f"(after step {step}) is saved in {where}. Lower --lr, check the data for outliers, or "
                f"enable a gradient penalty."
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if world > 1:
            for p in params:
                if p.grad is not None:
                    dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                    p.grad /= world
        gnorm = float(torch.nn.utils.clip_grad_norm_(params, float("inf")))
        if not math.isfinite(gnorm):
            where = checkpoint(step)
            raise TrainingError(f"gradient became non-finite at step {step + 1}; the last good state is saved in {where}")
        optimizer.step()
        sched.step()
        step += 1
        if ema is not None:
            with torch.no_grad():
                for pe, p in zip(ema.state_dict().values(), policy.state_dict().values()):
                    if pe.dtype.is_floating_point:
                        pe.mul_(cfg.ema_decay).add_(p, alpha=1 - cfg.ema_decay)
                    else:
                        pe.copy_(p)
        for k, v in metrics.items():
            acc[k] = acc.get(k, 0.0) + v
        acc["grad_norm"] = acc.get("grad_norm", 0.0) + gnorm
        n_acc += 1
        bar.update(1)
        if step % cfg.log_interval == 0 or step == steps:
            now = time.time()
            vals = {k: v / n_acc for k, v in acc.items()}
            vals["lr"] = optimizer.param_groups[0]["lr"]
            vals["steps_per_s"] = (step - step_log) / max(now - t_log, 1e-9)
            if hasattr(policy, "monitor") and cfg.monitor_batch > 0:
                policy.eval()
                if val_ds is not None:
                    mi = torch.randint(len(val_ds), (cfg.monitor_batch,), generator=gens["monitor"], device=device)
                    mb = val_ds.batch(mi.cpu())
                else:
                    mb = ds.batch(idx[: cfg.monitor_batch])
                mb = to_device(mb, device)
                vals.update({f"monitor_{k}": v for k, v in policy.monitor(mb, gens["monitor"]).items()})
                policy.train()
            if rank == 0:
                log.log(step, vals)
                post = {k: f"{vals[k]:.3g}" for k in ("loss", "e_pos", "e_neg") if k in vals}
                if cfg.max_minutes is not None:  # the bound that may stop the run first
                    post["time"] = f"{elapsed() / 60:.1f}/{cfg.max_minutes:g} min"
                bar.set_postfix(post)
            acc, n_acc, t_log, step_log = {}, 0, time.time(), step
        budget_hit = cfg.max_minutes is not None and elapsed() > 60 * cfg.max_minutes
        interrupted = stop.signum is not None
        if world > 1:  # every process stops at the same step
            flags = torch.tensor([float(budget_hit), float(interrupted)])
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            budget_hit, interrupted = bool(flags[0].item()), bool(flags[1].item())
        if interrupted:
            bar.close()
            where = checkpoint(step)
            if rank == 0:
                _write_summary(run_dir, step, elapsed(), stopped_by_budget, interrupted=True)
                log.close()
            name = signal.Signals(stop.signum or signal.SIGTERM).name
            raise TrainingInterrupted(
                f"{name}: training stopped at step {step}; the checkpoint {where} holds it. Continue the run exactly "
                f"with the same command plus --resume", stop.signum or signal.SIGTERM)
        if step % cfg.ckpt_interval == 0 or step == steps or budget_hit:
            checkpoint(step)
        if cfg.eval_interval and step % cfg.eval_interval == 0 and step < steps and rank == 0:
            t_eval = time.time()
            _evaluate_and_log(cfg, ema or policy, step, log, elapsed())
            eval_seconds += time.time() - t_eval
            policy.train()
        if budget_hit:
            stopped_by_budget = True
            break
    bar.close()
    train_seconds = elapsed()
    if rank == 0:
        if not list_checkpoints(run_dir) or list_checkpoints(run_dir)[-1].name != f"step_{step:08d}":
            checkpoint(step)
        _write_summary(run_dir, step, train_seconds, stopped_by_budget)
        log.close()
    if world > 1:
        dist.barrier()
    return run_dir


def _write_summary(run_dir: Path, step: int, train_seconds: float, stopped_by_budget: bool,
                   interrupted: bool = False) -> None:
    info = {"steps": step, "train_seconds": train_seconds, "stopped_by_budget": stopped_by_budget}
    if interrupted:
        info["interrupted"] = True
    atomic_write_json(run_dir / "train_summary.json", info)


def _evaluate_and_log(cfg, policy, step, log, train_seconds: float):
    """Evaluation during training; ``train_seconds`` (training time so far, evaluation excluded) is logged
    with it so that compute-to-success can be read from ``metrics.csv``."""
    from steerlab.eval.rollout import evaluate_policy

    res = evaluate_policy(policy, cfg, progress=cfg.progress)
    if log is not None:
        extra = {name: res[k] for k, name in (("mean_return", "eval_return"), ("collision_rate", "eval_collision"))
                 if k in res}
        log.log(step, {"eval_success": res["success_rate"], **extra, "train_seconds": train_seconds})
    return res
