"""Precision and spread of trained particle policies per network parameterization, at observations where the
oracle's action is known exactly.

    python benchmarks/parameterization.py --runs runs/sweep-diffusion-x0-2d-s0 runs/sweep-diffusion-eps-2d-s0 ...

At the first observation of 50 episodes (env seeds 100000...; the agent has not reached its first goal, so IBC's
oracle commands the first goal itself) each run samples 8 chunks from 8 initial noises with its configured sampler.
Reported per run: the median L2 distance of the executed actions (the first ``n_action_steps`` of a chunk) to the
oracle's action, and the spread of the 8 samples (per-coordinate std of the executed actions, averaged). The
run's closed-loop success comes from its own metrics.json (the sweep's evaluation). Writes
benchmarks/results/parameterization.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from common import command_line, parser, save

from steerlab.eval.run import load_run
from steerlab.steer.policy_chain import initial_observations


@torch.no_grad()
def measure(run: Path, n_obs: int, samples: int) -> dict:
    cfg, policy, ckpt = load_run(run)
    obs, dicts = initial_observations(cfg, policy, [100_000 + i for i in range(n_obs)])
    chunks = policy.predict_action_chunk(obs.repeat_interleave(samples, 0), torch.Generator().manual_seed(0))
    ex = chunks.view(n_obs, samples, *policy.chunk_shape)[:, :, : policy.n_action_steps].numpy()  # [O, S, k, N]
    goal = np.stack([d["pos_first_goal"] for d in dicts])[:, None, None]
    metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").exists() else {}
    return {"run_dir": str(run), "checkpoint": str(ckpt), "n_dim": cfg.n_dim, "kind": cfg.policy.kind,
            "prediction_type": cfg.policy.prediction_type, "sampler": cfg.policy.sampler,
            "steps": metrics.get("train", {}).get("steps"), "success_rate": metrics.get("success_rate"),
            "median_l2_to_oracle": float(np.median(np.linalg.norm(ex - goal, axis=-1))),
            "spread": float(ex.std(1).mean()), "observations": n_obs, "samples": samples}


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--runs", nargs="+", required=True)
    ap.add_argument("--observations", type=int, default=50)
    ap.add_argument("--samples", type=int, default=8)
    a = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for r in a.runs:
        rows.append(measure(Path(r), a.observations, a.samples))
        x = rows[-1]
        print(f"{r}: {x['kind']}/{x['prediction_type']} {x['n_dim']}-D, success {x['success_rate']}, median L2 "
              f"{x['median_l2_to_oracle']:.4f}, spread {x['spread']:.4f}", flush=True)
    save("parameterization", {"command": command_line(), "rows": rows})


if __name__ == "__main__":
    main()
