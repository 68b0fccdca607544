#!/usr/bin/env bash
# IBC-Langevin (repo config) on one CUDA GPU at N = 2, 8, 16, 32: 2 min of training and 100 evaluation episodes
# per N (plus the collection of 2,000 demos per N when missing), ~12 min in all; writes
# benchmarks/results/gpu_check.json. Extra arguments go to benchmarks/gpu_check.py (e.g. --dims 2 8).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python benchmarks/gpu_check.py --device cuda --dims 2 8 16 32 --max-minutes 2 --episodes 100 "$@"
