"""Energy-critic benchmarks.

    python benchmarks/critic_bench.py speed [--repeats 30]
    python benchmarks/critic_bench.py task --base-run RUN [--minutes 10] [--episodes 100] [--correct steps=3,alpha=0.1] [--rerank 16]

``speed`` (one process, variants interleaved; writes results/critic_speed.json):
- latency per action chunk (batch 1) of the flow-particle policy plain, with 1/3/5 correction steps and with
  re-ranking of 8/16/64 samples, as overhead relative to plain sampling;
- training throughput of the flow policy with the energy loss (joint mode) relative to without;
- parameter count and forward/backward time of the critic with the openpi seed's shapes.

``task`` (writes results/critic_task<tag>.json and critic_training<tag>.png / critic_landscape<tag>.png): trains
the critic beside a frozen trained base policy of any task (`steerlab train energy-particle --policy.base-run RUN`,
``--minutes`` budget; the base run's task, demonstrations and policy config are passed through a config file),
then evaluates base / re-rank / correct / both on the same seeds (`steerlab eval RUN --correct ... --rerank ...`),
times one action chunk per variant at batch 1 on demonstration observations, and draws the training curves and
an energy landscape over a 2-D slice of action space (the first two action dimensions). For example, beside the
10-demo MetaWorld diffusion policy:

    python benchmarks/critic_bench.py task --base-run runs/mw-diffusion-pick-place-v3-10-s0 --episodes 50 \
        --tag _metaworld_pick-place-v3
"""

from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from common import interleaved, parser, results_path, save

from steerlab.generative.policy import FlowConfig, GenerativePolicy
from steerlab.steer.critic import SEED_SHAPES, EnergyCritic
from steerlab.commands.eval_args import parse_test_time
from steerlab.steer.critic_policy import EnergyPolicy, EnergyPolicyConfig, TestTime


