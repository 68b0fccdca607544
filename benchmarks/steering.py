"""Steering a trained diffusion/flow particle policy by noise optimization, verified in closed loop.

    python benchmarks/steering.py --task goal-order --run-dir RUN_MULTIMODAL [--episodes 100] [--steps 20]
    python benchmarks/steering.py --task obstacle --run-dir RUN [--episodes 100] [--steps 20]

At every re-planning the steered policy minimizes a task objective on its predicted chunk over z0 (Adam,
``--steps`` steps, z0 kept on the sqrt(d) shell so it stays a typical draw) and executes the chunk of the
best noise; the base policy samples z0 plainly. Both run on the same seeds; metrics with 95% Wilson intervals.

- ``goal-order`` (for a policy trained on the *multimodal* demos, which visit the two goals in either order):
  the objective is the distance of the chunk's last action to the first goal until the agent has come within
  the env's goal distance of it, then to the second goal. Metric: the env's success (first goal, then end
  at the second) -- the base policy picks the wrong order about half the time.
- ``obstacle``: keep out of a ball of radius ``--radius`` centred half way between the agent's start and
  the first goal (the straight path of the demonstrations runs through it). ``--objective actions``: the soft
  penetration of the chunk's actions into the ball (:class:`~steerlab.steer.objectives.ObstacleCost`);
  ``--objective path``: the soft penetration of the agent's path under the executed actions, integrated with the
  env's PD controller from the current state (:class:`~steerlab.steer.objectives.PathObstacleCost`). Particle
  actions are set-points (the oracle's is the goal itself), so the actions may stay clear of a ball the path
  crosses: the result records, per decision, whether the objective was already ~0 at the first noise.
  Metrics: episodes whose path never enters the ball, task success, and both. A control, ``action-gradient``,
  descends the same objective on the base chunk's actions directly: where it avoids and noise optimization does
  not, the noise does not move the actions (too little leverage), not the objective or the budget. A second
  control, ``best-of-N``, samples as many noises as the steered policy's denoiser budget allows, executes the chunk
  of the best and records at how many decisions at least one of them already meets the objective (the policy's
  support contains an avoiding chunk) and the spread of the samples' executed actions there.

Writes benchmarks/results/steering_<task>.json (``--name`` overrides).
"""

from __future__ import annotations

import dataclasses
import time

import gymnasium as gym
import numpy as np
import torch

from common import command_line, parser, rate, save

from steerlab.eval.rollout import rollout
from steerlab.eval.run import load_run
from steerlab.sampling import no_noise
from steerlab.steer.guidance import sample_guided
from steerlab.steer.noise_opt import NoiseOptConfig, optimize_noise
from steerlab.steer.objectives import EndDistance, ObstacleCost, PathObstacleCost
from steerlab.steer.policy_chain import initial_observations, policy_sampler


