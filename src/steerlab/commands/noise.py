"""``steerlab noise <run-dir>``: optimize the initial noise of a trained diffusion/flow policy's chain at the
first observation of fixed-seed episodes, and write the noises, the samples before/after, and plots."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
import tyro

from steerlab.hw import module_device, to_device
from steerlab.sampling.noise import NoiseMode
from steerlab.steer.noise_opt import NoiseOptConfig, chi_cdf, optimize_noise
from steerlab.steer.objectives import EndDistance, ObstacleCost, ReferenceDeviation
from steerlab.steer.policy_chain import initial_noise, initial_observations, policy_sampler
from steerlab.tasks import ParticleTask, get_task
from steerlab.train.rundir import staged_output

# the seed project's parameter-file keys -> ours
SEED_KEYS = {"noise_steps": "steps", "noise_lr": "lr"}


@dataclass(frozen=True)
class NoiseArgs:
    """Optimize the initial noise z0 of a trained diffusion/flow policy's sampling chain against an objective on the
    predicted chunk, at the first observation of `episodes` fixed-seed episodes (one restart each)."""

    run_dir: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="RUN_DIR")]
    """run directory of a diffusion or flow policy (`steerlab train diffusion-particle ...`)"""
    objective: Literal["goal-distance", "end-distance", "obstacle", "reference"] = "goal-distance"
    """goal-distance: the chunk's last action to the episode's first goal; end-distance: to --target;
    obstacle: soft penetration of the ball (--center, --radius); reference: deviation from the straight line
    from the agent to --target"""
    direction: Literal["minimize", "maximize"] = "minimize"
    """minimize to steer, maximize to search for failures"""
    target: str | None = None
    """comma-separated action-space point for end-distance / reference (e.g. 0.2,0.8)"""
    center: str | None = None
    """obstacle centre (comma-separated)"""
    radius: float = 0.15
    """obstacle radius"""
    noise_mode: NoiseMode = "from_seed"
    """per-step noise: none (deterministic), from_seed (derived from z0), fresh (same re-seeded draw every
    iteration), explicit (a per-step tensor optimized together with z0)"""
    grad: Literal["full", "checkpoint"] = "full"
    """backprop mode through the chain"""
    sampler: str | None = None
    """override the policy's inference sampler (ddpm, ddim, res | euler, heun, res)"""
    num_steps: int | None = None
    """override the number of sampler steps"""
    learn_noise: bool = True
    """False: only sample with the initial noise (the seed's learn_noise)"""
    steps: int = 50
    """optimizer steps (fewer if --budget-nfe or --patience ends the search first)"""
    lr: float = 0.05
    """learning rate of the optimizer"""
    optimizer: Literal["adam", "sgd", "lbfgs"] = "adam"
    """adam; sgd with Nesterov momentum (ReNO); lbfgs with strong-Wolfe line search (D-Flow)"""
    grad_clip: float | None = None
    """clip each restart's gradient to this norm (ReNO: 0.1; default: no clipping)"""
    chi_weight: float = 0.0
    """weight of the chi_d negative log-likelihood prior on |z0| (ReNO: 0.01)"""
    project_shell: bool = False
    """rescale each z0 to norm sqrt(d), the initial one and after each step"""
    trust_radius: float | None = None
    """keep |z0 - z_init| <= this per restart (default: unbounded)"""
    budget_nfe: float | None = None
    """stop when this many denoiser evaluations per restart are spent (default: no budget)"""
    patience: int | None = None
    """stop when no restart improved its best for this many steps (default: no early stopping)"""
    episodes: int = 8
    """initial states (env seeds seed0 .. seed0 + episodes - 1)"""
    seed0: int = 200_000
    """env seed of the first initial state"""
    noise_seed: int = 0
    """seed of the initial z0 and of the per-step noise (fresh: a stream independent of z0's; from_seed: derived
    from z0)"""
    params_file: str | None = None
    """JSON of overrides; also reads the seed project's form: learn_noise, noise_steps, noise_lr,
    learnable_step_noise (true: from_seed per-step noise; false: no injection)"""
    out: str | None = None
    """output directory (default <run-dir>/noise/<objective>-<direction>)"""
    progress: bool = True
    """show a progress bar"""
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    """device of the policy and the optimized noise (auto: CUDA when a GPU is visible); z0 is drawn on the CPU,
    so a seed gives the same initial noise on every device"""


