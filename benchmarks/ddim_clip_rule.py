"""Does DDIM's clip rule change a trained ε-prediction policy's success? The same weights evaluated with the
model's ε kept under clipping (diffusers' default) and with ε re-derived from the clipped clean chunk
(``use_clipped_model_output=True``), on the same seeds.

    python benchmarks/ddim_clip_rule.py --runs RUN [RUN ...] [--episodes 100]

Writes benchmarks/results/ddim_clip_rule.json.
"""

from __future__ import annotations

import dataclasses

import torch

from common import command_line, parser, save

from steerlab.eval.run import load_run
from steerlab.tasks import get_task


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--runs", nargs="+", required=True, help="run directories of diffusion policies with clip_sample")
    ap.add_argument("--episodes", type=int, default=100)
    a = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for run in a.runs:
        for clipped in (False, True):
            cfg, policy, ckpt = load_run(run)
            policy.process = dataclasses.replace(cfg.policy, use_clipped_model_output=clipped).process()
            cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, episodes=a.episodes))
            res, _ = get_task(cfg.env).evaluate(policy, cfg, progress=False)
            rows.append({"run_dir": str(run), "checkpoint": str(ckpt), "n_dim": cfg.n_dim,
                         "prediction_type": cfg.policy.prediction_type, "use_clipped_model_output": clipped,
                         "success_rate": res["success_rate"], "success_ci95": res["success_ci95"],
                         "episodes": res["episodes"]})
            print(f"{run} use_clipped_model_output={clipped}: success {res['success_rate']:.0%}", flush=True)
    save("ddim_clip_rule", {"command": command_line(), "rows": rows})


if __name__ == "__main__":
    main()