def main() -> None:
    ap = parser(__doc__, "run_dir")
    ap.add_argument("--task", choices=("goal-order", "obstacle"), default="goal-order")
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--radius", type=float, default=0.1)
    ap.add_argument("--seed0", type=int, default=400_000)
    ap.add_argument("--objective", choices=("actions", "path"), default="actions", help="obstacle task: what is penalized")
    ap.add_argument("--name", default=None, help="results file name (default steering_<task>)")
    ap.add_argument("--action-lr", type=float, default=0.02, help="obstacle task: Adam step of the action-gradient control")
    ap.add_argument("--action-keep", type=float, default=1.0,
                    help="obstacle task: weight of the squared deviation from the base chunk in the action-gradient control")
    ap.add_argument("--guidance", type=float, nargs="*", default=[],
                    help="energy guidance scales of the clean-chunk estimate by the objective (steer.guidance; "
                         "clean-chunk policies only), each a variant")
    ap.add_argument("--variants", nargs="*", default=None, help="run only these variants (labels)")
    ap.add_argument("--max-steps", type=int, default=None,
                    help="episode limit in control steps (default: the task's, IBC's particle env: 50); a detour "
                         "around the obstacle takes longer than the straight path the limit was made for")
    ap.add_argument("--side-offset", type=float, default=0.0,
                    help="obstacle task, 2-D: the objective's ball is displaced this far (m) to the right of the line "
                         "from the agent's start to the first goal (the real ball, which the metrics use, is not): "
                         "a preference for the side to pass on. With 0 the ball is centred on the straight path and "
                         "the objective's gradient has no sideways component there")
    a = ap.parse_args()
    cfg, policy, ckpt = load_run(a.run_dir)
    seeds = [a.seed0 + i for i in range(a.episodes)]
    _, obs_dicts = initial_observations(cfg, policy, seeds)
    n = cfg.n_dim
    centers = torch.as_tensor(np.stack([(o["pos_agent"] + o["pos_first_goal"]) / 2 for o in obs_dicts]), dtype=torch.float32)
    goals = torch.as_tensor(np.stack([np.stack([o["pos_first_goal"], o["pos_second_goal"]]) for o in obs_dicts]),
                            dtype=torch.float32)  # [E, 2, n]
    cost_centers = centers
    if a.side_offset:
        if n != 2:
            raise SystemExit("--side-offset is defined for the 2-D particle task (the side of a line in the plane)")
        d = torch.as_tensor(np.stack([o["pos_first_goal"] - o["pos_agent"] for o in obs_dicts]), dtype=torch.float32)
        perp = torch.stack([d[:, 1], -d[:, 0]], 1) / d.norm(dim=1, keepdim=True)
        cost_centers = centers + a.side_offset * perp  # the objective's ball, displaced to one side of the way
    visited_first = np.zeros(len(seeds), bool)
    goal_distance = 0.05  # the particle env's default
    gen = torch.Generator().manual_seed(0)
    shape = policy.chunk_shape

    def plain(hist, idx):
        with torch.no_grad():
            z = torch.randn((len(idx), *shape), generator=gen)
            return policy.predict_action_chunk(hist, z=z, noise=no_noise())

    def objective(hist, idx):
        if a.task == "obstacle" and a.objective == "path":
            return PathObstacleCost(cost_centers[torch.as_tensor(idx)], a.radius, hist[:, -1, :n], hist[:, -1, 3 * n:4 * n],
                                    steps=policy.n_action_steps)
        if a.task == "obstacle":
            return ObstacleCost(cost_centers[torch.as_tensor(idx)], a.radius)
        pos = hist[:, -1, :n]  # flat obs starts with pos_agent
        g = goals[torch.as_tensor(idx)]
        visited_first[idx] |= (pos - g[:, 0]).norm(dim=-1).numpy() < goal_distance
        target = torch.where(torch.as_tensor(visited_first[idx])[:, None], g[:, 1], g[:, 0])
        return EndDistance(target)

    stats = {"decisions": 0, "nfe": 0.0, "flat_at_start": 0, "initial": 0.0, "best": 0.0}

    def steered(hist, idx):
        chain = policy_sampler(policy, hist, noise_mode="none", grad="full")
        obj = objective(hist, idx)
        z = torch.randn(chain.shape, generator=gen)
        res = optimize_noise(chain.sample_fn, obj, z, NoiseOptConfig(lr=a.lr, steps=a.steps, project_shell=True),
                             nfe_per_sample=chain.nfe, progress=False, log=None)
        stats["decisions"] += len(idx)
        stats["nfe"] += res.nfe * len(idx)
        stats["flat_at_start"] += int((res.initial_loss.abs() < 1e-6).sum())  # nothing to descend at the first noise
        stats["initial"] += float(res.initial_loss.sum())
        stats["best"] += float(res.loss.sum())
        return res.sample

    def action_gradient(hist, idx):
        """The control: the same objective descended on the base chunk's actions themselves, plus
        ``--action-keep`` times their squared deviation from the base chunk (Adam, the same number of steps,
        actions kept in the env's bounds) -- what noise optimization could reach if the noise moved the actions."""
        base = plain(hist, idx)
        chunk = base.clone().requires_grad_()
        opt = torch.optim.Adam([chunk], lr=a.action_lr)
        obj = objective(hist, idx)
        for _ in range(a.steps):
            opt.zero_grad()
            (obj(chunk) + a.action_keep * ((chunk - base) ** 2).flatten(1).sum(1)).sum().backward()
            opt.step()
            with torch.no_grad():
                chunk.clamp_(0.0, 1.0)
        return chunk.detach()

    support = {"decisions": 0, "met": 0, "spread": 0.0, "samples": 0}

    def best_of_n(hist, idx):
        """The zero-order control at the steered policy's budget: ``3 steps + 1`` chains per decision (an Adam
        step's forward and backward pass count as three forwards, as in ``nfe_per_decision``)."""
        chain = policy_sampler(policy, hist, noise_mode="none", grad="none")
        obj = objective(hist, idx)
        m = 3 * a.steps + 1
        with torch.no_grad():
            z = torch.randn((m, *chain.shape), generator=gen)
            chunks = torch.stack([chain.sample_fn(z[j]) for j in range(m)])  # [M, B, H, A]
            loss = torch.stack([obj(c) for c in chunks])  # [M, B]
        best = loss.argmin(0)
        support["decisions"] += len(idx)
        support["met"] += int((loss.min(0).values < 1e-6).sum())
        support["spread"] += float(chunks[:, :, : policy.n_action_steps].std(0).mean(dim=(1, 2)).sum())
        support["samples"] = m
        return chunks[best, torch.arange(len(idx))]

    def guided(scale):
        """Energy guidance of the clean-chunk estimate by the objective (clean-chunk policies only)."""
        def act(hist, idx):
            z = torch.randn((len(idx), *shape), generator=gen)
            return sample_guided(policy, hist, z, objective(hist, idx), scale)
        return act

    make_env = None
    if a.max_steps is not None:
        from steerlab.tasks import get_task

        task = get_task(cfg.env)
        make_env = lambda: gym.make(task.env_id, n_dim=n, **{**task.env_kwargs, "n_steps": a.max_steps})  # noqa: E731

    out = {}
    variants = [("base", plain), ("steered", steered)]
    if a.task == "obstacle":
        variants += [("action-gradient", action_gradient), ("best-of-N", best_of_n)]
    if getattr(policy.cfg, "prediction_type", None) == "sample":
        variants += [(f"guidance {g:g}", guided(g)) for g in a.guidance]
    if a.variants:
        variants = [v for v in variants if v[0] in a.variants]
    for name, fn in variants:
        t0 = time.time()
        eps = rollout(policy, cfg.env, cfg.n_dim, seeds, act_fn=fn, make_env=make_env)
        success = np.array([e["success"] for e in eps])
        out[name] = {"success": rate(success), "seconds": time.time() - t0}
        if a.task == "obstacle":
            entered = np.array([(np.linalg.norm(e["positions"] - centers[i].numpy(), axis=1) < a.radius).any()
                                for i, e in enumerate(eps)])
            out[name].update(avoided=rate(~entered), success_and_avoided=rate(success & ~entered))
        print(f"{name:8s}: " + ", ".join(f"{k} {v['rate']:.0%} {np.round(v['ci95'], 2)}" for k, v in out[name].items()
                                         if isinstance(v, dict)) + f", {out[name]['seconds']:.0f} s", flush=True)
    if "steered" in out:
        d = max(stats["decisions"], 1)
        out["steered"].update(nfe_per_decision=stats["nfe"] / d, objective_flat_at_start=stats["flat_at_start"] / d,
                              objective_initial_mean=stats["initial"] / d, objective_best_mean=stats["best"] / d)
    if "best-of-N" in out:
        d = max(support["decisions"], 1)
        out["best-of-N"].update(samples_per_decision=support["samples"], objective_met_by_a_sample=support["met"] / d,
                                sample_spread=support["spread"] / d)
    save(a.name or f"steering_{a.task.replace('-', '_')}", {"task": a.task, "objective": a.objective, "command": command_line(), "checkpoint": str(ckpt),
                      "policy": dataclasses.asdict(cfg.policy), "n_dim": cfg.n_dim,
                      "radius": a.radius if a.task == "obstacle" else None, "max_steps": a.max_steps,
                      "side_offset": a.side_offset,
                      "optimizer": {"lr": a.lr, "steps": a.steps, "project_shell": True}, "results": out})


if __name__ == "__main__":
    main()
