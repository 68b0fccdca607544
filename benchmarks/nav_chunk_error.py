"""Where a nav policy's chunks go wrong (issue 5): open-loop waypoint error against the oracle, by decision index,
and first-chunk collisions by intent level, for one or more trained runs side by side.

    python benchmarks/nav_chunk_error.py --run-dirs RUN [RUN ...] [--episodes 200] [--maps 100] [--name nav_chunk_error]

- **error by decision**: fresh noise-free oracle episodes (env seeds 900,000 + i, never in a training set) are
  collected into a temporary store; at every decision ``t`` the policy samples a chunk on the oracle's own
  observation (z1 from the episode's route; z2 from the prior, level z1z2) and the world distance of each of its
  8 waypoints to the oracle's is averaged, for t = 0 (the start, arbitrary heading), 1, 2 and >= 3; also the
  median angle between the policy's and the oracle's last waypoint seen from the robot (direction error) and the
  median ratio of their distances from the robot (how far the chunk reaches).
- **first chunk by level**: on fresh maps (env seeds 700,000 + i) at the start state, the fraction of sampled
  first chunks whose straight segments hit an obstacle (:func:`steerlab.nav.intent_opt.hard_collision`) at the
  intent levels none / z1 / z1z2 (prior), 4 samples per map; the oracle's own first chunk is the reference (0%).
  Also the median clearance left along the chunk (exact clearance minus the robot radius; negative = collision).
- **one draw vs the mean of 16** (bias or variance): on the first-decision windows, the direction error of one
  sampled chunk against that of the mean of 16 chunks, at intent levels z1 and z1z2.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from common import command_line, parser, save

from steerlab.data.collect_nav2d import collect_nav2d
from steerlab.envs.nav2d import ROBOT_RADIUS, Nav2DEnv, clearance, seeded_oracle, waypoints_to_world
from steerlab.eval.run import load_run
from steerlab.nav.data import NavWindowDataset, load_nav_dataset
from steerlab.nav.intent_opt import hard_collision, make_problem, swept_points
from steerlab.train.checkpoint import checkpoint_step


def chunk_slack(problem, wp: torch.Tensor) -> np.ndarray:
    pts = swept_points(problem, wp)
    return np.array([clearance(m.grid, q).min() for m, q in zip(problem.maps, pts)]) - ROBOT_RADIUS


def direction_error(act: torch.Tensor, oracle: torch.Tensor) -> torch.Tensor:
    """Angle (radians, in [-pi, pi)) between the last waypoints of two robot-frame chunks ``[n, 16]``."""
    p = act.reshape(len(act), -1, 2).double().sum(1)
    o = oracle.reshape(len(oracle), -1, 2).double().sum(1)
    ang = torch.atan2(p[:, 1], p[:, 0]) - torch.atan2(o[:, 1], o[:, 0])
    return torch.remainder(ang + torch.pi, 2 * torch.pi) - torch.pi


def draw_vs_mean(policy, data, draws: int = 16, seed: int = 0) -> dict:
    """On the first-decision windows (t = 0): the direction error of one sampled chunk against that of the mean
    of ``draws`` chunks, at intent levels z1 and z1z2. If the mean is much better than one draw, the error is
    spread between draws (variance); if both are alike, every draw is off the same way (bias)."""
    ds = NavWindowDataset.from_episodes(data, policy.n_obs_steps)
    ends = np.asarray(data.episode_ends)
    idx = np.concatenate([[0], ends[:-1]])
    b = ds.batch(torch.as_tensor(idx))
    n = len(idx)
    obs = {k: b[k].repeat_interleave(draws, 0) for k in ("obs_img", "obs_state", "goal_rel", "ref_traj")}
    g = torch.Generator().manual_seed(seed)
    out = {"windows": int(n), "draws": draws}
    deg = 180 / torch.pi
    for level in ("z1", "z1z2"):
        act = policy.predict_action_chunk(obs, generator=g, level=level)[:, 0].double().reshape(n, draws, -1)
        one = direction_error(act[:, 0], b["actions"]).abs() * deg
        mean = direction_error(act.mean(1), b["actions"]).abs() * deg
        each = direction_error(act.reshape(n * draws, -1), b["actions"].repeat_interleave(draws, 0))
        spread = each.reshape(n, draws).std(1) * deg
        out[level] = {"one_draw_deg_median": float(one.median()), "mean_of_draws_deg_median": float(mean.median()),
                      "one_draw_deg_mean": float(one.mean()), "mean_of_draws_deg_mean": float(mean.mean()),
                      "spread_between_draws_deg_median": float(spread.median())}
    return out


def error_by_decision(policy, data, seed: int = 0) -> dict:
    ds = NavWindowDataset.from_episodes(data, policy.n_obs_steps)
    ends = np.asarray(data.episode_ends)
    starts = np.concatenate([[0], ends[:-1]])
    t_of = np.concatenate([np.arange(e - s) for s, e in zip(starts, ends)])
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, sel in (("t=0", t_of == 0), ("t=1", t_of == 1), ("t=2", t_of == 2), ("t>=3", t_of >= 3)):
        idx = np.flatnonzero(sel)
        if len(idx) == 0:
            continue
        b = ds.batch(torch.as_tensor(idx))
        obs = {k: b[k] for k in ("obs_img", "obs_state", "goal_rel", "ref_traj")}
        act = policy.predict_action_chunk(obs, generator=g, level="z1z2")[:, 0].double()
        st = b["obs_state"][:, -1].double()
        err = (waypoints_to_world(st, act) - waypoints_to_world(st, b["actions"].reshape(len(idx), -1).double()))
        e = err.norm(dim=-1)  # [n, 8]
        rel_p = act.reshape(len(idx), -1, 2).cumsum(1)  # robot-frame waypoints (units of max_step)
        rel_o = b["actions"].reshape(len(idx), -1, 2).double().cumsum(1)
        ang = direction_error(act, b["actions"])
        out[name] = {"decisions": int(len(idx)), "per_waypoint_mean": [round(float(x), 5) for x in e.mean(0)],
                     "chunk_mean": float(e.mean()), "last_waypoint_median": float(e[:, -1].median()),
                     "heading_error_deg_median": float(ang.abs().median() * 180 / torch.pi),
                     "length_ratio_median": float((rel_p[:, -1].norm(dim=-1) / rel_o[:, -1].norm(dim=-1)).median())}
    return out


def first_chunk(policy, maps: int, seed: int = 0, samples: int = 4) -> dict:
    seeds = list(range(700_000, 700_000 + maps))
    problem = make_problem(policy, seeds)
    orc = []
    for s in seeds:
        env = Nav2DEnv()
        o, _ = env.reset(seed=s)
        orc.append(seeded_oracle(env, s).act(o))
        env.close()
    wo = waypoints_to_world(problem.state, torch.as_tensor(np.stack(orc)))
    out = {"oracle": {"collision": float(hard_collision(problem, wo).mean()),
                      "slack_median": float(np.median(chunk_slack(problem, wo)))}}
    g = torch.Generator().manual_seed(seed)
    for level in ("none", "z1", "z1z2"):
        col, sl = [], []
        for _ in range(samples):
            act = policy.predict_action_chunk(problem.obs, generator=g, level=level)[:, 0]
            wp = waypoints_to_world(problem.state, act)
            col.append(hard_collision(problem, wp))
            sl.append(chunk_slack(problem, wp))
        out[level] = {"collision": float(np.mean(col)), "slack_median": float(np.median(np.concatenate(sl)))}
    return out


def main() -> None:
    ap = parser(__doc__, "threads")
    ap.add_argument("--run-dirs", nargs="+", required=True)
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--maps", type=int, default=100)
    ap.add_argument("--name", default="nav_chunk_error")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    out = {"command": command_line(), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "oracle.zarr"
        collect_nav2d(store, episodes=a.episodes, seed=900_000, workers=1, progress=False)
        data = load_nav_dataset(store)
        for rd in a.run_dirs:
            cfg, policy, ckpt = load_run(rd)
            policy.eval()
            step = checkpoint_step(ckpt)
            row = {"run": Path(rd).name, "checkpoint": str(ckpt), "step": step, "demo_noise": cfg.demo_noise,
                   "rotate_first": bool(cfg.policy.rotate_first),
                   "prediction_type": cfg.policy.prediction_type,
                   "z1_dim": policy.z1_dim, "error_by_decision": error_by_decision(policy, data),
                   "first_chunk": first_chunk(policy, a.maps), "draw_vs_mean": draw_vs_mean(policy, data)}
            out["runs"].append(row)
            e, f, d = row["error_by_decision"], row["first_chunk"], row["draw_vs_mean"]
            print(f"{row['run']} (step {step}): chunk error " + ", ".join(f"{k} {v['chunk_mean']:.4f}" for k, v in e.items())
                  + "; first-chunk collision " + ", ".join(f"{k} {v['collision']:.0%}" for k, v in f.items())
                  + "; t=0 direction error one draw / mean of 16: " + ", ".join(
                      f"{k} {d[k]['one_draw_deg_median']:.1f} / {d[k]['mean_of_draws_deg_median']:.1f} deg"
                      for k in ("z1", "z1z2")), flush=True)
    save(a.name, out)


if __name__ == "__main__":
    main()