def apply_params_file(a: NoiseArgs) -> NoiseArgs:
    if not a.params_file:
        return a
    p = Path(a.params_file)
    if not p.exists():
        raise FileNotFoundError(f"params file {p} does not exist")
    data = json.loads(p.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{p}: expected a JSON object")
    changes = {}
    for k, v in data.items():
        if k == "learnable_step_noise":
            changes["noise_mode"] = "from_seed" if v else "none"
        elif k in SEED_KEYS:
            changes[SEED_KEYS[k]] = v
        elif k in NoiseArgs.__dataclass_fields__ and k not in ("run_dir", "params_file"):
            changes[k] = v
        else:
            raise ValueError(f"{p}: unknown key {k!r}; known: learn_noise, noise_steps, noise_lr, learnable_step_noise "
                             f"and the options of `steerlab noise --help`")
    return dataclasses.replace(a, **changes)


def parse_vector(text: str) -> list[float]:
    """``"0.2,0.8"`` -> ``[0.2, 0.8]`` with an error that says what a vector looks like."""
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"expected comma-separated numbers like 0.2,0.8, got {text!r}") from None


def check_noise_args(a: NoiseArgs, cfg, policy) -> None:
    """Everything about the arguments that can be checked against the policy before any optimization runs."""
    act_dim = policy.chunk_shape[-1]
    for name in ("target", "center"):
        text = getattr(a, name)
        if text is not None and len(parse_vector(text)) != act_dim:
            raise ValueError(f"--{name} {text} has {len(parse_vector(text))} numbers; the policy's actions have "
                             f"{act_dim} dimensions (--{name} " + ",".join(["0.5"] * act_dim) + ")")
    if a.objective == "goal-distance" and not isinstance(get_task(cfg.env), ParticleTask):
        raise ValueError(f"--objective goal-distance reads the particle task's first goal; {a.run_dir} is a {cfg.env} "
                         "run: use end-distance, obstacle or reference")
    positive = {"episodes": a.episodes, "radius": a.radius, "lr": a.lr, "num_steps": a.num_steps,
                "grad_clip": a.grad_clip, "trust_radius": a.trust_radius, "budget_nfe": a.budget_nfe,
                "patience": a.patience}
    for name, v in positive.items():
        if v is not None and not v > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {v}")
    if a.steps < 0 or a.chi_weight < 0:
        raise ValueError(f"--steps and --chi-weight must be >= 0, got {a.steps} and {a.chi_weight}")
    samplers = ("euler", "heun", "res") if cfg.policy.kind == "flow" else ("ddpm", "ddim", "res")
    if a.sampler is not None and a.sampler not in samplers:
        raise ValueError(f"--sampler {a.sampler} does not apply to a {cfg.policy.kind} policy; use one of "
                         f"{', '.join(samplers)}")


def make_objective(a: NoiseArgs, obs_dicts, horizon: int):
    if a.objective == "goal-distance":
        return EndDistance(torch.as_tensor(np.stack([o["pos_first_goal"] for o in obs_dicts]), dtype=torch.float32))
    if a.objective in ("end-distance", "reference") and a.target is None:
        raise ValueError(f"--objective {a.objective} needs --target x,y,...")
    if a.objective == "end-distance":
        return EndDistance(parse_vector(a.target))
    if a.objective == "obstacle":
        if a.center is None:
            raise ValueError("--objective obstacle needs --center x,y,...")
        return ObstacleCost(parse_vector(a.center), a.radius)
    start = torch.as_tensor(np.stack([o["pos_agent"] for o in obs_dicts]), dtype=torch.float32)
    tgt = torch.as_tensor(parse_vector(a.target), dtype=torch.float32)
    w = torch.linspace(1 / horizon, 1, horizon).view(1, -1, 1)
    return ReferenceDeviation(start[:, None] + w * (tgt - start)[:, None])


