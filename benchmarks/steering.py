"""Steering a trained diffusion/flow particle policy by noise optimization, verified in closed loop.

    python benchmarks/steering.py --run-dir RUN [--episodes 100] [--steps 20]

Task objective: keep out of a forbidden region, a ball of radius ``--radius`` centred half way between the
agent's start and the first goal (the straight path of the demonstrations runs through it). At every
re-planning the steered policy minimizes the soft penetration of its predicted chunk into the ball
(:class:`~steerlab.steer.objectives.ObstacleCost`) over z0 (Adam, ``--steps`` steps, z0 kept on the sqrt(d)
shell so it stays a typical draw), and executes the chunk of the best noise. Metrics on the same seeds
before/after, with 95% Wilson intervals: episodes whose path never enters the ball, task success, and both.
Writes benchmarks/results/steering.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import save  # noqa: E402

from steerlab.eval.metrics import wilson_interval  # noqa: E402
from steerlab.eval.rollout import rollout  # noqa: E402
from steerlab.eval.run import load_run  # noqa: E402
from steerlab.sampling import no_noise  # noqa: E402
from steerlab.steer.noise_cli import initial_observations  # noqa: E402
from steerlab.steer.noise_opt import NoiseOptConfig, optimize_noise  # noqa: E402
from steerlab.steer.objectives import ObstacleCost  # noqa: E402
from steerlab.steer.policy_chain import policy_sampler  # noqa: E402


def rate(flags) -> dict:
    k, n = int(np.sum(flags)), len(flags)
    lo, hi = wilson_interval(k, n)
    return {"count": k, "n": n, "rate": k / n, "ci95": [lo, hi]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--radius", type=float, default=0.1)
    ap.add_argument("--seed0", type=int, default=400_000)
    a = ap.parse_args()
    cfg, policy, ckpt = load_run(a.run_dir)
    seeds = [a.seed0 + i for i in range(a.episodes)]
    _, obs_dicts = initial_observations(cfg, policy, seeds)
    centers = torch.as_tensor(np.stack([(o["pos_agent"] + o["pos_first_goal"]) / 2 for o in obs_dicts]), dtype=torch.float32)
    gen = torch.Generator().manual_seed(0)
    shape = policy.chunk_shape

    def plain(hist, idx):
        with torch.no_grad():
            z = torch.randn((len(idx), *shape), generator=gen)
            return policy.predict_action_chunk(hist, z=z, noise=no_noise())

    stats = {"decisions": 0, "nfe": 0.0}

    def steered(hist, idx):
        chain = policy_sampler(policy, hist, noise_mode="none", grad="full")
        obj = ObstacleCost(centers[torch.as_tensor(idx)], a.radius)
        z = torch.randn(chain.shape, generator=gen)
        res = optimize_noise(chain.sample_fn, obj, z, NoiseOptConfig(lr=a.lr, steps=a.steps, project_shell=True),
                             nfe_per_sample=chain.nfe, progress=False, log=None)
        stats["decisions"] += len(idx)
        stats["nfe"] += res.nfe * len(idx)
        return res.sample

    out = {}
    for name, fn in (("base", plain), ("steered", steered)):
        t0 = time.time()
        eps = rollout(policy, cfg.env, cfg.n_dim, seeds, act_fn=fn)
        entered = np.array([(np.linalg.norm(e["positions"] - centers[i].numpy(), axis=1) < a.radius).any()
                            for i, e in enumerate(eps)])
        success = np.array([e["success"] for e in eps])
        out[name] = {"avoided": rate(~entered), "success": rate(success), "success_and_avoided": rate(success & ~entered),
                     "seconds": time.time() - t0}
        print(f"{name:8s}: avoided {out[name]['avoided']['rate']:.0%} {np.round(out[name]['avoided']['ci95'], 2)}, "
              f"success {out[name]['success']['rate']:.0%}, both {out[name]['success_and_avoided']['rate']:.0%}, "
              f"{out[name]['seconds']:.0f} s")
    out["steered"]["nfe_per_decision"] = stats["nfe"] / max(stats["decisions"], 1)
    save("steering", {"command": "python benchmarks/steering.py " + " ".join(sys.argv[1:]), "checkpoint": str(ckpt),
                      "policy": dataclasses.asdict(cfg.policy), "n_dim": cfg.n_dim, "radius": a.radius,
                      "optimizer": {"lr": a.lr, "steps": a.steps, "project_shell": True}, "results": out})


if __name__ == "__main__":
    main()
