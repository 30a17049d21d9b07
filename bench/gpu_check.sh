#!/usr/bin/env bash
# One command for a machine with a CUDA GPU (under 10 minutes): the suite's CUDA tests,
# N1-N3 and B1 packed on the GPU against the CPU in float64 (1e-9 relative), a
# `gpu: 0.25` sweep through `idem up` (four trials sharing the GPU), and B3/B4/N4 epochs
# against the GPU's measured matmul peak; one summary table at the end.
# Without CUDA it says so in one line and exits 0. See docs/benchmarks.md.
#   bash bench/gpu_check.sh [--json FILE] [--reps N] [--m ROWS]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no CUDA GPU visible to torch $("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo '(not importable)') on $(hostname); nothing to check"
    exit 0
fi
export RAY_USAGE_STATS_ENABLED=0
exec timeout --signal=INT 600 "$PY" bench/gpu_check.py "$@"
