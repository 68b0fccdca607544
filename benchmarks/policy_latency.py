"""Latency per action chunk (batch 1, one observation history -> one chunk) of the generative policies on
this machine: DDPM-100, DDIM-10, flow Euler-10 (and Heun-5, RES-10), for the MLP denoiser of the particle
presets, the small ConditionalUnet1D (64/128/256) and diffusion_policy's size (256/512/1024, ~66M params).

    python benchmarks/policy_latency.py [--repeats 20]

Weights are untrained (latency does not depend on them). Variants of one denoiser are timed interleaved in
one process. Writes benchmarks/results/policy_latency.json.
"""

from __future__ import annotations


import torch

from common import command_line, interleaved, parser, save

from steerlab.generative.policy import DenoiserConfig, DiffusionConfig, FlowConfig, GenerativePolicy

OBS, ACT = 8, 2  # 2-D particle: 8 observation features, 2 action dims

DENOISERS = {
    "mlp 256x4": DenoiserConfig(),
    "unet 64/128/256": DenoiserConfig(arch="unet"),
    "unet 256/512/1024 (diffusion_policy)": DenoiserConfig(arch="unet", down_dims=(256, 512, 1024), time_embed_dim=256),
}
VARIANTS = {
    "DDPM-100": DiffusionConfig(sampler="ddpm", num_inference_steps=100),
    "DDIM-10": DiffusionConfig(sampler="ddim", num_inference_steps=10),
    "flow Euler-10": FlowConfig(sampler="euler", num_inference_steps=10),
    "flow Heun-5": FlowConfig(sampler="heun", num_inference_steps=5),
    "diffusion RES-10": DiffusionConfig(sampler="res", num_inference_steps=10),
}


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--repeats", type=int, default=20)
    a = ap.parse_args()
    torch.manual_seed(0)
    obs = torch.rand(1, 2, OBS)
    out = {}
    for dname, dcfg in DENOISERS.items():
        fns, params = {}, None
        for vname, vcfg in VARIANTS.items():
            import dataclasses

            pol = GenerativePolicy(dataclasses.replace(vcfg, denoiser=dcfg), OBS, ACT).eval()
            params = sum(p.numel() for p in pol.parameters())
            g = torch.Generator().manual_seed(0)
            fns[vname] = lambda pol=pol, g=g: pol.predict_action_chunk(obs, generator=g)
        reps = a.repeats if "1024" not in dname else max(3, a.repeats // 5)
        t = interleaved(fns, repeats=reps, warmup=1)
        out[dname] = {"params": params, "ms_per_chunk": {k: 1000 * v for k, v in t.items()}}
        print(dname, f"({params / 1e6:.1f}M params):", ", ".join(f"{k} {1000 * v:.1f} ms" for k, v in t.items()))
    save("policy_latency", {"command": command_line(),
                            "batch": 1, "chunk": "16 x 2", "results": out})


if __name__ == "__main__":
    main()
