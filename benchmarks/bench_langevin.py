"""Speed of IBC's Langevin machinery: steerlab against the straightforward autograd implementation and
against torchebm's LangevinDynamics, on the same energy network, measured side by side in one process.

    python benchmarks/bench_langevin.py [--n-dim 2] [--repeats 5] [--skip-bf16 --name langevin_speed_fp32]

Writes benchmarks/results/<name>.json and .png (name: langevin_speed). ``--skip-bf16`` leaves out the bf16
variants, which take tens of minutes on CPUs that emulate bf16 (``benchmarks/chain_dtype.py``).

Variants:
- ``naive``: the formula written the plain way: per step, ``f = net(cat(obs, a))`` and
  ``torch.autograd.grad(f.sum(), a)``.
- ``steerlab fp32``: :meth:`MLPResNet.input_grad` (hand-written backward, obs part of the first layer
  computed once, cache-sized chunks).
- ``steerlab bf16``: the same with bfloat16 matrix products (``IBCConfig.chain_dtype="bfloat16"``).
- ``torchebm``: ``torchebm.samplers.LangevinDynamics`` (textbook ULA, constant step) on an energy model
  wrapping the same network for a fixed observation; same chains × steps.

Also: the chains' FP32 FLOP/s (:func:`chain_step_flops` says how they are counted) as a fraction of the fastest
of torch's n × n matrix products (n in GEMM_SIZES) timed beside them, and the training step of the persistent-chain option
(``ibc-particle-langevin-persistent``'s chains at the repo batch of 512, every row revisited).
"""

from __future__ import annotations


import numpy as np
import torch

from common import command_line, interleaved, parser, results_path, save

from steerlab.ebm.langevin import langevin, langevin_step, langevin_step_size
from steerlab.ebm.losses import gradient_penalty, info_nce
from steerlab.ebm.policy import IBCConfig, IBCPolicy
from steerlab.presets import get_preset


def naive_chain(net, o, a, lo, hi, steps, gen):
    """IBC's Langevin written the straightforward way (autograd for dE/da each step)."""
    obs = o[:, None].expand(-1, a.shape[1], -1)
    for k in range(steps):
        a = a.detach().requires_grad_(True)
        f = net(torch.cat([obs, a], -1))[..., 0]
        (df,) = torch.autograd.grad(f.sum(), a)
        xi = torch.randn(a.shape, generator=gen)
        a = langevin_step(a.detach(), -df, xi, langevin_step_size(k, steps), lo, hi)
    return a.detach()


def naive_train_step(pol: IBCPolicy, opt, batch, gen):
    """One repo-preset IBC step, every piece written the plain way."""
    cfg = pol.cfg
    o = pol.obs_features(batch["obs"])
    pos = pol.act_norm.normalize(batch["action"][:, 0])
    neg = pol.uniform_actions((o.shape[0], cfg.num_counter_examples), gen, o.device)
    pol.eval()
    neg = naive_chain(pol.net, o, neg, pol.lo, pol.hi, cfg.langevin.num_steps, gen)
    pol.train()
    acts = torch.cat([neg, pos[:, None]], 1).requires_grad_(True)
    f = pol.net(torch.cat([o[:, None].expand(-1, acts.shape[1], -1), acts], -1))[..., 0]
    loss = info_nce(f[:, -1], f[:, :-1]).mean()
    (g,) = torch.autograd.grad(f.sum(), acts, create_graph=True)
    loss = loss + gradient_penalty(g).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def chain_step_flops(net, act_dim: int) -> int:
    """FLOPs of one Langevin chain step of one chain through ``MLPResNet.input_grad``: 2 per multiply-add of the
    dense layers' matrix products, in the forward pass and in the input-gradient backward pass (no weight
    gradients); the observation part of the first layer is left out (it is computed once per row, not per chain
    step), and so are element-wise operations (ReLU, residual adds, the Langevin update)."""
    dense = [net.proj] + [layer for block in net.blocks for layer in block] + [net.head]
    fwd = 0
    for i, layer in enumerate(dense):
        out_f, in_f = layer.weight.shape
        fwd += 2 * out_f * (act_dim if i == 0 else in_f)
    return 2 * fwd


GEMM_SIZES = (256, 512, 1024, 2048)
"""the reference matrix products: two n x n FP32 matrices for each n, timed interleaved with the chains (so a load
on the machine hits them alike); the fastest one's FLOP/s is the CPU's reachable FP32 throughput the chains are
measured against (small products stay in cache, large ones amortize the call: which wins depends on the CPU)"""