def run_noise(a: NoiseArgs) -> Path:
    from safetensors.torch import save_file

    from steerlab.eval.plots import plot_noise_result
    from steerlab.eval.run import load_run

    a = apply_params_file(a)
    cfg, policy, ckpt = load_run(a.run_dir, device=a.device)
    dev = module_device(policy)
    if not hasattr(policy, "sample"):
        raise ValueError(f"{a.run_dir} holds a {cfg.policy.kind} policy; noise optimization needs a diffusion or flow policy")
    check_noise_args(a, cfg, policy)
    seeds = [a.seed0 + i for i in range(a.episodes)]
    obs, obs_dicts = initial_observations(cfg, policy, seeds)
    obs = obs.to(dev)
    chain = policy_sampler(policy, obs, noise_mode=a.noise_mode, grad=a.grad, sampler=a.sampler,
                           num_steps=a.num_steps, seed=a.noise_seed)
    objective = make_objective(a, obs_dicts, policy.cfg.horizon)
    z_init, xi_init = to_device(initial_noise(chain.shape, chain.n_noise_steps, a.noise_seed,
                                              a.noise_mode == "explicit"), dev)
    out = Path(a.out or Path(a.run_dir) / "noise" / f"{a.objective}-{a.direction}")
    ocfg = NoiseOptConfig(direction=a.direction, optimizer=a.optimizer, lr=a.lr, steps=a.steps, grad_clip=a.grad_clip,
                          chi_weight=a.chi_weight, project_shell=a.project_shell, trust_radius=a.trust_radius,
                          optimize_step_noise=a.noise_mode == "explicit", budget_nfe=a.budget_nfe, patience=a.patience)
    print(f"[noise] {ckpt}: {cfg.policy.kind} policy, sampler {a.sampler or policy.cfg.sampler} x "
          f"{a.num_steps or policy.cfg.num_inference_steps} steps, noise mode {a.noise_mode}, grad {a.grad}, "
          f"{a.episodes} initial states (seeds {seeds[0]}..{seeds[-1]})")
    t0 = time.time()
    if a.learn_noise:
        res = optimize_noise(chain.sample_fn, objective, z_init, ocfg, step_noise_init=xi_init,
                             nfe_per_sample=chain.nfe, progress=a.progress)
        z_best, xi_best, before, after = res.z, res.step_noise, res.initial_sample, res.sample
        summary = {**res.summary(), "initial_loss": res.initial_loss.tolist(), "best_loss": res.loss.tolist(),
                   "history": res.history}
    else:
        with torch.no_grad():
            before = chain.sample_fn(z_init, xi_init)
            loss = objective(before)
        print(f"[noise] learn_noise is off: sampled once, loss {loss.mean().item():.5g}")
        z_best, xi_best, after = z_init, xi_init, before
        summary = {"initial_loss": loss.tolist(), "best_loss": loss.tolist(), "history": [], "chi_cdf": chi_cdf(z_init).tolist()}
    # saved and plotted from the CPU
    z_init, z_best, xi_init, xi_best, before, after, obs = to_device(
        (z_init, z_best.detach(), xi_init, None if xi_best is None else xi_best.detach(), before.detach(),
         after.detach(), obs), "cpu")
    tensors = {"z_init": z_init, "z_opt": z_best.detach().contiguous()}
    if xi_best is not None:
        tensors.update(step_noise_init=xi_init, step_noise_opt=xi_best.detach().contiguous())
    summary.update(args=dataclasses.asdict(a), checkpoint=str(ckpt), seeds=seeds, seconds=time.time() - t0)
    with staged_output(out) as tmp:
        save_file(tensors, str(tmp / "noise.safetensors"))
        save_file({"before": before.contiguous(), "after": after.detach().contiguous(), "obs": obs.contiguous()},
                  str(tmp / "samples.safetensors"))
        (tmp / "result.json").write_text(json.dumps(summary, indent=2))
        plot_noise_result(summary, obs_dicts, before, after.detach(), tmp, a)
    print(f"[noise] wrote {out}/noise.safetensors, samples.safetensors, result.json, loss.png, chunks.png")
    return out
