"""Memory and time of a gradient w.r.t. the initial noise through 1/10/50/100-step sampling chains, for each
gradient mode (full backprop vs per-step checkpointing).

    python benchmarks/grad_memory.py [--repeats 3]

Memory: each (mode, steps) runs in its own subprocess; the figure is the peak RSS (ru_maxrss) of the
forward+backward minus the RSS after building the model and the inputs (so the interpreter, torch and the
weights do not count). Every cell runs twice: with glibc's default malloc settings, and with
``MALLOC_TRIM_THRESHOLD_=0`` (freed heap memory goes back to the OS at once). Under checkpointing each step's
activations are recomputed and freed during the backward pass; with the default settings glibc keeps part of
what was freed, so the RSS creeps up with the steps although the live tensors do not -- the trimmed figure is
the memory the chain actually needs. Time: both modes side by side in one process (interleaved), as ratios.

The chain: DDIM over the ConditionalUnet1D of the diffusion-particle-unet preset (down dims 64/128/256,
~4M parameters), batch 256 chunks of 16 x 2 — the activations of one step are ~tens of MB, so the memory of
full backprop grows visibly with the steps. Writes benchmarks/results/grad_memory.json and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

import torch

from common import command_line, interleaved, parser, results_path, save

from steerlab.nets.unet1d import ConditionalUnet1D
from steerlab.sampling import alphas_cumprod, inference_timesteps, sample_ddim, squaredcos_cap_v2

B, H, A, COND = 256, 16, 2, 16


def build():
    torch.manual_seed(0)
    net = ConditionalUnet1D(A, COND, 128, (64, 128, 256))
    cond = torch.randn(B, COND)
    abar = alphas_cumprod(squaredcos_cap_v2(100))
    z = torch.randn(B, H, A)
    return net, cond, abar, z


def grad_once(net, cond, abar, z, steps, mode):
    zz = z.clone().requires_grad_()
    out = sample_ddim(lambda x, t: net(x, t, cond), zz, abar, inference_timesteps(100, steps), grad=mode)
    out.pow(2).sum().backward()
    return zz.grad


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, steps: int) -> None:
    net, cond, abar, z = build()
    net.requires_grad_(False)  # only the noise is optimized
    with torch.no_grad():  # warm up allocator and kernels with a forward of one step
        net(z, torch.zeros(B), cond)
    base = rss_mb()
    grad_once(net, cond, abar, z, steps, mode)
    print(json.dumps({"base_mb": base, "peak_mb": rss_mb()}))


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 10, 50, 100])
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child[0], int(a.child[1]))
        return
    mem: dict[str, dict[str, float]] = {"default": {}, "trim": {}}
    for alloc, extra_env in (("default", {}), ("trim", {"MALLOC_TRIM_THRESHOLD_": "0"})):
        env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | extra_env
        for mode in ("full", "checkpoint"):
            for n in a.steps:
                r = subprocess.run([sys.executable, __file__, "--child", mode, str(n)], capture_output=True, text=True,
                                   check=True, env=env)
                m = json.loads(r.stdout.strip().splitlines()[-1])
                mem[alloc][f"{mode}/{n}"] = m["peak_mb"] - m["base_mb"]
                print(f"memory ({alloc} malloc) {mode:10s} {n:4d} steps: +{mem[alloc][f'{mode}/{n}']:.0f} MB", flush=True)
    net, cond, abar, z = build()
    net.requires_grad_(False)
    times = {}
    for n in a.steps:
        t = interleaved({m: (lambda m=m, n=n: grad_once(net, cond, abar, z, n, m)) for m in ("full", "checkpoint")},
                        repeats=a.repeats, warmup=1 if n <= 10 else 0)
        times.update({f"{m}/{n}": v for m, v in t.items()})
        print(f"time {n:4d} steps: full {t['full']:.2f} s, checkpoint {t['checkpoint']:.2f} s "
              f"({t['checkpoint'] / t['full']:.2f}x)")
    n_max, n_min = max(a.steps), min(a.steps)
    res = {
        "command": command_line(),
        "chain": f"DDIM over ConditionalUnet1D(64/128/256), batch {B}, chunk {H}x{A}; gradient w.r.t. z0 only",
        "extra_rss_mb": mem["default"], "extra_rss_mb_trimmed_malloc": mem["trim"], "seconds": times,
        "checkpoint_mem_ratio_max_vs_1": mem["default"][f"checkpoint/{n_max}"] / mem["default"][f"checkpoint/{n_min}"],
        "checkpoint_mem_ratio_max_vs_1_trimmed_malloc": mem["trim"][f"checkpoint/{n_max}"] / mem["trim"][f"checkpoint/{n_min}"],
        "full_mem_ratio_max_vs_1": mem["default"][f"full/{n_max}"] / mem["default"][f"full/{n_min}"],
        "checkpoint_time_ratio_at_max": times[f"checkpoint/{n_max}"] / times[f"full/{n_max}"],
        "targets": {"checkpoint_mem_ratio_max_vs_1": "<= 1.5", "checkpoint_time_ratio_at_max": "<= 2.0"},
    }
    save("grad_memory", res)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for mode in ("full", "checkpoint"):
        for alloc, ls in (("default", "o-"), ("trim", "s--")):
            axes[0].plot(a.steps, [mem[alloc][f"{mode}/{n}"] for n in a.steps], ls, label=f"{mode} ({alloc} malloc)")
        axes[1].plot(a.steps, [times[f"{mode}/{n}"] for n in a.steps], "o-", label=mode)
    axes[0].set_yscale("log")
    axes[0].set(xlabel="chain steps", ylabel="extra peak RSS (MB)", title="memory of d loss / d z0")
    axes[1].set(xlabel="chain steps", ylabel="seconds", title="time of forward + backward")
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    out = results_path("grad_memory.png")
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
