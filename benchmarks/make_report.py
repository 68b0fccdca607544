"""Write BENCHMARKS.md from the JSON results in benchmarks/results/ (no number in it is typed by hand).

    python benchmarks/make_report.py
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent
RES = HERE / "results"
OUT = HERE.parent / "BENCHMARKS.md"


def _load(name):
    p = RES / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def _load_all(name):
    """The results ``<name>.json`` (if present) and then every ``<name>_*.json`` (further runs of the same script,
    e.g. on another base), loaded, in name order."""
    paths = [RES / f"{name}.json", *sorted(RES.glob(f"{name}_*.json"))]
    return [json.loads(p.read_text()) for p in paths if p.exists()]


def _pct(x):
    return f"{100 * x:.0f}%"


def section_sweep(lines):
    d = _load("particle_sweep")
    lines += ["## 1. Particle N-D sweep", ""]
    if not d or not d["cells"]:
        lines += ["Not measured yet.", ""]
        return
    lines += [
        "Success against dimension, 2,000 oracle demos per N, evaluation on 100 episodes (env seeds 100000…100099),",
        "training stopped by a wall-clock budget per cell on this 2-core CPU machine. Produced by",
        "`python benchmarks/particle_sweep.py --methods <m> --dims <N…> --budget-min <b>` (each row's exact",
        "training command is in `benchmarks/results/particle_sweep.json`). *threads*: torch threads of the cell",
        "(cells at 1 thread ran two at a time, one per core); *CPU*: the cell's processor and whether it has native",
        "bfloat16 (cells of the first sessions recorded neither: they ran with 2 threads on a CPU where bf16 chains",
        "made the training step 2× faster than fp32, see section 2).",
        "",
        "| method | N | budget (min) | threads | CPU | steps trained | success | 95% CI |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = [(c, False) for c in d["cells"].values()] + [(c, True) for c in d.get("superseded", [])]
    for c, old in sorted(rows, key=lambda r: (r[0]["method"], r[0]["n_dim"], not r[1])):
        lo, hi = c["success_ci95"]
        m = c.get("machine")
        cpu = f"{m['cpu']} ({'native' if m['native_bf16'] else 'no'} bf16)" if m else "not recorded"
        method = f"{c['method']} (before re-measuring)" if old else c["method"]
        lines.append(f"| {method} | {c['n_dim']} | {c['budget_min']:g} | {c.get('threads') or 'default'} | {cpu} | "
                     f"{c['train_steps']} | {_pct(c['success_rate'])} | [{_pct(lo)}, {_pct(hi)}] |")
    lines += ["", "![particle sweep](benchmarks/results/particle_sweep.png)", ""]


def section_parameterization(lines):
    d = _load("parameterization")
    lines += ["### 1b. Network parameterization: precision and spread at exact oracle actions", ""]
    if not d:
        lines += ["Not measured yet.", ""]
        return
    r0 = d["rows"][0]
    lines += [_cmd(d) + f". At the first observation of {r0['observations']} evaluation episodes the oracle commands "
              f"the first goal itself; each run samples {r0['samples']} chunks from as many initial noises. *L2*: "
              "median distance of the executed actions to the oracle's; *spread*: per-coordinate std of the samples' "
              "executed actions; *success*: the run's own 100-episode evaluation (section 1).", "",
              "| run | N | network output | sampler | steps | success | median L2 to oracle | spread |",
              "|---|---|---|---|---|---|---|---|"]
    for r in sorted(d["rows"], key=lambda r: (r["kind"], r["n_dim"], r["prediction_type"])):
        succ = _pct(r["success_rate"]) if r["success_rate"] is not None else "–"
        lines.append(f"| `{Path(r['run_dir']).name}` | {r['n_dim']} | {r['kind']} {r['prediction_type']} | "
                     f"{r['sampler']} | {r['steps']} | {succ} | {r['median_l2_to_oracle']:.4f} | {r['spread']:.4f} |")
    lines.append("")


def section_ddim_clip_rule(lines):
    d = _load("ddim_clip_rule")
    if not d:
        return
    lines += ["### 1d. DDIM's clip rule on trained ε-prediction policies", "",
              _cmd(d) + ". The same weights evaluated on the same seeds with the model's ε kept under clipping "
              "(diffusers' default, steerlab's default) and with ε re-derived from the clipped clean chunk.", "",
              "| run | N | use_clipped_model_output | success | 95% CI |", "|---|---|---|---|---|"]
    for r in d["rows"]:
        lines.append(f"| `{Path(r['run_dir']).name}` | {r['n_dim']} | {r['use_clipped_model_output']} | "
                     f"{_pct(r['success_rate'])} | {_ci(r['success_ci95'])} |")
    lines.append("")


def section_multimodality(lines):
    d = _load("multimodality")
    lines += ["### 1c. Multimodality and noise leverage per parameterization", ""]
    if not d:
        lines += ["Not measured yet.", ""]
        return
    r0 = d["rows"][0]
    dm = d["demos"]
    lines += [_cmd(d) + f". {d['n_dim']}-D particle with IBC's multimodal oracle (each demo visits the two goals in a "
              f"random order; {_pct(dm['second_first'])} of the {dm['episodes']} demos visit the second goal first), "
              f"{d['steps']:,} steps per run. *closed loop*: share of {r0['closed_loop']['episodes']} episodes "
              "(among those that reached a goal) that visit the second goal first; *both modes*: share of "
              f"{r0['fixed_obs']['observations']} first observations at which {r0['fixed_obs']['samples']} noises give "
              "chunks of both modes (the noise decides the mode there); *spread*: std of those chunks' last actions. "
              "The env's success rule (first goal, then end at the second) fails every episode of the other order, "
              "so success is at most about half here.", "",
              "| network | success | reached a goal | second goal first | 95% CI | both modes at | second-mode share of samples | spread |",
              "|---|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        c, f = r["closed_loop"], r["fixed_obs"]
        lines.append(f"| {r['method']} | {_pct(r['success_rate'])} | {c['reached_a_goal']}/{c['episodes']} | "
                     f"{_pct(c['second_first'])} | {_ci(c['ci95'])} | {_pct(f['both_modes_share'])} | "
                     f"{_pct(f['second_mode_share'])} | {f['spread']:.3f} |")
    lines += ["", "![multimodality](benchmarks/results/multimodality.png)", ""]


def _speed_tables(lines, d, png):
    m = d["machine"]
    cmd = d.get("command", f"python benchmarks/bench_langevin.py --n-dim {d['n_dim']}")
    cpu = f", {m['cpu']}" if m.get("cpu") and m["cpu"] != "x86_64" else ""
    lines += [f"`{cmd}` — side by side in one process, median of {d['repeats']} interleaved repeats ({m['date']}, "
              f"torch {m['torch']}, {m['threads']} threads{cpu}, commit {m['git']}).", ""]
    for key, title in [("train_shape_512x8", "chains of the training step (512 obs × 8 chains × 100 steps)"),
                       ("inference_shape_1x512", "inference chains (1 obs × 512 chains × 100 steps)")]:
        r = d[key]
        lines += [f"**{title}**", "", "| variant | seconds | chain-steps/s | × naive | × torchebm |", "|---|---|---|---|---|"]
        for k, s in r["seconds"].items():
            lines.append(f"| {k} | {s:.3f} | {r['chain_steps_per_s'][k]:,.0f} | {r['speedup_vs_naive'][k]:.2f} | "
                         f"{r['speedup_vs_torchebm'][k]:.2f} |")
        lines.append("")
    r = d["train_step_repo_preset"]
    lines += ["**training steps/s, `ibc-particle-langevin` (batch 512, 8 counter-examples, K=100, gradient penalty)**", "",
              "| variant | steps/s | × naive |", "|---|---|---|"]
    for k, v in r["steps_per_s"].items():
        lines.append(f"| {k} | {v:.2f} | {r['speedup_vs_naive'][k]:.2f} |")
    if "steerlab_fp32_persistent" in r["steps_per_s"]:
        lines += ["", "*steerlab_fp32_persistent*: the persistent-chain option (`ibc-particle-langevin-persistent`'s "
                  "chains) at the same batch of 512, every row revisited, so its chains continue for 10 steps over the "
                  "compressed schedule (5% restart with the full chain)."]
    lines += ["", "**inference latency per action, batch 1**", "", "| sampler | ms |", "|---|---|"]
    for k, v in d["inference_latency_s"].items():
        lines.append(f"| {k} | {1e3 * v:.0f} |")
    fl = d.get("flops")
    if fl:
        lines += ["", f"**FP32 throughput of the chains.** A chain step costs {fl['per_chain_step']:,} FLOPs: 2 per "
                  "multiply-add of the dense layers' matrix products, in the forward pass and the input-gradient "
                  "backward pass, without the observation part of the first layer (computed once per row) and "
                  "without element-wise operations. Reference: the fastest of torch's n × n FP32 matrix products "
                  f"(n = {', '.join(map(str, fl.get('gemm_sizes', [fl.get('gemm_n')])))}), timed interleaved with the "
                  "chains: what this CPU reaches in FP32 through torch.", "",
                  "| chains | variant | GFLOP/s | fraction of the matrix product's |", "|---|---|---|---|"]
        for key, per in fl["chains"].items():
            g = d[key]["gemm_flops_per_s"]
            for k, v in per.items():
                lines.append(f"| {key} | {k} | {v['flops_per_s'] / 1e9:.1f} | {_pct(v['fraction_of_gemm'])} |")
            by_n = d[key].get("gemm_flops_per_s_by_n", {})
            sizes = " (" + ", ".join(f"{n}: {v / 1e9:.0f}" for n, v in by_n.items()) + ")" if by_n else ""
            lines.append(f"| {key} | fastest matrix product{sizes} | {g / 1e9:.1f} | 100% |")
    lines += ["", f"![speed](benchmarks/results/{png})", ""]


def section_speed(lines):
    d = _load("langevin_speed")
    lines += ["## 2. Speed of the Langevin machinery", ""]
    if not d:
        lines += ["Not measured yet.", ""]
        return
    _speed_tables(lines, d, "langevin_speed.png")
    d = _load("langevin_speed_fp32")
    if d:
        lines += ["### 2a. The same on a CPU without native bf16 (fp32 only)", ""]
        _speed_tables(lines, d, "langevin_speed_fp32.png")
    for p in sorted(RES.glob("langevin_speed_*.json")):
        if p.stem == "langevin_speed_fp32":
            continue
        d = json.loads(p.read_text())
        lines += [f"### 2 ({p.stem[len('langevin_speed_'):]}). Re-measured: {d['machine'].get('cpu', 'CPU')}, "
                  f"{d['machine']['threads']} thread(s)", ""]
        _speed_tables(lines, d, f"{p.stem}.png")


def section_chain_dtype(lines):
    d = _load("chain_dtype")
    lines += ["### 2b. bfloat16 or float32 chains, per CPU", ""]
    if not d:
        lines += ["Not measured yet.", ""]
        return
    lines += [f"`{d['command']}` — one Langevin chain step (`MLPResNet.input_grad`, 256×2 energy MLP), fp32 and bf16 "
              "interleaved; `auto` (the budget and demo presets) picks bf16 only where the CPU has native bf16.", "",
              "| CPU | native bf16 | threads | chains | fp32 (ms) | bf16 (ms) | bf16 / fp32 | auto picks |",
              "|---|---|---|---|---|---|---|---|"]
    for cpu, c in d["cpus"].items():
        for chains, t in c["ms_per_chain_step"].items():
            lines.append(f"| {cpu} | {'yes' if c['machine']['native_bf16'] else 'no'} | {c['machine']['threads']} | "
                         f"{chains} | {t['float32']:.2f} | {t['bfloat16']:.2f} | {c['bf16_over_fp32'][chains]:.1f} | "
                         f"{c['auto_resolves_to']} |")
    lines.append("")


def section_compute(lines):
    d = _load("compute_to_success")
    lines += ["## 3. Compute to success", ""]
    cells = (d or {}).get("cells")  # files of the old script held a list of cells without their preset
    cells = [c for c in cells.values() if "preset" in c] if isinstance(cells, dict) else []
    if not cells:
        lines += ["Not measured yet.", ""]
        return
    lines += ["Training wall time (evaluation excluded) until the first evaluation at or above the target "
              "success, from `python benchmarks/compute_to_success.py` (each row's command below; evaluation on fixed "
              "seeds; the last point of each curve is the end-of-training evaluation).", "",
              "| preset | N | target | budget (min) | threads | episodes per evaluation | time to target (s) | steps | "
              "success at (step, train s) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        reached = c["seconds_to_target"] is not None
        curve = ", ".join(f"{_pct(v)} ({s}, {t} s)" for s, t, v in c["curve"])
        preset = c["preset"] + (f" ({c['steps']} steps)" if c.get("steps") else "")
        lines.append(f"| {preset} | {c['n_dim']} | {_pct(c['target'])} | {c['budget_min']:g} | {c['threads']} | "
                     f"{c['episodes']} | {c['seconds_to_target'] if reached else 'not reached'} | {c['steps_to_target'] if reached else '-'} | "
                     f"{curve} |")
    lines += ["", "Commands: " + "; ".join(f"`{c['command']}`" for c in cells), ""]


def section_ibc_chain_options(lines):
    d = _load("ibc_chain_options")
    lines += ["### 3a. IBC's training chains: full chains against persistent chains at equal wall time", ""]
    cells = sorted((d or {}).get("cells", {}).values(), key=lambda c: (c["n_dim"], c["budget_min"], c["method"]))
    if not cells:
        lines += ["Not measured yet (`python benchmarks/ibc_chain_options.py`).", ""]
        return
    lines += ["The budget preset (`ibc-langevin`: every counter-example a 100-step chain from uniform) and "
              "`ibc-particle-langevin-persistent` (each dataset row's chains stored and continued for "
              "`persistent_steps` steps on its next visit, a new row's from its nearest stored neighbour's in the "
              "episode; new rows without one and 5% of visits run the full chain; `ibc-langevin-persistent-uniform`: "
              "every new row runs the full chain) trained for the same wall-clock budget, side by side (at the same "
              "time, one process each) unless marked, then "
              "evaluated by their own end-of-training evaluation on fixed seeds. *chain steps*: mean Langevin steps "
              "per counter-example chain over the run; *chain steps/s*: the counter-example chains' Langevin steps "
              "per training second.", "",
              "| method | N | budget (min) | side by side | threads | steps trained | steps/s | chain steps | "
              "chain steps/s | success | 95% CI |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        lines.append(f"| {c['method']} | {c['n_dim']} | {c['budget_min']:g} | {'yes' if c['side_by_side'] else 'no'} | "
                     f"{c.get('threads') or 'default'} | {c['train_steps']} | {c['steps_per_s']:.2f} | "
                     f"{c['mean_chain_steps']:.1f} | {c['chain_steps_per_s']:,.0f} | {_pct(c['success_rate'])} | "
                     f"{_ci(c['success_ci95'])} |")
    machines = sorted({f"{c['machine']['cpu']} ({'native' if c['machine']['native_bf16'] else 'no'} bf16, commit "
                       f"{c['machine']['git']}, {c['machine']['date'][:10]})" for c in cells if c.get("machine")})
    lines += ["", "Machine: " + "; ".join(machines) + ". Commands: "
              + "; ".join(f"`{x}`" for x in sorted({c["bench_command"] for c in cells})) + "", ""]


def _cmd(d):
    return f"`{d['command']}` ({d['machine']['date']}, commit {d['machine']['git']})"


def _ci(ci):
    return f"[{_pct(ci[0])}, {_pct(ci[1])}]"


def section_grad_memory(lines):
    d = _load("grad_memory")
    lines += ["## 4. Gradient through the sampling chain: memory and time per gradient mode", ""]
    if not d:
        lines += ["Not measured yet.", ""]
        return
    trim = d.get("extra_rss_mb_trimmed_malloc")
    lines += [_cmd(d) + f". {d['chain']}; extra peak RSS (MB) of a separate process per cell, with glibc's default "
              "malloc and with `MALLOC_TRIM_THRESHOLD_=0` (freed memory returned at once).", "",
              "| steps | full | checkpoint | full, trimmed | checkpoint, trimmed | full: s | checkpoint: s |",
              "|---|---|---|---|---|---|---|"]
    steps = sorted({int(k.split("/")[1]) for k in d["extra_rss_mb"]})
    for n in steps:
        t = (f"{trim[f'full/{n}']:,.0f} | {trim[f'checkpoint/{n}']:,.0f}") if trim else "- | -"
        lines.append(f"| {n} | {d['extra_rss_mb'][f'full/{n}']:,.0f} | {d['extra_rss_mb'][f'checkpoint/{n}']:,.0f} | {t} | "
                     f"{d['seconds'][f'full/{n}']:.1f} | {d['seconds'][f'checkpoint/{n}']:.1f} |")
    tr = (f" (trimmed malloc: **{d['checkpoint_mem_ratio_max_vs_1_trimmed_malloc']:.2f}×**)" if trim else "")
    lines += ["", f"Checkpointed memory at {steps[-1]} steps / at 1 step: **{d['checkpoint_mem_ratio_max_vs_1']:.2f}×**{tr} "
              f"(target {d['targets']['checkpoint_mem_ratio_max_vs_1']}); full backprop: {d['full_mem_ratio_max_vs_1']:.0f}×. "
              f"Time of checkpointing / full at {steps[-1]} steps: **{d['checkpoint_time_ratio_at_max']:.2f}×** "
              f"(target {d['targets']['checkpoint_time_ratio_at_max']}).", "",
              "![gradient memory](benchmarks/results/grad_memory.png)", ""]


def section_latency(lines):
    d = _load("policy_latency")
    lines += ["## 5. Policy latency per action chunk (batch 1)", ""]
    if not d:
        lines += ["Not measured yet.", ""]
        return
    names = list(next(iter(d["results"].values()))["ms_per_chunk"])
    lines += [_cmd(d) + f"; chunk {d['chunk']}, variants of one denoiser interleaved in one process.", "",
              "| denoiser | params | " + " | ".join(f"{n} (ms)" for n in names) + " |",
              "|---|---|" + "---|" * len(names)]
    for k, r in d["results"].items():
        lines.append(f"| {k} | {r['params'] / 1e6:.2f}M | " + " | ".join(f"{r['ms_per_chunk'][n]:.1f}" for n in names) + " |")
    lines.append("")


def _search_table(lines, rows, cols):
    lines += ["| method | budget (NFE) | " + " | ".join(c[0] for c in cols) + " |", "|---|---|" + "---|" * len(cols)]
    for r in rows:
        lines.append(f"| {r['method']} | {r['budget_nfe']} | " + " | ".join(c[1](r) for c in cols) + " |")
    lines.append("")


def section_stress(lines):
    d = _load("stress_test")
    lines += ["## 6. Policy stress test, verified in closed loop", ""]
    if not d:
        lines += ["Not measured yet.", ""]
        return
    _stress_block(lines, d, "stress_test")
    for letter, extra in zip("abcdefghij", sorted(RES.glob("stress_test_*.json"))):  # the same test on other bases
        lines += [f"### 6{letter}. On `{extra.stem}`", ""]
        _stress_block(lines, json.loads(extra.read_text()), extra.stem)


def _stress_block(lines, d, stem):
    lines += [_cmd(d) + f". Policy: {d['policy']['kind']} ({d['policy']['sampler']}-{d['policy']['num_inference_steps']}"
              + (f", predicting {d['policy']['prediction_type']}" if d["policy"].get("prediction_type") else "")
              + f"), {d['n_dim']}-D particle; chain {d['chain_nfe']} NFE, a backward pass measured at "
              f"{d['backward_cost']:.2f} forwards. Failures are real: each episode is rolled out in the environment with "
              "its found noise held fixed for every chunk. *Inside 99%*: share of the failing noises whose norm lies "
              "in the χ_d prior's central 99%.", ""]
    _search_table(lines, d["rows"], [
        ("real failures / 100", lambda r: f"{r['failures']}"),
        ("95% CI", lambda r: _ci(r["ci95"])),
        ("per 1k NFE", lambda r: f"{r['failures_per_1000_nfe']:.2f}"),
        ("inside 99%", lambda r: _pct(r["failing_inside_99"]) if r["failing_inside_99"] is not None else "-"),
        ("missed 1st goal / 100", lambda r: f"{r['targeted_failures']}"),
        ("95% CI ", lambda r: _ci(r["targeted_ci95"])),
        ("inside 99% ", lambda r: _pct(r["targeted_inside_99"]) if r["targeted_inside_99"] is not None else "-"),
        ("search s", lambda r: f"{r['search_seconds']:.1f}")])
    ratios = ", ".join(f"{k.rsplit('_', 1)[1]} NFE: {v:.2f}×" for k, v in d.items() if k.startswith("gradient_over_best_of_n_at_"))
    tr = ", ".join(f"{k.rsplit('_', 1)[1]} NFE: " + (f"{v:.1f}×" if v is not None else "best-of-N found none")
                   for k, v in d.items() if k.startswith("targeted_gradient_over_best_of_n_at_"))
    base = [r for r in d["rows"] if r["method"] == "random"][0]
    lines += [f"Gradient / best-of-N failures per 1,000 denoiser evaluations at equal budget, every failure — {ratios}; "
              f"the mode the objective aims at (the agent never reaches the first goal) — {tr} (target ≥ 3×). "
              f"The policy fails {base['failures']} of 100 episodes on its own noise "
              f"({base['modes']['missed_second_goal']} of them by never reaching the second goal); best-of-N collects "
              "such failures too, and the count is capped at 100.", "",
              f"![stress test](benchmarks/results/{stem}.png)", ""]


def section_wm_stress(lines):
    lines += ["## 7. World-model stress test (the Cosmos case in miniature)", ""]
    paths = [RES / "world_model_stress.json", *sorted(RES.glob("world_model_stress_*.json"))]
    docs = [(p.stem, json.loads(p.read_text())) for p in paths if p.exists()]
    if not docs:
        lines += ["Not measured yet.", ""]
        return
    for stem, d in docs:
        t = d["world_model_train"]
        pol = d.get("policy")
        base = (f"Policy: `{Path(d['policy_run']).name}` ({pol.get('kind')}, network output "
                f"{pol.get('prediction_type')}). " if pol else "")
        lines += [_cmd(d) + ".", "",
                  base + f"World model: flow matching over the next 16 positions given the state and a 16-step plan, trained "
                  f"{t['steps']} steps ({t['train_seconds'] / 60:.1f} min) on {d['data_episodes']} rollouts of the policy under "
                  f"actuation noise σ={d['action_noise']:g}. {d['cases']} test cases (initial states whose noise-free plan "
                  f"reaches the first goal; {d['states_tried']} tried). Probability that the plan misses the first goal: "
                  f"simulator {d['p_miss_simulator_mean']:.3f} ({d['sim_draws']} noise draws per case; "
                  f"{d['cases_simulator_can_miss']} cases can miss at all), world model {d['p_miss_world_model_mean']:.3f} "
                  "(64 samples per case). *Found*: a plausible z (χ_d CDF in [0.005, 0.995]) whose predicted future misses; "
                  "*confirmed*: the simulator misses too in at least one draw for that case; *distance*: mean over steps "
                  "to the nearest simulated future.", ""]
        _search_table(lines, d["rows"], [
            ("found / cases", lambda r: f"{r['found']}/{r['cases']}"),
            ("95% CI", lambda r: _ci(r["found_ci95"])),
            ("confirmed", lambda r: f"{r['confirmed']}"),
            ("distance (found)", lambda r: f"{r['nearest_sim_distance_found']:.3f}" if r["nearest_sim_distance_found"] is not None else "-"),
            ("distance (all)", lambda r: f"{r['nearest_sim_distance_all']:.3f}")])
        lines += [f"![world-model stress test](benchmarks/results/{stem}.png)", ""]


def section_steering(lines):
    lines += ["## 8. Steering by noise optimization, closed loop", ""]
    any_ = False
    for task in ("goal_order", "goal_order_flow_x0", "goal_order_diffusion_x0", "obstacle", "obstacle_x0_actions",
                 "obstacle_x0_path", "obstacle_eps_path", "obstacle_x0_guidance", "obstacle_x0_guidance_100steps"):
        d = _load(f"steering_{task}")
        if not d:
            continue
        any_ = True
        res = d["results"]
        metrics = [k for k, v in next(iter(res.values())).items() if isinstance(v, dict)]
        st = res.get("steered", {})
        flat = (f" The objective was already flat (< 1e-6) at the first noise on {_pct(st['objective_flat_at_start'])} "
                f"of the decisions; its mean went from {st['objective_initial_mean']:.4f} at the first noise to "
                f"{st['objective_best_mean']:.4f} at the best." if "objective_initial_mean" in st else "")
        what = f" (objective on the {d['objective']})" if d.get("objective") else ""
        if d.get("max_steps"):
            what += f", episodes of {d['max_steps']} steps (the env's default: 50)"
        if d.get("side_offset"):
            what += f", the objective's ball displaced {d['side_offset']:g} to the right of the straight way"
        opt = (f"; Adam {d['optimizer']['steps']} steps, lr {d['optimizer']['lr']}, z on the √d shell; "
               f"{st['nfe_per_decision']:.0f} NFE per decision" if "nfe_per_decision" in st else "")
        guide = ("; *guidance s*: the clean-chunk estimate moved by -s × the objective's gradient at every sampler "
                 "step (steer.guidance)" if any(k.startswith("guidance") for k in res) else "")
        pol = d.get("policy") or {}
        base = (f" Base network output: {pol['prediction_type']}." if isinstance(pol, dict) and pol.get("prediction_type")
                else "")
        lines += [f"**{d['task']}**{what} — " + _cmd(d) + opt + guide + "." + base + flat, "",
                  "| policy | " + " | ".join(metrics) + " | s |", "|---|" + "---|" * (len(metrics) + 1)]
        for name in res:
            lines.append(f"| {name} | " + " | ".join(f"{_pct(res[name][m]['rate'])} {_ci(res[name][m]['ci95'])}"
                                                    for m in metrics) + f" | {res[name]['seconds']:.0f} |")
        lines.append("")
        if "best-of-N" in res:
            b = res["best-of-N"]
            lines.append(f"best-of-N: {b['samples_per_decision']} samples per decision (the steered policy's denoiser budget); "
                         f"at {_pct(b['objective_met_by_a_sample'])} of the decisions at least one sample already met the "
                         f"objective; spread of the samples' executed actions {b['sample_spread']:.4f} (std per "
                         f"coordinate, action units; the ball's radius is {d['radius']}).")
            lines.append("")
    if not any_:
        lines += ["Not measured yet.", ""]


def _critic_task_block(lines, d, name: str):
    """A ``critic_bench.py task`` result: the critic's training, and success per test-time variant (with the
    latency per chunk at batch 1, when measured)."""
    tag = name[len("critic_task"):]
    env = d.get("env", "particle")
    own = d["success"]["base"]["rate"]
    kind = "weak" if own < 0.5 else "strong"
    lines += [f"**Task{' ' + env if env != 'particle' else ''}, {kind} base (alone: {_pct(own)})** — `{d['command']}` ({d['machine']['date']}, commit "
              f"{d['machine']['git']}). Base: `{d['base_run']}`"
              + (f" ({d['demos']} demos, preset {d['base_preset']})" if d.get("demos") else "")
              + f"; critic trained {d['critic_train_seconds'] / 60:.1f} min beside it (frozen), final held-out ranking "
              f"accuracy {d['final_train_metrics'].get('monitor_rank_acc', float('nan')):.2f}.", ""]
    lat = d.get("latency_ms_batch1") or {}
    lat_of = {"base": lat.get("base")}
    for k, v in lat.items():
        if k.startswith("rerank"):
            lat_of[k] = v
    head = "| variant | success | 95% CI | Δ vs base (points) |" + (" ms per chunk (batch 1) |" if lat else "")
    lines += [head, "|---|---|---|---|" + ("---|" if lat else "")]
    for k, r in d["success"].items():
        ms = lat.get("base") if k == "base" else lat.get(k) if k in lat else (
            lat.get("both") if " + " in k else lat.get("correct") if k.startswith("correct") else None)
        lines.append(f"| {k} | {_pct(r['rate'])} | {_ci(r['ci95'])} | {d['gain_points'][k]:+.0f} |"
                     + (f" {ms:.1f} |" if lat and ms is not None else " - |" if lat else ""))
    lines += ["", f"![critic training](benchmarks/results/critic_training{tag}.png) "
              f"![energy landscape](benchmarks/results/critic_landscape{tag}.png)", ""]


def _critic_tasks(env_prefix: str):
    """``(name, result)`` of every ``critic_task*.json`` whose task starts with ``env_prefix``."""
    out = []
    for p in [RES / "critic_task.json", *sorted(RES.glob("critic_task_*.json"))]:
        if p.exists():
            d = json.loads(p.read_text())
            if d.get("env", "particle").startswith(env_prefix):
                out.append((p.stem, d))
    return out


def section_critic(lines):
    lines += ["## 9. Energy critics", ""]
    tasks = _critic_tasks("particle")
    for name, d in tasks:
        _critic_task_block(lines, d, name)
    d = _load("critic_speed")
    if d:
        lines += [f"**Speed** — `{d['command']}` ({d['machine']['date']}, commit {d['machine']['git']}), batch 1, "
                  "variants interleaved in one process, for two sizes of the base flow policy (the critic is the same; "
                  "its cost is fixed, so its relative overhead shrinks as the policy grows).", ""]
        for base, r in d["per_base"].items():
            lines += [f"*{base}*", "", "| variant | ms per chunk | overhead vs plain |", "|---|---|---|"]
            for k, v in r["latency_batch1"].items():
                lines.append(f"| {k} | {v['ms']:.2f} | {v['overhead']:+.0%} |")
            tr = r["training"]
            lines += ["", "Training steps/s (batch 256): " + ", ".join(f"{k} {v:.1f}" for k, v in tr["steps_per_s"].items()) +
                      f" — slowdown with the energy loss {tr['slowdown']:+.0%} "
                      f"({tr['slowdown_without_policy_negatives']:+.0%} without policy-sample negatives).", ""]
        sd = d["seed_shapes"]
        lines += [f"Seed-shape critic (Dc=2048, width 512, 8 heads, H=50, act_dim 7): {sd['params'] / 1e6:.2f}M parameters; "
                  f"forward {1e3 * sd['seconds']['forward']:.0f} ms, forward+backward "
                  f"{1e3 * sd['seconds']['forward+backward']:.0f} ms (batch {sd['batch']}, {sd['context_tokens']} context tokens).", ""]
    if not tasks and not d:
        lines += ["Not measured yet.", ""]


def _nav_block(lines, d, videos: bool):
    n, x = d["nominal"], d["exploration"]
    lines += [_cmd(d) + f"; checkpoint `{d['checkpoint']}`.", "",
              f"**Goal-conditioned** ({n['episodes']} maps, z1 from the oracle's route, z2 from the prior): success "
              f"{_pct(n['success_rate'])} {_ci(n['success_ci95'])}, collision {_pct(n['collision_rate'])} "
              f"{_ci(n['collision_ci95'])}, time-out {_pct(n['timeout_rate'])} {_ci(n['timeout_ci95'])}.", "",
              f"**Exploration** (goal masked, no intent): collision {_pct(x['collision_rate'])}, "
              f"{x['coverage_cells_mean']:.1f} distinct 0.05-cells visited, path length {x['path_length_mean']:.2f}.", "",
              "**Guidance sweep**", "", "| λ_cfg | success | 95% CI | collision | mean distance of the path to the route |",
              "|---|---|---|---|---|"]
    for r in d["guidance_sweep"]:
        lines.append(f"| {r['lambda_cfg']:g} | {_pct(r['success_rate'])} | {_ci(r['success_ci95'])} | "
                     f"{_pct(r['collision_rate'])} | {r['distance_to_route_mean']:.4f} |")
    adv = d["adversarial"]
    k = d.get("deployment", {}).get("rerank", 0)
    if k:
        w = d["deployment"].get("execute_waypoints") or 8
        cap = (f"**Adversarial z2 against the re-ranked deployment** ({adv['maps']} maps, budget {adv['budget_nfe']} NFE "
               f"per candidate, {k} candidates; backward = {adv['backward_cost']:.2f} forwards): one z2 is shared by a "
               f"map's {k} candidates and must make the least colliding one collide; *predicted* = the re-ranker, given "
               f"{k} fresh draws with that z2 at the start, executes a chunk whose first {w} waypoints hit an obstacle; "
               "*closed loop* = the episode (z2 at the first decision, the prior afterwards, re-ranking throughout) "
               "ends in a collision.")
    else:
        cap = (f"**Adversarial z2** ({adv['maps']} maps, budget {adv['budget_nfe']} NFE; backward = "
               f"{adv['backward_cost']:.2f} forwards): *predicted* = the first chunk's segments hit an obstacle; "
               "*closed loop* = the episode, with z2 and z0 held fixed, ends in a collision.")
    lines += ["", cap, "",
              "| search | NFE | predicted collision | 95% CI | closed-loop collision | 95% CI | z inside 99% |", "|---|---|---|---|---|---|---|"]
    for r in adv["rows"]:
        if r.get("every_decision"):
            continue
        lines.append(f"| {r['method']} | {r['nfe']:.0f} | {_pct(r['predicted']['rate'])} | {_ci(r['predicted']['ci95'])} | "
                     f"{_pct(r['closed_loop']['rate'])} | {_ci(r['closed_loop']['ci95'])} | {_pct(r['inside_99'])} |")
    every = [r for r in adv["rows"] if r.get("every_decision")]
    if every:
        lines += ["", "**The adversary at every decision** (z2 searched afresh at each state the episode reaches, "
                  "against the same re-ranked deployment, with the budget above per decision; random z2 = one prior "
                  "draw per decision, shared by the candidates):", "",
                  "| search | NFE per decision | closed-loop collision | 95% CI | decisions | z inside 99% |",
                  "|---|---|---|---|---|---|"]
        for r in every:
            lines.append(f"| {r['method']} | {r['nfe_per_decision']:.0f} | {_pct(r['closed_loop']['rate'])} | "
                         f"{_ci(r['closed_loop']['ci95'])} | {r['decisions']} | {_pct(r['inside_99'])} |")
    rs = d["route_switching"]
    lines += ["", f"**Route switching** ({rs['maps']} two-route maps; switched = the closed-loop path overlaps the other "
              "route more than the original):", "",
              f"- intent of the original route (no switch asked): {_pct(rs['original_route_intent']['rate'])} "
              f"{_ci(rs['original_route_intent']['ci95'])}",
              f"- z1 encoded from the other route: {_pct(rs['z1_from_other_route']['rate'])} {_ci(rs['z1_from_other_route']['ci95'])}",
              "- z1 of the original route, z2 optimized toward the other route"
              + (" once at the start and held" if "z2_every_decision" in rs else "")
              + f": {_pct(rs['z2_optimized']['rate'])} {_ci(rs['z2_optimized']['ci95'])} "
              f"(success {_pct(rs['z2_success']['rate'])})"]
    if "z2_every_decision" in rs:
        lines.append(f"- z1 of the original route, z2 optimized toward the other route afresh at every decision "
                     f"({rs['steps_per_decision']} Adam steps each): {_pct(rs['z2_every_decision']['rate'])} "
                     f"{_ci(rs['z2_every_decision']['ci95'])} (success {_pct(rs['z2_every_decision_success']['rate'])})")
    lines.append("")
    if videos:
        lines += ["Rollout videos: ![nominal](benchmarks/results/nav_nominal.gif) "
                  "![route switch](benchmarks/results/nav_route_switch.gif) "
                  "![adversarial](benchmarks/results/nav_adversarial.gif)", ""]


def section_nav(lines):
    d = _load("nav_bench")
    lines += ["## 10. Navigation with a two-stage latent intent (Nav2D)", ""]
    if not d:
        lines += ["Not measured yet.", ""]
        return
    _nav_block(lines, d, videos=True)
    dart = _load("nav_bench_dart")
    if dart:
        step = int(Path(dart["checkpoint"]).name.split("_")[-1])
        lines += ["### The same benchmarks on a policy trained on DART demonstrations", "",
                  "Run `nav-dart` of `benchmarks/train_bases.sh` (20,000 episodes, perturbation of std 0.3 on half the "
                  f"executed decisions, clean oracle labels; {step:,} steps when the time budget stopped it).", ""]
        _nav_block(lines, dart, videos=False)
    rr = _load("nav_bench_dart_rerank")
    if rr:
        dep = rr["deployment"]
        lines += [f"### The same policy, deployed with re-ranking ({dep['rerank']} candidates, "
                  f"{dep.get('execute_waypoints') or 8} of 8 waypoints executed)", "",
                  f"At every decision the policy draws {dep['rerank']} chunks and the first whose swept path keeps the "
                  f"robot radius + {dep['safety_margin']:g} from the occupied pixels of the robot's own egocentric image "
                  "is executed, else the clearest (`steerlab.nav.safety`; no map, no oracle). Same maps and seeds as "
                  "above.", ""]
        if dart:
            lines += ["| nav-dart | single draw | re-ranked |", "|---|---|---|"]
            pairs = [("goal-conditioned success", lambda d: d["nominal"]["success_rate"]),
                     ("goal-conditioned collision", lambda d: d["nominal"]["collision_rate"]),
                     ("exploration collision", lambda d: d["exploration"]["collision_rate"]),
                     ("route switching, z1 of the other route", lambda d: d["route_switching"]["z1_from_other_route"]["rate"]),
                     ("route switching, z2 optimized", lambda d: d["route_switching"]["z2_optimized"]["rate"])]
            for name, f in pairs:
                lines.append(f"| {name} | {_pct(f(dart))} | {_pct(f(rr))} |")
            lines.append("")
        _nav_block(lines, rr, videos=False)
        lines += ["Rollout videos of the re-ranked deployment: "
                  "![nominal](benchmarks/results/nav_bench_dart_rerank_nominal.gif) "
                  "![route switch](benchmarks/results/nav_bench_dart_rerank_route_switch.gif) "
                  "![adversarial](benchmarks/results/nav_bench_dart_rerank_adversarial.gif)", ""]
    av = _load("nav_adversary")
    if av:
        lines += ["**An adversary that replaces the deployment's intents** " + _cmd(av) + f" ({av['maps']} maps, "
                  f"{av['rerank']} candidates per decision, {av['budget_nfe']} NFE per candidate and decision; backward = "
                  f"{av['backward_cost']:.2f} forwards). At every decision each candidate's prior z2 draw is replaced by "
                  "one searched to make its executed prefix collide (the candidate's chain noise is not the "
                  "adversary's: the deployment samples with fresh noise), then the re-ranker chooses as usual. "
                  "*prior z2* is the nominal re-ranked deployment.", "",
                  "| W | intents | closed-loop collision | 95% CI | success | decisions | z inside 99% |",
                  "|---|---|---|---|---|---|---|"]
        for r in av["rows"]:
            lines.append(f"| {r['execute_waypoints']} | {r['method']} | {_pct(r['closed_loop']['rate'])} | "
                         f"{_ci(r['closed_loop']['ci95'])} | {_pct(r['success']['rate'])} | {r['decisions']} | "
                         f"{_pct(r['inside_99'])} |")
        lines.append("")
        for extra in sorted(RES.glob("nav_adversary_*.json")):  # further runs, e.g. another learning rate
            e = json.loads(extra.read_text())
            lines += [f"Also {_cmd(e)}, {e['budget_nfe']} NFE per candidate and decision:", ""]
            for r in e["rows"]:
                lines.append(f"- W = {r['execute_waypoints']}, {r['method']}: closed-loop collision "
                             f"{_pct(r['closed_loop']['rate'])} {_ci(r['closed_loop']['ci95'])}, {r['decisions']} decisions, "
                             f"z inside 99% {_pct(r['inside_99'])}")
            lines.append("")
    la = _load("nav_intent_landscape")
    if la:
        gc, ls = la["gradient_check"]["by_step"], la["landscape"]
        lines += ["**Why gradient search loses to draws over the 4-D z2** " + _cmd(la) + f" ({la['maps']} of the "
                  f"adversarial maps at their start states, {la['rerank']} candidate chains each, collision objective "
                  f"of the first {la['execute_waypoints']} waypoints). Central difference / |gradient| along the "
                  "gradient, median: " + ", ".join(f"{v['median']:.3f} at step {h}" for h, v in gc.items())
                  + f". Local maxima along {ls['circles']} random great circles of the shell: {ls['local_maxima_mean']:.2f} "
                  f"per circle, {_pct(ls['share_with_several_maxima'])} with two or more. Searches at "
                  f"{la['budget_nfe']} NFE per candidate (gradient lr {la['lr']:g}):", "",
                  "| intents | candidates colliding, search noise | candidates colliding, fresh noise | "
                  "maps with every candidate colliding | spread of a map's intents |", "|---|---|---|---|---|"]
        for r in la["searches"]:
            lines.append(f"| {r['method']} | {_pct(r['candidate_collides_own_noise'])} | "
                         f"{_pct(r['candidate_collides_fresh_noise'])} | "
                         f"{_pct(r['maps_all_candidates_collide_fresh_noise'])} | {r['spread_mean']:.2f} |")
        lines.append("")
    for ri in _load_all("nav_route_intent"):
        dep = ri["deployment"]
        lines += ["**Route switching by an optimized intent, in the re-ranked deployment** " + _cmd(ri)
                  + f" ({ri['maps']} two-route maps, K = {dep['rerank']}, W = {dep['execute_waypoints']}; "
                  f"{ri['steps_per_decision']} Adam steps per decision through the full chain, toward the other route). "
                  "*z2 optimized*: every candidate's z2 (lr " f"{ri['lr_z2']:g}, on the prior's shell) with z1 of the "
                  f"original route; *z1 optimized*: z1 (lr {ri['lr_z1']:g}) from the original route's encoding, shared "
                  "by the candidates, which keep prior z2 draws. z1 moved = |z1 − z1(original)| / |z1(other) − "
                  "z1(original)| at the same state.", "",
                  "| intent | switched | 95% CI | success | switched and reached the goal | decisions | z1 moved (median / p90) |",
                  "|---|---|---|---|---|---|---|"]
        for r in ri["rows"]:
            mv = r.get("z1_moved_fraction")
            lines.append(f"| {r['method']} | {_pct(r['switched']['rate'])} | {_ci(r['switched']['ci95'])} | "
                         f"{_pct(r['success']['rate'])} | {_pct(r['switched_and_success']['rate'])} | {r['decisions']} | "
                         + (f"{mv['median']:.2f} / {mv['p90']:.2f}" if mv else "–") + " |")
        lines.append("")
    for sw in _load_all("nav_rerank_sweep"):
        out = (f"; the policy predicts {sw['prediction_type']}, {sw['train_steps']} training steps"
               if sw.get("prediction_type") else "")
        lines += ["**Re-ranking sweep** " + _cmd(sw) + f" ({sw['maps']} maps, goal-conditioned; K = 1 is the single "
                  f"draw; W = waypoints executed per decision{out}):", "",
                  "| K | W | margin | success | 95% CI | collision | time-out | rooms / clutter / corridors | "
                  "decisions | no safe candidate | draws passed over per decision |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in sw["rows"]:
            fam = " / ".join(_pct(r["by_family"].get(f, float("nan"))) for f in ("rooms", "clutter", "corridors"))
            extra = (f"{_pct(r['no_safe_candidate'])} | {r['passed_over_per_decision']:.2f}" if "no_safe_candidate" in r
                     else "– | –")
            k = f"{r['k']} (one z2 shared)" if r.get("shared_z2") else f"{r['k']}"
            lines.append(f"| {k} | {r['execute_waypoints']} | {r['margin']:g} | {_pct(r['success_rate'])} | "
                         f"{_ci(r['success_ci95'])} | {_pct(r['collision_rate'])} | {_pct(r['timeout_rate'])} | {fam} | "
                         f"{r['decisions_mean']:.1f} | {extra} |")
        lines.append("")


def section_nav_modes(lines):
    results = _load_all("nav_modes")
    if not results:
        return
    d0 = results[0]
    lines += [f"**Route modes on two-route maps** (`python benchmarks/nav_modes.py --help`; {d0['maps']} maps from env "
              "seed 740,000). *demos*: share of the maps on which the collector's oracle takes the first route (the "
              "planner's shortest); *closed loop*: one episode per map, the route its path overlaps more, at intent "
              "level none (no route given: the unconditional model chooses) and z1z2 (the oracle's route as z1, prior "
              f"z2); *start draws*: {d0['draws']} chunks at each map's start from as many noises, each assigned to the "
              f"route its waypoints are closer to by more than {d0['margin']:g}; *both routes*: maps whose draws go "
              "both ways (the noise chooses the route), among the maps where the oracle's first chunks along the two "
              "routes differ by that margin; *spread*: per-waypoint std of the draws (world units).", "",
              "| run | output | demos: route 1 | level | success | follow a route | closed loop: route 1 | "
              "follows the oracle's route | start draws: both routes | draws to route 1 | spread |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for d in results:
        r = d["results"]
        demo = r["demonstrations"]["route0_share"]
        for level in ("none", "z1z2"):
            x = r[level]
            f = lambda v: "–" if v is None else f"{_pct(v['rate'])} {_ci(v['ci95'])}"  # noqa: E731
            lines.append(f"| `{Path(d['run_dir']).name}` | {d.get('prediction_type')} | {_pct(demo['rate'])} | {level} | "
                         f"{_pct(x['success']['rate'])} | {x['follows_a_route']['count']}/{x['follows_a_route']['n']} | "
                         f"{f(x['route0_share'])} | {f(x['follows_the_oracles_route'])} | {f(x['both_routes_at'])} | "
                         f"{_pct(x['draws_to_route0'])} | {x['spread']:.4f} |")
    lines += ["", "Commands: " + "; ".join(f"`{d['command']}`" for d in results), ""]


def section_nav_chunks(lines):
    results = _load_all("nav_chunk_error")
    if not results:
        return
    lines += ["**Where the chunks go wrong**: open-loop error of sampled chunks (z1 from the route, z2 from the prior) "
              "against the oracle's on fresh noise-free oracle episodes -- the mean world distance of the 8 waypoints, "
              "by decision index (t = 0 starts at an arbitrary heading) -- and the share of first chunks at the start "
              "of fresh maps whose segments hit an obstacle, by intent level (the oracle's: 0%). Output: what the noise "
              "head predicts (– where the file predates that column: those runs predicted ε).", ""]
    for d in results:
        lines += [_cmd(d) + ":", "",
                  "| run | output | steps | DART noise | z1 dim | quarter turns of first decisions | error t=0 | t=1 | t=2 | "
                  "t≥3 | direction error t=0 / t≥3 | first-chunk collision none | z1 | z1z2 |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in d["runs"]:
            e, f = r["error_by_decision"], r["first_chunk"]
            err = " | ".join(f"{e[k]['chunk_mean']:.4f}" if k in e else "–" for k in ("t=0", "t=1", "t=2", "t>=3"))
            col = " | ".join(_pct(f[k]["collision"]) for k in ("none", "z1", "z1z2"))
            ang = " / ".join(f"{e[k]['heading_error_deg_median']:.1f}°" for k in ("t=0", "t>=3") if k in e)
            rot = "yes" if r.get("rotate_first") else "no"
            lines.append(f"| {r['run']} | {r.get('prediction_type', '–')} | {r['step']} | {r['demo_noise']:g} | "
                         f"{r['z1_dim']} | {rot} | {err} | {ang} | {col} |")
        lines.append("")
        dv = [r for r in d["runs"] if "draw_vs_mean" in r]
        if dv:
            lines += ["Bias or variance at the first decision: the median direction error of one sampled chunk against "
                      f"that of the mean of {dv[0]['draw_vs_mean']['draws']} chunks, on the "
                      f"{dv[0]['draw_vs_mean']['windows']} first-decision windows, and the median spread between draws. "
                      "If averaging draws removed most of the error, the error would be the samples' spread (variance); "
                      "where both are alike every draw is off the same way (bias).", "",
                      "| run | output | z1: one draw | z1: mean of draws | z1: spread | z1z2: one draw | "
                      "z1z2: mean of draws | z1z2: spread |", "|---|---|---|---|---|---|---|---|"]
            for r in dv:
                v = r["draw_vs_mean"]
                cells = " | ".join(f"{v[lv][k]:.1f}°" for lv in ("z1", "z1z2") for k in (
                    "one_draw_deg_median", "mean_of_draws_deg_median", "spread_between_draws_deg_median"))
                lines.append(f"| {r['run']} | {r.get('prediction_type', '–')} | {cells} |")
            lines.append("")


def section_faults(lines):
    d = _load("fault_injection")
    if not d:
        return
    k = d["kills"]
    n = len(k["trials"])
    lines += ["## 11. Run directories under fault injection", "",
              f"From `{d['command']}` ({d['seconds'] / 60:.0f} min, {d['machine'].get('cpu', '?')}): every case through the "
              "command line as a user runs it; *tracebacks* counts Python tracebacks printed by any of the case's commands.", "",
              "| case | outcome as expected | tracebacks | checks |", "|---|---|---|---|"]
    for name, c in d["cases"].items():
        checks = "; ".join(f"{w}: {'yes' if ok else '**no**'}" for w, ok in c["checks"].items() if not w.startswith(("exit 0:", "exit non-zero:")))
        lines.append(f"| {name} | {'yes' if c['ok'] else '**no**'} | {c['tracebacks']} | {checks} |")
    by_aim = {aim: [t for t in k["trials"] if t.get("aim", "uniform") == aim] for aim in ("uniform", "write")}
    lines += ["", f"`kill -9` during a {k['steps']}-step training run (checkpoint every 10 steps, "
              f"{k['uninterrupted_wall_s']:.1f} s uninterrupted), then `--resume`, compared with the uninterrupted run "
              "(final weights and every logged loss). *uniform*: killed at a uniformly random time of the run; "
              "*write*: killed a few ms after a checkpoint write was seen in progress.", "",
              "| kill time | trials | resumed exactly | results lost | tracebacks | killed inside a checkpoint write |",
              "|---|---|---|---|---|---|"]
    for aim, ts in by_aim.items():
        if ts:
            lines.append(f"| {aim} | {len(ts)} | {sum(t['exact'] for t in ts)}/{len(ts)} | {sum(t['lost'] for t in ts)} | "
                         f"{sum(t['traceback_on_resume'] for t in ts)} | {sum(t['killed_inside_checkpoint_write'] for t in ts)} |")
    lines.append(f"| all | {n} | {k['exact']}/{n} | {k['lost']} | {k['tracebacks']} | {k['inside_checkpoint_write']} |")
    lines.append("")


def section_gpu_check(lines):
    d = _load("gpu_check")
    if not d:
        return
    lines += ["## 12. IBC-Langevin on one GPU", "",
              f"`{d['command']}` on {d['device_name']} ({d['device']}), preset `{d['preset']}`, {d['demos']} demos per N, "
              f"{d['max_minutes']:g} min of training per N ({d['seconds'] / 60:.1f} min in all).", "",
              "| N | steps | steps/s | train s | success | 95% CI | command |", "|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        lo, hi = r["success_ci95"]
        lines.append(f"| {r['n_dim']} | {r['steps']} | {r['steps_per_s']:.1f} | {r['train_seconds']:.0f} | "
                     f"{r['success_rate']:.0%} ({r['episodes']} ep) | [{lo:.0%}, {hi:.0%}] | `{r['command']}` |")
    lines.append("")


def section_metaworld(lines):
    d = _load("metaworld")
    lines += ["## 13. MetaWorld from state", ""]
    if not d or not d["cells"]:
        lines += ["Not measured yet.", ""]
        return
    cells = list(d["cells"].values())
    lines += [
        "Success per MetaWorld task (`--env metaworld/<task>`, 39-D state, 4-D actions), evaluated on "
        f"{cells[0]['episodes']} episodes of held-out env seeds 100000… (demonstrations: seeds 0…demos-1); an "
        "episode succeeds when MetaWorld's `info[\"success\"]` holds at any step and ends there (limit 500 steps). "
        "*expert*: MetaWorld's scripted expert, no training; the other methods are the `<method>-metaworld` presets "
        "trained for the budget on the expert's demonstrations. *first success*: mean step of the first success "
        "over the successful episodes; *env steps/s*: during evaluation, policy included; *train steps/s* over the "
        "training time. Produced by `python benchmarks/metaworld_bench.py --tasks <t…> --methods <m…> --demos <n…>` "
        "(each cell's exact command and machine are in `benchmarks/results/metaworld.json`).",
        "",
        "| task | method | demos | budget (min) | success | 95% CI | first success | env steps/s | train steps/s | "
        "eval episodes/s | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = ["expert", "mse", "diffusion", "flow", "ibc-dfo", "ibc-langevin"]
    for c in sorted(cells, key=lambda c: (c["task"], order.index(c["method"]) if c["method"] in order else 99,
                                          c["demos"])):
        first = f"{c['mean_first_success_step']:.0f}" if c.get("mean_first_success_step") is not None else "-"
        tps = f"{c['train_steps_per_s']:.0f}" if c.get("train_steps_per_s") else "-"
        secs = c["eval_seconds"] + (c.get("train_seconds") or 0.0)
        lines.append(f"| {c['task']} | {c['method']} | {c['demos'] or '-'} | "
                     f"{'-' if c.get('budget_min') is None else format(c['budget_min'], 'g')} | "
                     f"{_pct(c['success_rate'])} | {_ci(c['success_ci95'])} | {first} | {c['env_steps_per_s']:.0f} | "
                     f"{tps} | {c['eval_episodes_per_s']:.2f} | {secs:.0f} |")
    lines += ["", "Cost per method (median over the cells above; env steps/s during evaluation, policy included; "
              "training steps/s on one torch thread):", "",
              "| method | cells | env steps/s | train steps/s | eval episodes/s | demo collection env steps/s |",
              "|---|---|---|---|---|---|"]
    for method in order:
        mc = [c for c in cells if c["method"] == method]
        if not mc:
            continue

        def med(key):
            v = sorted(c[key] for c in mc if c.get(key))
            return v[len(v) // 2] if v else None

        f = lambda x, fmt: "-" if x is None else format(x, fmt)  # noqa: E731
        lines.append(f"| {method} | {len(mc)} | {f(med('env_steps_per_s'), '.0f')} | "
                     f"{f(med('train_steps_per_s'), '.0f')} | {f(med('eval_episodes_per_s'), '.2f')} | "
                     f"{f(med('collect_env_steps_per_s'), '.0f')} |")
    m = cells[0]["machine"]
    cmds = sorted({c["bench_command"] for c in cells})
    lines += ["", f"*s*: training plus evaluation seconds. Machine: {m['cpu']} ({m['date']}, commit {m['git']}); the "
              "`-metaworld` presets train on one torch thread. Commands: " + "; ".join(f"`{x}`" for x in cmds), "",
              "![MetaWorld](benchmarks/results/metaworld.png)", ""]


_STEER_TITLES = {
    "stress": "stress test: an adversary maximizes the predicted hand path's distance from the object at every "
              "decision; failures counted in the simulator",
    "keepout": "keep-out box on the expert's path (never seen in training); *avoided*: the real hand never entered it",
    "mode": "mode selection on a policy trained on the via-point demos: episode i requests via-point i % 2",
    "leverage": "noise leverage: spread of the executed actions over 16 noises at the expert's observations",
}


def section_metaworld_steer(lines):
    files = sorted(RES.glob("metaworld_steer_*.json"))
    lines += ["### 13b. Steering on MetaWorld, verified in the simulator", ""]
    if not files:
        lines += ["Not measured yet.", ""]
        return
    lines += ["Every variant chooses each chunk at every re-planning (`python benchmarks/metaworld_steer.py --help` "
              "describes the objectives, all functions of the end-effector path a chunk drives); 95% Wilson "
              "intervals; every variant draws its noises from the same seed. *NFE/decision*: denoiser evaluations "
              "per chosen chunk (stress: a backward pass counted at its measured cost; keep-out and mode: "
              "best-of-N draws 3 × steps + 1 chains, an Adam step counted as three); *in 99%*: share of the chosen "
              "noises whose norm lies inside the prior's central 99% (all of the gradient's and noise-opt's by "
              "construction: they stay on the √d shell); *failures / 1000 NFE*: failing episodes over the denoiser "
              "evaluations of all their decisions, the base policy's own failures included.", ""]
    docs = [json.loads(f.read_text()) for f in files]
    lev = [d for d in docs if d["experiment"] == "leverage"]
    if lev:
        steps = list(lev[0]["results"]["leverage"])
        lines += [f"**{_STEER_TITLES['leverage']}** (mean |action| in brackets; `python benchmarks/metaworld_steer.py "
                  "leverage --run-dir RUN`).", "",
                  "| task | base run | demos | prediction | " + " | ".join(f"expert's step {k[4:]}" for k in steps) + " |",
                  "|---|---|---|---|" + "---|" * len(steps)]
        for d in lev:
            r = d["results"]["leverage"]
            lines.append(f"| {d['task']} | `{Path(d['run_dir']).name}` | {d['demos']}"
                         f"{' via-point' if d.get('multimodal_demos') else ''} | {d['policy'].get('prediction_type')} | "
                         + " | ".join(f"{r[k]['spread']:.2g} ({r[k]['mean_abs_action']:.2f})" for k in steps) + " |")
        lines += ["", "Commands: " + "; ".join(f"`{d['command']}`" for d in lev), ""]
    for d in docs:
        exp, res = d["experiment"], d["results"]
        if exp == "leverage":
            continue
        lines += [f"**{d['task']}, {_STEER_TITLES.get(exp, exp)}.** Base `{Path(d['run_dir']).name}` "
                  f"({d['demos']} demos{', via-point' if d.get('multimodal_demos') else ''}, "
                  f"prediction {d['policy'].get('prediction_type')}); `{d['command']}`", ""]
        extra = {"stress": [("failure", "failures")], "keepout": [("avoided", "avoided"),
                                                                  ("success_and_avoided", "success and avoided")],
                 "mode": [("requested_via", "requested via-point first"), ("other_via", "other first"),
                          ("success_and_requested", "success and requested")]}[exp]
        head = ["variant", "success", *[h for _, h in extra]]
        if exp == "stress":
            head += ["failures / 1000 NFE"]
        head += ["NFE/decision", "in 99%", "s"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for label, r in res.items():
            row = [label, f"{_pct(r['success']['rate'])} {_ci(r['success']['ci95'])}"]
            row += [f"{_pct(r[k]['rate'])} {_ci(r[k]['ci95'])}" for k, _ in extra]
            if exp == "stress":
                row.append(f"{r['failures_per_1000_nfe']:.3f}" if "failures_per_1000_nfe" in r else "-")
            ins = r.get("noises_inside_central_99")
            row += [f"{r['nfe_per_decision']:.0f}", "-" if ins is None else _pct(ins), f"{r['wall_seconds']:.0f}"]
            lines.append("| " + " | ".join(row) + " |")
        if d.get("videos"):
            lines += ["", "Videos (first episode of each variant): " + ", ".join(
                f"[{k}](benchmarks/results/{v['path']})" for k, v in d["videos"].items())]
        lines.append("")
    for name, d in _critic_tasks("metaworld"):
        _critic_task_block(lines, d, name)


def main():
    lines = ["# Benchmarks", "",
             "Every figure below is read from `benchmarks/results/*.json`, written by the committed script named",
             "with it; this file is regenerated by `python benchmarks/make_report.py`. Machine: 2 CPU cores, no GPU.", ""]
    section_sweep(lines)
    section_parameterization(lines)
    section_multimodality(lines)
    section_ddim_clip_rule(lines)
    section_speed(lines)
    section_chain_dtype(lines)
    section_compute(lines)
    section_ibc_chain_options(lines)
    section_grad_memory(lines)
    section_latency(lines)
    section_stress(lines)
    section_wm_stress(lines)
    section_steering(lines)
    section_critic(lines)
    section_nav(lines)
    section_nav_chunks(lines)
    section_nav_modes(lines)
    section_faults(lines)
    section_gpu_check(lines)
    section_metaworld(lines)
    section_metaworld_steer(lines)
    extra = HERE / "notes.md"
    if extra.exists():
        lines += [extra.read_text()]
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
