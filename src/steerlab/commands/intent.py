"""``steerlab intent optimize <run-dir>``: optimize the intent of a trained nav policy's chain on fixed-seed maps
(:mod:`steerlab.nav.intent_opt`) and write the intents, the trajectories before and after, and a plot."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
import tyro

from steerlab.hw import module_device, to_device
from steerlab.nav.intent_opt import (
    CandidateChain, CandidateObjective, IntentChain, IntentObjective, hard_collision, make_problem, plot_intents,
    two_route_seeds,
)
from steerlab.train.rundir import staged_output


@dataclass(frozen=True)
class IntentArgs:
    """Optimize the fine intent z2 of a trained nav policy through the full sampling chain (z1 from each map's
    route held fixed), or with --variable z1 the coarse intent (z2 held at a prior draw), and save the intents, the
    trajectories before and after, and a plot of them on the maps."""

    run_dir: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="RUN_DIR")]
    """run directory of a trained nomad-nav2d policy"""
    objective: Literal["collision", "goal", "route"] = "collision"
    """collision: maximize the collision cost (adversarial); goal: minimize the last waypoint's distance to the
    goal; route: minimize the distance to the other route of two-route maps"""
    maps: int = 8
    """maps (env seeds seed0 .. seed0 + maps - 1; for 'route' only two-route maps are kept)"""
    seed0: int = 300_000
    """env seed of the first map"""
    steps: int = 100
    """optimizer steps"""
    lr: float = 1e-2
    """learning rate of the optimizer"""
    optimizer: Literal["adam", "sgd", "lbfgs"] = "adam"
    """adam; sgd with Nesterov momentum; lbfgs with strong-Wolfe line search"""
    project_shell: bool = True
    """keep |z| on the sqrt(d) shell of the N(0, I) prior"""
    chi_weight: float = 0.0
    """weight of the chi_d prior NLL of |z|"""
    joint_noise: bool = False
    """optimize the chain's initial noise z0 together with z2"""
    route: str = "random"
    """z1's route: 'random' (the oracle's choice for the seed) or a route index"""
    lambda_cfg: float | None = None
    """classifier-free guidance weight (default: the policy's)"""
    grad: Literal["full", "checkpoint"] = "full"
    """backprop mode through the chain"""
    candidates: int = 1
    """> 1: attack / steer the re-ranked deployment (steerlab.nav.safety) -- z2 shared by this many candidate draws per
    map, each with its own noise; the objective is the least favourable candidate's (collision) or their mean
    (goal, route). Not with --joint-noise (the deployment draws its own noise)"""
    variable: Literal["z2", "z1"] = "z2"
    """the intent optimized: z2 (fine, from its prior draw) or z1 (coarse, from the encoding of the map's route, with
    z2 held at its prior draw; z1 has no prior, so no shell projection or chi weight)"""
    seed: int = 0
    """seed of the initial z2, z0 and the chain's per-step noise"""
    out: str | None = None
    """output directory (default <run-dir>/intent/<objective>)"""
    progress: bool = True
    """show a progress bar"""
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    """device of the policy and the optimized intents (auto: CUDA when a GPU is visible); the initial draws are
    made on the CPU, so a seed starts from the same z on every device"""


def check_intent_args(a: IntentArgs) -> None:
    """The arguments' ranges, checked before any map is built or any chain runs."""
    for name in ("maps", "steps", "candidates"):
        if getattr(a, name) < 1:
            raise ValueError(f"--{name} must be a positive integer, got {getattr(a, name)}")
    if not a.lr > 0 or a.chi_weight < 0:
        raise ValueError(f"--lr must be positive and --chi-weight >= 0, got {a.lr} and {a.chi_weight}")
    if a.route != "random" and not (a.route.isdigit()):
        raise ValueError(f"--route must be 'random' or a route index (0, 1, ...), got {a.route!r}")
    if a.lambda_cfg is not None and a.lambda_cfg < 0:
        raise ValueError(f"--lambda-cfg must be >= 0, got {a.lambda_cfg}")


