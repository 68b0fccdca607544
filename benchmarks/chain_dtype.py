"""Is bfloat16 faster than float32 for IBC's Langevin chains on this CPU? (decides ``chain_dtype="auto"``)

    python benchmarks/chain_dtype.py

Times one chain step (``MLPResNet.input_grad``, the 256x2 energy MLP of the repo config) over 1,024 and 4,096
chains in float32 and in bfloat16, interleaved, and records the CPU, whether it has native bf16
(``steerlab.hw.native_bf16``) and what ``auto`` resolves to. Results accumulate per CPU model in
benchmarks/results/chain_dtype.json.
"""

from __future__ import annotations

import json

import torch

from common import interleaved, machine, parser, results_path


def main():
    ap = parser(__doc__)
    ap.add_argument("--n-dim", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    from steerlab.ebm.policy import IBCConfig, IBCPolicy
    from steerlab.nets.mlp import MLPResNet

    n = args.n_dim
    torch.manual_seed(0)
    net = MLPResNet(8 * n + n, 1, 256, 2).eval()
    cell = {"machine": machine(), "auto_resolves_to": IBCPolicy(IBCConfig(chain_dtype="auto"), 4 * n, n).chain_dtype,
            "ms_per_chain_step": {}, "bf16_over_fp32": {}}
    for chains in (1024, 4096):
        o, a = torch.randn(chains // 8, 8 * n), torch.rand(chains // 8, 8, n)
        t = interleaved({"float32": lambda: net.input_grad(o, a), "bfloat16": lambda: net.input_grad(o, a, dtype=torch.bfloat16)},
                        args.repeats)
        cell["ms_per_chain_step"][str(chains)] = {k: 1e3 * v for k, v in t.items()}
        cell["bf16_over_fp32"][str(chains)] = t["bfloat16"] / t["float32"]
        print(f"{chains} chains: fp32 {1e3 * t['float32']:.2f} ms, bf16 {1e3 * t['bfloat16']:.2f} ms "
              f"(bf16 / fp32 = {t['bfloat16'] / t['float32']:.2f})")
    out = results_path("chain_dtype.json")
    data = json.loads(out.read_text()) if out.exists() else {"command": "python benchmarks/chain_dtype.py", "cpus": {}}
    data["cpus"][cell["machine"]["cpu"]] = cell
    out.write_text(json.dumps(data, indent=2))
    print(f"wrote {out}; auto -> {cell['auto_resolves_to']}")


if __name__ == "__main__":
    main()
