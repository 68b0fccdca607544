"""IBC-Langevin training step cost on the CPU: ms per step and the share of rows that ran the full chain, for the
persistent preset with each ``persistent_init`` (and, with ``--full``, the budget preset's full chains).

    python benchmarks/ibc_step_cost.py --steps 300 --window 100 300 --threads 1 --full --probe

A smoke measure, no evaluation: each variant trains ``--steps`` steps of ``ibc-particle-langevin-persistent`` on
2-D particle (2,000 oracle demos; ``--dataset``, or the default dataset, collected if missing) in this process, one
variant after the other, on the same batches, and reports the mean and median ms per step over the steps of
``--window`` (the first ones include the warm-up of a store that starts empty), the share of rows that ran the full
chain from uniform (restarts and rows with nothing to continue) and the share that started from a neighbour's chains.

``--probe`` (after the 'neighbour' variant): for 512 rows not yet stored whose nearest stored row of the episode is
within ``persistent_neighbours``, the mean energy of the Langevin counter-examples and the InfoNCE loss they give,
starting from uniform with the full chain (K steps) and from the neighbour's stored chains continued for 0 to 40
steps (and, for 512 stored rows, from their own chains continued for ``persistent_steps``): how many steps a
neighbour start needs to come as close to the full chain's samples as a revisited row's continuation.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch

from common import command_line, parser, save

NAME = "ibc_step_cost"
PRESET = "ibc-particle-langevin-persistent"


def train_steps(preset: str, overrides: list[str], steps: int, probe: bool) -> tuple[dict, dict | None]:
    from steerlab.cli import resolve_train_config
    from steerlab.registry import build_policy
    from steerlab.tasks import get_task
    from steerlab.train.optim import KerasAdam

    cfg = resolve_train_config(preset, overrides)
    task = get_task(cfg.env)
    task.ensure_dataset(cfg, cfg.dataset_path(), progress=False)
    obs_dim, act_dim, _, _ = task.dims(cfg.n_dim)
    torch.manual_seed(cfg.seed)
    policy = build_policy(cfg.policy, obs_dim, act_dim)
    ds, _ = task.training_windows(cfg, cfg.dataset_path(), policy, 1)
    opt = KerasAdam(list(policy.parameters()), lr=cfg.lr, betas=tuple(cfg.betas))
    g_data, g_loss = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    policy.train()
    rec = {"seconds": [], "persistent_share": [], "neighbour_share": [], "info_nce": []}
    for step in range(steps):
        t = time.perf_counter()
        idx = torch.randint(len(ds), (cfg.batch_size,), generator=g_data)
        loss, m = policy.compute_loss({**ds.batch(idx), "index": idx}, g_loss, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        rec["seconds"].append(time.perf_counter() - t)
        for k in ("persistent_share", "neighbour_share", "info_nce"):
            rec[k].append(m.get(k, 0.0))
    return rec, (probe_neighbour_starts(policy, ds) if probe else None)


@torch.no_grad()
def probe_neighbour_starts(policy, ds, n: int = 512, reps: int = 3) -> dict:
    from steerlab.ebm.losses import info_nce

    policy.eval()
    mem, cfg = policy.chain_memory, policy.cfg
    chains = mem.states.shape[1]
    rows = torch.randperm(len(ds), generator=torch.Generator().manual_seed(7))
    filled = mem.read(rows, chains, policy.act_dim)[1]
    near = mem.nearest_stored(rows, cfg.persistent_neighbours)
    new, new_near, own = rows[~filled & (near >= 0)][:n], near[~filled & (near >= 0)][:n], rows[filled][:n]

    def stats(rows, start, steps):
        b = ds.batch(rows)
        o, pos = policy.obs_features(b["obs"]), policy.act_norm.normalize(b["action"][:, 0])
        e, nce = [], []
        for r in range(reps):
            g = torch.Generator().manual_seed(100 + r)
            a = start if start is not None else policy.uniform_actions((len(rows), chains), g, o.device)
            a = policy._training_chain(o, a, steps, g) if steps else a
            f = policy.logits(o, torch.cat([a, pos[:, None]], 1))
            e.append(float(-f[:, :-1].mean()))
            nce.append(float(info_nce(f[:, -1], f[:, :-1], cfg.temperature).mean()))
        return {"energy": round(float(np.mean(e)), 3), "info_nce": round(float(np.mean(nce)), 4)}

    k, p = cfg.langevin.num_steps, cfg.persistent_steps
    out = {"rows": len(new), f"uniform+{k}": stats(new, None, k)}
    neighbour = mem.read(new_near, chains, policy.act_dim)[0]
    out.update({f"neighbour+{s}": stats(new, neighbour, s) for s in (0, 5, 10, 20, 40)})
    out["own_rows"] = len(own)
    out[f"own: uniform+{k}"] = stats(own, None, k)
    out[f"own: stored+{p}"] = stats(own, mem.read(own, chains, policy.act_dim)[0], p)
    return out


def main():
    ap = parser(__doc__, "threads")
    ap.set_defaults(threads=1)
    ap.add_argument("--dataset", default=None,
                    help="2-D particle dataset (default: the preset's, collected if missing)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--window", type=int, nargs=2, default=[100, 300], help="steps [from, to) measured")
    ap.add_argument("--inits", nargs="+", default=["uniform", "neighbour"], choices=["uniform", "neighbour"])
    ap.add_argument("--full", action="store_true", help="also the budget preset (every chain full, from uniform)")
    ap.add_argument("--probe", action="store_true", help="after the 'neighbour' variant, probe its neighbour starts")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    lo, hi = a.window
    if not 0 <= lo < hi <= a.steps:
        ap.error(f"--window {lo} {hi} must lie within the {a.steps} steps")
    base = ["--n-dim", "2", *(["--dataset", a.dataset] if a.dataset else [])]
    variants = {f"persistent, init {i}": (PRESET, [*base, "--policy.persistent-init", i]) for i in a.inits}
    if a.full:
        variants["budget (full chains)"] = ("ibc-particle-langevin-budget", base)
    cells = {}
    for name, (preset, overrides) in variants.items():
        rec, probe = train_steps(preset, overrides, a.steps, a.probe and name.endswith("neighbour"))
        s = {k: np.asarray(v[lo:hi]) for k, v in rec.items()}
        cells[name] = {
            "preset": preset, "overrides": overrides, "window": [lo, hi],
            "ms_per_step": round(1000 * float(s["seconds"].mean()), 1),
            "ms_per_step_median": round(1000 * float(np.median(s["seconds"])), 1),
            "full_chain_share": round(1 - float(s["persistent_share"].mean()), 4) if preset == PRESET else 1.0,
            "neighbour_share": round(float(s["neighbour_share"].mean()), 4),
            "info_nce": round(float(s["info_nce"].mean()), 4),
            **({"probe": probe} if probe else {}),
        }
        print(json.dumps({name: cells[name]}), flush=True)
    save(NAME, {"command": command_line(), "cells": cells})


if __name__ == "__main__":
    sys.exit(main())