def torchebm_energy(net, o):
    """E(a) = -f(o, a) for a fixed observation, as a torchebm model (x -> [N] energies)."""
    from torchebm.core import BaseModel

    class TorchEBMEnergy(BaseModel):
        def __init__(self):
            super().__init__()
            self.net, self.o = net, o

        def forward(self, x, **kw):
            b, n = self.o.shape[0], x.shape[0] // self.o.shape[0]
            return -self.net.forward_split(self.o, x.reshape(b, n, -1))[..., 0].reshape(-1)

    return TorchEBMEnergy()


def main():
    ap = parser(__doc__)
    ap.add_argument("--n-dim", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-bf16", action="store_true", help="leave out the bf16 variants (slow without native bf16)")
    ap.add_argument("--name", default="langevin_speed", help="results file stem in benchmarks/results/")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    N = args.n_dim
    rng = np.random.default_rng(0)
    obs_data, act_data = rng.random((5000, 4 * N)), rng.random((5000, N))
    res: dict = {"n_dim": N, "repeats": args.repeats,
                 "command": command_line()}

    def variants(fns: dict) -> dict:
        """``fns`` without its bf16 variants under ``--skip-bf16``."""
        return {k: f for k, f in fns.items() if not (args.skip_bf16 and "bf16" in k)}

    def make(dtype):
        cfg = get_preset("ibc-particle-langevin").policy
        pol = IBCPolicy(IBCConfig(**{**cfg.__dict__, "chain_dtype": dtype}), 4 * N, N)
        pol.fit_normalizers({"obs": obs_data, "action": act_data}, action_low=np.zeros(N), action_high=np.ones(N))
        return pol

    pol32, pol16 = make("float32"), make("bfloat16")
    pol16.load_state_dict(pol32.state_dict())
    net = pol32.net.eval()
    K = pol32.cfg.langevin.num_steps

    # ---- chain throughput: training shape (512 obs x 8 chains) and inference shape (1 obs x 512 chains)
    for label, b, n in [("train_shape_512x8", 512, 8), ("inference_shape_1x512", 1, 512)]:
        o = torch.randn(b, 8 * N)
        a0 = torch.rand(b, n, N) * 2 - 1
        gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
        lo, hi = pol32.lo, pol32.hi
        from torchebm.samplers import LangevinDynamics

        tebm = LangevinDynamics(torchebm_energy(net, o), step_size=1e-3, noise_scale=1.0)
        fns = variants({
            "naive": lambda: naive_chain(net, o, a0, lo, hi, K, gen()),
            "steerlab_fp32": lambda: langevin(pol32.grad_energy_fn(o), a0, lo, hi, num_steps=K, generator=gen()),
            "steerlab_bf16": lambda: langevin(pol16.grad_energy_fn(o), a0, lo, hi, num_steps=K, generator=gen()),
            "torchebm": lambda: tebm.sample(x=a0.reshape(-1, N).clone(), n_steps=K, generator=gen()),
        })
        mats = {n: (torch.randn(n, n), torch.randn(n, n)) for n in GEMM_SIZES}
        gemms = {f"gemm{n}": (lambda n=n: [torch.mm(*mats[n]) for _ in range(max(1, (2048 // n) ** 2))])
                 for n in GEMM_SIZES}  # small products repeated so that every call does comparable work
        with torch.no_grad():
            t = interleaved({**{k: f for k, f in fns.items() if k != "naive"}, **gemms}, args.repeats)
        gemm_by_n = {n: max(1, (2048 // n) ** 2) * 2 * n ** 3 / t.pop(f"gemm{n}") for n in GEMM_SIZES}
        gemm = max(gemm_by_n.values())
        t.update(interleaved({"naive": fns["naive"]}, args.repeats))
        res[label] = {
            "chains": b * n, "steps": K,
            "seconds": t,
            "chain_steps_per_s": {k: b * n * K / v for k, v in t.items()},
            "speedup_vs_naive": {k: t["naive"] / v for k, v in t.items()},
            "speedup_vs_torchebm": {k: t["torchebm"] / v for k, v in t.items()},
            "gemm_flops_per_s": gemm, "gemm_flops_per_s_by_n": gemm_by_n,
        }
        print(label, {k: f"{v * 1e3:.0f} ms" for k, v in t.items()})

    # ---- the chains' FP32 throughput against torch's large matrix product on this CPU
    flops = chain_step_flops(net, N)
    res["flops"] = {"per_chain_step": flops, "gemm_sizes": list(GEMM_SIZES), "chains": {
        key: {k: {"flops_per_s": v * flops, "fraction_of_gemm": v * flops / res[key]["gemm_flops_per_s"]}
              for k, v in res[key]["chain_steps_per_s"].items()}
        for key in ("train_shape_512x8", "inference_shape_1x512")}}
    print(f"chain step {flops} FLOPs; GEMM {res['train_shape_512x8']['gemm_flops_per_s'] / 1e9:.1f} GFLOP/s; "
          f"steerlab_fp32 training chains "
          f"{res['flops']['chains']['train_shape_512x8']['steerlab_fp32']['fraction_of_gemm']:.0%} of it")

    # ---- training steps/s of the repo preset (batch 512, 8 Langevin negatives, K=100, gradient penalty)
    batch = {"obs": torch.rand(512, 2, 4 * N), "action": torch.rand(512, 1, N)}
    opts = {p: torch.optim.Adam(p.parameters(), 1e-3) for p in (pol32, pol16)}
    pn = make("float32")
    optn = torch.optim.Adam(pn.parameters(), 1e-3)

    def ours(p):
        g = torch.Generator().manual_seed(0)
        p.train()
        loss, _ = p.compute_loss(batch, g)
        opts[p].zero_grad()
        loss.backward()
        opts[p].step()

    # the persistent-chain option at its steady state: every row of the batch revisited, so its chains continue
    # for persistent_steps (10) steps over the compressed schedule; 5% of the rows restart with the full chain
    pcfg = get_preset("ibc-particle-langevin-persistent").policy
    pol_p = IBCPolicy(IBCConfig(**{**pcfg.__dict__, "chain_dtype": "float32"}), 4 * N, N)
    pol_p.fit_normalizers({"obs": obs_data, "action": act_data}, action_low=np.zeros(N), action_high=np.ones(N),
                          episode_ends=np.arange(50, 5001, 50))
    opts[pol_p] = torch.optim.Adam(pol_p.parameters(), 1e-3)
    batch_p = {**batch, "index": torch.arange(512)}

    def persistent():
        g = torch.Generator().manual_seed(0)
        pol_p.train()
        loss, _ = pol_p.compute_loss(batch_p, g)
        opts[pol_p].zero_grad()
        loss.backward()
        opts[pol_p].step()

    persistent()  # stores every row's chains
    t = interleaved(variants({"naive": lambda: naive_train_step(pn, optn, batch, torch.Generator().manual_seed(0)),
                              "steerlab_fp32": lambda: ours(pol32), "steerlab_bf16": lambda: ours(pol16),
                              "steerlab_fp32_persistent": persistent}),
                    max(3, args.repeats // 2))
    res["train_step_repo_preset"] = {"seconds": t, "steps_per_s": {k: 1 / v for k, v in t.items()},
                                     "speedup_vs_naive": {k: t["naive"] / v for k, v in t.items()}}
    print("train step", {k: f"{v:.2f} s" for k, v in t.items()})

    # ---- inference latency per action, batch 1
    obs1 = torch.rand(1, 2, 4 * N)
    dfo_pol = IBCPolicy(IBCConfig(inference="dfo", inference_samples=16384, fraction_langevin_samples=0.0), 4 * N, N)
    dfo_pol.fit_normalizers({"obs": obs_data, "action": act_data}, action_low=np.zeros(N), action_high=np.ones(N))
    pol32.eval(), pol16.eval(), dfo_pol.eval()
    t = interleaved(variants({
        "langevin_512x100_fp32": lambda: pol32.predict_action_chunk(obs1, torch.Generator().manual_seed(0)),
        "langevin_512x100_bf16": lambda: pol16.predict_action_chunk(obs1, torch.Generator().manual_seed(0)),
        "dfo_16384x3": lambda: dfo_pol.predict_action_chunk(obs1, torch.Generator().manual_seed(0)),
    }), args.repeats)
    res["inference_latency_s"] = t
    print("latency", {k: f"{v * 1e3:.0f} ms" for k, v in t.items()})
    save(args.name, res)
    plot(res, results_path(f"{args.name}.png"))


def plot(res, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, key in zip(axes[:2], ["train_shape_512x8", "inference_shape_1x512"]):
        r = res[key]["chain_steps_per_s"]
        ax.bar(list(r), [v / 1e6 for v in r.values()], color=["gray", "tab:blue", "tab:green", "tab:orange"])
        ax.set_title(f"Langevin chain throughput, {key}")
        ax.set_ylabel("million chain-steps / s")
    r = res["train_step_repo_preset"]["steps_per_s"]
    axes[2].bar(list(r), list(r.values()), color=["gray", "tab:blue", "tab:green", "tab:purple"][:len(r)])
    axes[2].set_title("training steps/s, repo Langevin preset")
    for ax in axes:
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(f"{res['n_dim']}-D particle, 256x2 energy MLP, K=100 (side by side, median of {res['repeats']})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