def _speed_for_base(base, repeats: int) -> tuple[dict, dict]:
    """Latency per chunk (batch 1) with correction / re-ranking relative to plain sampling, and training
    throughput of the flow policy with the energy loss (joint mode) relative to without, for one base policy."""
    torch.manual_seed(0)
    obs_dim, act_dim = 8, 2
    pol = EnergyPolicy(EnergyPolicyConfig(base=base), obs_dim, act_dim).eval()
    obs = torch.rand(1, 2, obs_dim)
    g = torch.Generator().manual_seed(0)
    variants = {"plain": TestTime()}
    variants.update({f"correct {k}": TestTime(correct_steps=k) for k in (1, 3, 5)})
    variants.update({f"rerank {n}": TestTime(rerank=n) for n in (8, 16, 64)})
    t = interleaved({k: (lambda tt=tt: pol.predict_action_chunk(obs, g, test_time=tt)) for k, tt in variants.items()},
                    repeats=repeats, warmup=2)
    lat = {k: {"ms": 1000 * v, "overhead": v / t["plain"] - 1} for k, v in t.items()}
    for k, v in lat.items():
        print(f"latency {k:12s} {v['ms']:7.2f} ms  overhead {v['overhead']:+.0%}")

    plain = GenerativePolicy(base, obs_dim, act_dim)
    models = {"without energy": plain,
              "with energy (joint)": EnergyPolicy(EnergyPolicyConfig(base=base, mode="joint"), obs_dim, act_dim),
              "with energy, no policy negatives": EnergyPolicy(EnergyPolicyConfig(base=base, mode="joint", n_policy=0),
                                                               obs_dim, act_dim)}
    opts = {k: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], 1e-4) for k, m in models.items()}
    batch = {"obs": torch.rand(256, 2, obs_dim), "action": torch.rand(256, 16, act_dim),
             "action_mask": torch.ones(256, 16, dtype=torch.bool)}

    def train_step(k):
        loss, _ = models[k].compute_loss(batch, g)
        opts[k].zero_grad()
        loss.backward()
        opts[k].step()

    tt = interleaved({k: (lambda k=k: train_step(k)) for k in models}, repeats=max(3, repeats // 6), warmup=1)
    thr = {"steps_per_s": {k: 1 / v for k, v in tt.items()},
           "slowdown": tt["with energy (joint)"] / tt["without energy"] - 1,
           "slowdown_without_policy_negatives": tt["with energy, no policy negatives"] / tt["without energy"] - 1}
    print(f"training: {thr['steps_per_s']}, slowdown {thr['slowdown']:+.0%} "
          f"({thr['slowdown_without_policy_negatives']:+.0%} without policy negatives)")
    return lat, thr


def speed(a) -> None:
    from steerlab.generative.policy import DenoiserConfig

    bases = {"flow MLP 256x4 (0.3M)": FlowConfig(), "flow UNet 64/128/256 (4.1M)": FlowConfig(denoiser=DenoiserConfig(arch="unet"))}
    per_base = {}
    for name, base in bases.items():
        print(f"--- base policy: {name}")
        lat, thr = _speed_for_base(base, a.repeats)
        per_base[name] = {"latency_batch1": lat, "training": thr}

    seed = EnergyCritic(SEED_SHAPES)
    n_params = sum(p.numel() for p in seed.parameters())
    ctx, mask = torch.randn(4, 816, 2048), torch.ones(4, 816, dtype=torch.bool)  # pi0-like prefix: 3 images x 256 + 48 text
    acts = torch.randn(4, 1, 50, 32)

    def fwd():
        with torch.no_grad():
            seed(ctx, mask, acts)

    def fwd_bwd():
        seed(ctx, mask, acts).sum().backward()

    ts = interleaved({"forward": fwd, "forward+backward": fwd_bwd}, repeats=3, warmup=1)
    seed_res = {"params": n_params, "batch": 4, "context_tokens": 816, "seconds": ts}
    print(f"seed-shape critic: {n_params / 1e6:.2f}M params, forward {ts['forward'] * 1000:.0f} ms, "
          f"forward+backward {ts['forward+backward'] * 1000:.0f} ms (batch 4, 816 context tokens)")
    save("critic_speed", {"command": "python benchmarks/critic_bench.py speed " + " ".join(sys.argv[2:]),
                          "per_base": per_base, "seed_shapes": seed_res,
                          "targets": {"correct 3 overhead": "<= 0.15"}})


def _plot_training(csv_path: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(open(csv_path)))
    step = [int(r["step"]) for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    axes[0].plot(step, [float(r["energy_loss"]) for r in rows], label="train")
    if rows and rows[0].get("monitor_energy_loss"):
        axes[0].plot(step, [float(r["monitor_energy_loss"]) for r in rows], label="held-out")
    axes[0].set(title="InfoNCE energy loss", xlabel="step")
    axes[1].plot(step, [float(r["e_pos"]) for r in rows], label="E_pos (demonstrations)")
    axes[1].plot(step, [float(r["e_neg"]) for r in rows], label="E_neg (negatives)")
    axes[1].set(title="energies", xlabel="step")
    axes[2].plot(step, [float(r["rank_acc"]) for r in rows], label="train")
    if rows and rows[0].get("monitor_rank_acc"):
        axes[2].plot(step, [float(r["monitor_rank_acc"]) for r in rows], label="held-out")
    axes[2].set(title="ranking accuracy", xlabel="step", ylim=(0, 1))
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _plot_landscape(policy: EnergyPolicy, data_path: str, out: Path, tt: TestTime) -> None:
    """E(o, demo chunk + (dx, dy) on every step) over a grid of offsets, with the policy's samples and the
    corrected samples placed at their mean offset from the demonstration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from steerlab.data.windows import WindowDataset
    from steerlab.data.zarr_io import load_episodes

    d = load_episodes(data_path, ["obs", "action"])
    ds = WindowDataset.from_arrays(d.data["obs"], d.data["action"], d.episode_ends, policy.n_obs_steps,
                                   policy.cfg.base.horizon)
    b = ds.batch(torch.tensor([int(d.episode_ends[-1]) - 40]))
    obs, x = b["obs"], policy.base.act_norm.normalize(b["action"])
    grid = torch.linspace(-0.6, 0.6, 61)
    dx, dy = torch.meshgrid(grid, grid, indexing="xy")
    off = torch.stack([dx.flatten(), dy.flatten()], -1)
    off = torch.cat([off, off.new_zeros(len(off), x.shape[-1] - 2)], -1)  # offsets on the first two dimensions
    with torch.no_grad():
        e = policy.energy(obs, x[:, None] + off[None, :, None, :]).view(61, 61)
        g = torch.Generator().manual_seed(0)
        samples = policy.sample_normalized(obs.repeat(32, 1, 1), g, tt=TestTime())
    corrected = policy.sample_normalized(obs.repeat(32, 1, 1), torch.Generator().manual_seed(0),
                                         tt=dataclasses.replace(tt, rerank=1))
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    im = ax.contourf(grid, grid, e.numpy(), levels=30, cmap="viridis")
    fig.colorbar(im, ax=ax, label="energy (lower = better)")
    so = (samples - x).mean(1)
    co = (corrected - x).mean(1)
    ax.plot(0, 0, "r*", ms=14, label="demonstration")
    ax.scatter(so[:, 0], so[:, 1], s=12, c="w", edgecolors="k", label="policy samples")
    ax.scatter(co[:, 0], co[:, 1], s=12, c="tab:orange", label="corrected samples")
    ax.set(xlim=(-0.6, 0.6), ylim=(-0.6, 0.6), xlabel="offset dim 0 (normalized)", ylabel="offset dim 1",
           title="E(o, demo chunk + offset)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _chunk_latency(policy: EnergyPolicy, data_path: str, correct: str, rerank: int, repeats: int = 20) -> dict:
    """Milliseconds per action chunk at batch 1 for each test-time variant, interleaved, on demonstration
    observations (the same window for every variant)."""
    from steerlab.data.windows import WindowDataset
    from steerlab.data.zarr_io import load_episodes

    d = load_episodes(data_path, ["obs", "action"])
    ds = WindowDataset.from_arrays(d.data["obs"], d.data["action"], d.episode_ends, policy.n_obs_steps,
                                   policy.cfg.base.horizon)
    obs = ds.batch(torch.tensor([len(ds) // 2]))["obs"]
    g = torch.Generator().manual_seed(0)
    variants = {"base": TestTime(), f"rerank {rerank}": parse_test_time(None, rerank, None),
                "correct": parse_test_time(correct, None, None), "both": parse_test_time(correct, rerank, None)}
    t = interleaved({k: (lambda tt=tt: policy.predict_action_chunk(obs, g, test_time=tt)) for k, tt in variants.items()},
                    repeats=repeats, warmup=2)
    out = {k: 1000 * v for k, v in t.items()}
    print("latency per chunk (batch 1): " + ", ".join(f"{k} {v:.1f} ms" for k, v in out.items()))
    return out


def task(a) -> None:
    from steerlab.eval.run import evaluate_test_time, load_run

    base_cfg = json.loads((Path(a.base_run) / "config.json").read_text())
    runs = Path(a.runs_dir)
    name = f"critic-{Path(a.base_run).name}"
    preset = f"energy-{base_cfg['env'].split('/')[0]}"  # energy-particle, energy-metaworld
    cmd = ["steerlab", "train", preset, "--policy.base-run", a.base_run,
           "--max-minutes", str(a.minutes), "--out-dir", str(runs), "--run-name", name, "--no-progress", "--resume",
           "--no-eval", "--eval.episodes", str(a.episodes), "--config-file", str(runs / f"{name}.base.json")]
    runs.mkdir(parents=True, exist_ok=True)
    # the critic's base config must equal the base run's, and it trains on the same task and demonstrations: pass
    # them through a config file
    same = {k: base_cfg[k] for k in ("env", "n_dim", "episodes", "multimodal", "demo_noise", "dataset", "eval",
                                     "threads") if k in base_cfg}
    (runs / f"{name}.base.json").write_text(json.dumps({**same, "policy": {"base": base_cfg["policy"]},
                                                        # held-out ranking accuracy on a fifth of the demos, <= 100
                                                        "val_episodes": max(1, min(100, base_cfg["episodes"] // 5))}))
    t0 = time.time()
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    train_s = time.time() - t0
    summary = runs / name / "train_summary.json"
    if summary.exists():  # the run's own training time (a resumed, finished run trains no more)
        train_s = json.loads(summary.read_text())["train_seconds"]
    run = runs / name
    res = evaluate_test_time(run, a.correct, a.rerank, None, a.episodes, progress=False)
    rows = res["variants"]
    base = rows["base"]["success_rate"]
    _plot_training(run / "metrics.csv", results_path(f"critic_training{a.tag}.png"))
    cfg, policy, _ = load_run(run)
    _plot_landscape(policy, str(cfg.dataset_path()), results_path(f"critic_landscape{a.tag}.png"),
                    parse_test_time(a.correct))
    latency = _chunk_latency(policy, str(cfg.dataset_path()), a.correct, a.rerank)
    logged = list(csv.DictReader(open(run / "metrics.csv")))
    last = logged[-1] if logged else {}  # empty when training stopped before its first log interval
    save(f"critic_task{a.tag}", {
        "command": "python benchmarks/critic_bench.py task " + " ".join(sys.argv[2:]),
        "base_run": a.base_run, "critic_run": str(run), "critic_train_seconds": train_s, "env": cfg.env,
        "n_dim": cfg.n_dim, "demos": cfg.episodes, "base_preset": base_cfg.get("preset"),
        "latency_ms_batch1": latency,
        "final_train_metrics": {k: float(v) for k, v in last.items() if v not in ("", None)},
        "success": {k: {"rate": r["success_rate"], "ci95": r["success_ci95"], "episodes": r["episodes"]}
                    for k, r in rows.items()},
        "gain_points": {k: 100 * (r["success_rate"] - base) for k, r in rows.items()},
    })


def main() -> None:
    ap = parser(__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--repeats", type=int, default=30)
    t = sub.add_parser("task")
    t.add_argument("--base-run", required=True)
    t.add_argument("--minutes", type=float, default=10.0)
    t.add_argument("--episodes", type=int, default=100)
    t.add_argument("--correct", default="steps=3,alpha=0.1")
    t.add_argument("--rerank", type=int, default=16)
    t.add_argument("--runs-dir", default="runs")
    t.add_argument("--tag", default="", help="suffix of the result files (e.g. _metaworld_push-v3)")
    a = ap.parse_args()
    speed(a) if a.cmd == "speed" else task(a)


if __name__ == "__main__":
    main()
