"""Autoregressive DFO: does resampling the prefix (the paper's Algorithm 2) instead of whole samples change a
trained policy's success? The same weights evaluated with both inference loops on the same seeds.

    python benchmarks/ardfo_inference.py --runs RUN [RUN ...] [--episodes 100]

``prefix`` is the library's :func:`steerlab.ebm.dfo.autoregressive_dfo`: at dimension j it resamples a_0..j and
leaves each slot's later dimensions alone, and its last iteration only evaluates. ``whole`` is the loop steerlab
used before: at dimension j it resamples whole samples (every dimension copied with the chosen prefix), adds
noise to dimension j, and does so in every iteration, the last included. It is kept here as the ablation.

Writes benchmarks/results/ardfo_inference.json.
"""

from __future__ import annotations

import dataclasses

import torch

from common import command_line, parser, save

import steerlab.ebm.policy as ebm_policy
from steerlab.ebm.dfo import resample
from steerlab.eval.run import load_run
from steerlab.tasks import get_task


def whole_sample_ardfo(logits_fn, a, lo, hi, *, iterations=3, noise_std=0.33, noise_shrink=0.5, temperature=1.0,
                       generator=None):
    std = noise_std
    for _ in range(iterations):
        for j in range(a.shape[-1]):
            a, _ = resample(a, logits_fn(a, j), temperature, generator)
            a = a.clone()
            a[..., j] = a[..., j] + std * torch.randn(a.shape[:-1], generator=generator, dtype=a.dtype, device=a.device)
            a = torch.maximum(torch.minimum(a, hi), lo)
        std *= noise_shrink
    return a, logits_fn(a, a.shape[-1] - 1)


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--runs", nargs="+", required=True, help="run directories of ibc-particle-ardfo policies")
    ap.add_argument("--episodes", type=int, default=100)
    a = ap.parse_args()
    torch.set_num_threads(1)
    library = ebm_policy.autoregressive_dfo
    rows = []
    for run in a.runs:
        for name, fn in (("prefix", library), ("whole", whole_sample_ardfo)):
            ebm_policy.autoregressive_dfo = fn
            try:
                cfg, policy, ckpt = load_run(run)
                cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, episodes=a.episodes))
                res, _ = get_task(cfg.env).evaluate(policy, cfg, progress=False)
            finally:
                ebm_policy.autoregressive_dfo = library
            rows.append({"run_dir": str(run), "checkpoint": str(ckpt), "n_dim": cfg.n_dim, "resampling": name,
                         "inference_samples": cfg.policy.inference_samples,
                         "success_rate": res["success_rate"], "success_ci95": res["success_ci95"],
                         "episodes": res["episodes"], "seconds": res["seconds"]})
            print(f"{run} {name}: success {res['success_rate']:.0%} ({res['seconds']:.0f} s)", flush=True)
    save("ardfo_inference", {"command": command_line(), "rows": rows})


if __name__ == "__main__":
    main()