def optimize_intent(a: IntentArgs) -> dict:
    from safetensors.torch import save_file

    from steerlab.eval.run import load_run
    from steerlab.steer.noise_opt import NoiseOptConfig, chi_cdf, optimize_noise

    check_intent_args(a)
    cfg, policy, ckpt = load_run(a.run_dir, device=a.device)
    dev = module_device(policy)
    if cfg.policy.kind != "nav":
        raise ValueError(f"{a.run_dir} holds a {cfg.policy.kind!r} policy; intent optimization needs a nav policy "
                         "(steerlab train nomad-nav2d)")
    seeds = list(range(a.seed0, a.seed0 + a.maps))
    if a.objective == "route":  # keep two-route maps, scanning further seeds as needed
        seeds = two_route_seeds(a.seed0, a.maps, max_tries=50 * a.maps)
    route = a.route if a.route == "random" else int(a.route)
    problem = make_problem(policy, seeds, route)
    problem = dataclasses.replace(problem, obs=to_device(problem.obs, dev), state=problem.state.to(dev),
                                  goal=problem.goal.to(dev), distance_field=problem.distance_field.to(dev))
    g = torch.Generator().manual_seed(a.seed)
    z2_init = torch.randn((len(seeds), policy.z2_dim), generator=g)
    k = int(a.candidates)
    if k < 1 or (k > 1 and a.joint_noise):
        raise ValueError(f"--candidates must be >= 1 and cannot be combined with --joint-noise, got {a.candidates!r}")
    z0 = torch.randn((len(seeds) * k, *policy.chunk_shape), generator=g).to(dev)
    by_z1 = a.variable == "z1"
    if by_z1 and (a.joint_noise or a.chi_weight):
        raise ValueError("--variable z1 optimizes the coarse intent alone, which has no prior: drop --joint-noise "
                         "and --chi-weight")
    kw = {"grad": a.grad, "lambda_cfg": a.lambda_cfg, "seed": a.seed}
    if by_z1:  # z2 held at prior draws: one per map, or one per candidate
        kw.update(variable="z1", z2=(z2_init if k == 1 else torch.randn((len(seeds) * k, policy.z2_dim), generator=g)).to(dev))
    if k > 1:
        chain = CandidateChain(policy, problem, z0, k, **kw)
        objective = CandidateObjective(a.objective, problem, k, reduce="worst" if a.objective == "collision" else "mean")
    else:
        chain = IntentChain(policy, problem, z0, joint=a.joint_noise, **kw)
        objective = IntentObjective(a.objective, problem)
    ocfg = NoiseOptConfig(direction=objective.direction, optimizer=a.optimizer, lr=a.lr, steps=a.steps,
                          project_shell=a.project_shell and not by_z1, chi_weight=a.chi_weight)
    print(f"[intent] {ckpt}: {len(seeds)} maps (seeds {seeds[0]}..{seeds[-1]}), objective {a.objective} "
          f"({objective.direction}), {'z1 dim ' + str(policy.z1_dim) if by_z1 else 'z2 dim ' + str(policy.z2_dim)}"
          f"{' + z0' if a.joint_noise else ''}{f', {k} candidates per map' if k > 1 else ''}, chain NFE {chain.nfe}")
    z_init = chain.z1.clone() if by_z1 else chain.pack(z2_init.to(dev))
    res = optimize_noise(chain.sample_fn, objective, z_init, ocfg, nfe_per_sample=chain.nfe, progress=a.progress)
    with torch.no_grad():
        before, after = chain.sample_fn(z_init), chain.sample_fn(res.z)
    v_after, z0_after = chain.split(res.z)
    out = Path(a.out or Path(a.run_dir) / "intent" / a.objective)
    if by_z1:  # z2 is the fixed draw the z1 was optimized with
        tensors = {"z1_init": chain.z1, "z1": v_after.detach(), "z2": kw["z2"], "z0": z0_after.detach()}
    else:
        tensors = {"z2_init": z2_init, "z2": v_after.detach(), "z0": z0_after.detach(), "z1": chain.z1}
    result = {
        "args": dataclasses.asdict(a), "checkpoint": str(ckpt), "seeds": seeds, "route_id": problem.route_id,
        "n_routes": problem.n_routes, "objective_before": objective(before).tolist(),
        "objective_after": objective(after).tolist(),
        "collides_before": hard_collision(problem, before).tolist(), "collides_after": hard_collision(problem, after).tolist(),
        "nfe": res.nfe, "variable": a.variable,
    }
    if by_z1:  # how far z1 moved, against the typical norm of the route encodings
        result["z1_moved"] = (v_after.detach() - chain.z1).norm(dim=1).tolist()
        result["z1_init_norm"] = chain.z1.norm(dim=1).tolist()
    else:
        result["z_chi_cdf"] = chi_cdf(res.z.detach()).tolist()
    # saved and plotted from the CPU
    tensors, before, after = to_device((tensors, before, after), "cpu")
    problem = dataclasses.replace(problem, state=problem.state.cpu())
    with staged_output(out) as tmp:
        save_file({n: t.contiguous() for n, t in tensors.items()}, str(tmp / "intent.safetensors"))
        save_file({"waypoints_before": before.contiguous(), "waypoints_after": after.contiguous()},
                  str(tmp / "trajectories.safetensors"))
        (tmp / "result.json").write_text(json.dumps(result, indent=2))
        plot_intents(problem, before, after, tmp / "trajectories.png", title=f"{a.variable} optimized for {a.objective}")
    print(f"[intent] objective {np.mean(result['objective_before']):.4f} -> {np.mean(result['objective_after']):.4f}; "
          f"collisions {sum(result['collides_before'])} -> {sum(result['collides_after'])} of {len(seeds)}; wrote "
          f"{out}/intent.safetensors, trajectories.safetensors, result.json, trajectories.png")
    return result
