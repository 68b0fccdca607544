#!/usr/bin/env bash
# The trained policies the issue-3/4/5 benchmarks start from, exactly as they were trained for BENCHMARKS.md.
#   bash benchmarks/train_bases.sh [RUNS_DIR]      (default: runs; datasets are collected into data/ if missing)
# sweep-flow-2d-s0 is the flow cell of the particle sweep (python benchmarks/particle_sweep.py --methods flow --dims 2).
set -euo pipefail
RUNS=${1:-runs}
# 2-D flow policy of the sweep: 2,000 demos, 20-minute budget (finished its 30k steps)
steerlab train flow-particle --n-dim 2 --max-minutes 20 --run-name sweep-flow-2d-s0 --out-dir "$RUNS" --seed 0 \
  --eval.episodes 100 --no-progress --resume
# imperfect base for the energy critic: 100 demos, 5,000 steps
steerlab train flow-particle --n-dim 2 --episodes 100 --steps 5000 --run-name flow-2d-100demos --out-dir "$RUNS" \
  --eval.episodes 100 --no-progress --resume
# multimodal demos (goal order shuffled) for goal-order steering: 2,000 demos, 10,000 steps
steerlab train flow-particle --n-dim 2 --multimodal --steps 10000 --run-name flow-2d-multimodal --out-dir "$RUNS" \
  --eval.episodes 100 --no-progress --resume
# nav policy of benchmarks/nav_bench.py: the preset (20,000 route-planner episodes), stopped by a 42-minute budget
steerlab train nomad-nav2d --max-minutes 42 --run-name nomad-nav2d-20k --out-dir "$RUNS" --no-progress --resume
# issue 5, nav policies of BENCHMARKS section 10 (nav_chunk_error.py; nav_bench.py --name nav_bench_dart), in the
# order they ran. The preset for 14 minutes on 2 threads, alone:
steerlab train nomad-nav2d --max-minutes 14 --threads 2 --run-name nav-base --out-dir "$RUNS" --no-progress --resume
# side by side on one core each, the preset on DART demonstrations (data/nav2d-mixed-20000-dart0.3p0.5.zarr), with the
# default intent and with a 16-D z1:
steerlab train nomad-nav2d --demo-noise 0.3 --steps 16000 --max-minutes 72 --threads 1 --run-name nav-dart \
  --out-dir "$RUNS" --no-progress --resume
steerlab train nomad-nav2d --demo-noise 0.3 --steps 16000 --max-minutes 70 --threads 1 --policy.model.intent.z1-dim 16 \
  --policy.model.intent.hidden 128 --run-name nav-dart-z16 --out-dir "$RUNS" --no-progress --resume
# alone on 2 threads again, the preset with quarter turns of the first decisions:
steerlab train nomad-nav2d --policy.rotate-first --max-minutes 14 --threads 2 --run-name nav-rot --out-dir "$RUNS" \
  --no-progress --resume
