"""How much of the oracle's chunk the reference route alone determines: an MLP regression from the route
(``ref_traj``, robot frame) and the robot-frame velocity to the oracle's 8-waypoint chunk, scored on fresh oracle
episodes like ``nav_chunk_error.py`` scores the nav policies.

    python benchmarks/nav_ref_regression.py [--dataset data/nav2d-mixed-20000.zarr] [--steps 4000] [--threads 1]

The nav policy reads the route only through z1, an 8-D encoding that conditions the noise head by FiLM beside the
image and goal embedding; its first chunks point 6-10 degrees off the oracle's (``nav_chunk_error.py``). If this
regression, which sees nothing but the route and the velocity, points much closer, the route carries the direction
and the policy loses it on the way; if not, the chunk depends on what only the images show (obstacles the route
passes close to, the oracle's re-planning).

Training: the dataset's windows (first 90% of the episodes; the rest held out), MLP 66 -> 256 x 3 -> 16 (Mish),
Adam 1e-3, batch 512, MSE on the normalized chunk. Evaluation: fresh noise-free oracle episodes (env seeds
900,000 + i, as nav_chunk_error.py), the median direction error of the last waypoint and the mean world distance
of the 8 waypoints, at t = 0 and t >= 3; the same on the held-out windows.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common import command_line, parser, save

from steerlab.data.collect_nav2d import collect_nav2d
from steerlab.envs.nav2d import waypoints_to_world
from steerlab.nav.data import load_nav_dataset


def features(data) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, torch.Tensor]:
    """Per decision: ``[ref_traj (64) | robot-frame velocity (2)]``, the chunk ``[16]``, the decision index t, and
    the world state ``[6]``."""
    d = data.data
    ref = torch.as_tensor(np.asarray(d["ref_traj"]), dtype=torch.float32).flatten(1)
    st = torch.as_tensor(np.asarray(d["state"]), dtype=torch.float32)
    c, s = st[:, 2], st[:, 3]
    vel = torch.stack([c * st[:, 4] + s * st[:, 5], -s * st[:, 4] + c * st[:, 5]], 1)
    act = torch.as_tensor(np.asarray(d["action"]), dtype=torch.float32)
    ends = np.asarray(data.episode_ends)
    starts = np.concatenate([[0], ends[:-1]])
    t = np.concatenate([np.arange(e - b) for b, e in zip(starts, ends)])
    return torch.cat([ref, vel], 1), act, t, st


def direction_error_deg(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    p = pred.reshape(len(pred), -1, 2).double().sum(1)
    o = target.reshape(len(target), -1, 2).double().sum(1)
    ang = torch.atan2(p[:, 1], p[:, 0]) - torch.atan2(o[:, 1], o[:, 0])
    return (torch.remainder(ang + torch.pi, 2 * torch.pi) - torch.pi).abs() * 180 / torch.pi


def score(pred, act, t, st) -> dict:
    out = {}
    for name, sel in (("t=0", t == 0), ("t>=3", t >= 3)):
        idx = torch.as_tensor(np.flatnonzero(sel))
        w = (waypoints_to_world(st[idx].double(), pred[idx].double())
             - waypoints_to_world(st[idx].double(), act[idx].double())).norm(dim=-1)
        out[name] = {"decisions": int(len(idx)), "direction_error_deg_median": float(direction_error_deg(pred[idx], act[idx]).median()),
                     "chunk_mean": float(w.mean())}
    return out


def main() -> None:
    ap = parser(__doc__, "threads")
    ap.add_argument("--dataset", default="data/nav2d-mixed-20000.zarr")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--episodes", type=int, default=200, help="fresh oracle episodes to score on")
    ap.add_argument("--name", default="nav_ref_regression")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    t0 = time.time()
    data = load_nav_dataset(a.dataset)
    x, y, t, st = features(data)
    n_train = int(np.asarray(data.episode_ends)[int(0.9 * data.n_episodes) - 1])
    mu, sd = x[:n_train].mean(0), x[:n_train].std(0).clamp(min=1e-6)
    net = nn.Sequential(nn.Linear(x.shape[1], 256), nn.Mish(), nn.Linear(256, 256), nn.Mish(), nn.Linear(256, 256),
                        nn.Mish(), nn.Linear(256, y.shape[1]))
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, a.steps)
    g = torch.Generator().manual_seed(0)
    for step in range(a.steps):
        idx = torch.randint(n_train, (512,), generator=g)
        loss = ((net((x[idx] - mu) / sd) - y[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 1000 == 0:
            print(f"step {step}: mse {loss.item():.5f}", flush=True)
    net.eval()
    with torch.no_grad():
        held = score(net((x[n_train:] - mu) / sd), y[n_train:], t[n_train:], st[n_train:])
        with tempfile.TemporaryDirectory() as tmp:
            store = Path(tmp) / "oracle.zarr"
            collect_nav2d(store, episodes=a.episodes, seed=900_000, workers=1, progress=False)
            fx, fy, ft, fst = features(load_nav_dataset(store))
            fresh = score(net((fx - mu) / sd), fy, ft, fst)
    for k, v in fresh.items():
        print(f"fresh episodes {k}: direction error {v['direction_error_deg_median']:.2f} deg, chunk error "
              f"{v['chunk_mean']:.4f} ({v['decisions']} decisions)")
    save(a.name, {"command": command_line(), "dataset": a.dataset, "steps": a.steps, "train_windows": n_train,
                  "final_train_mse": loss.item(), "held_out": held, "fresh_episodes": fresh,
                  "seconds": time.time() - t0})


if __name__ == "__main__":
    main()
