#!/usr/bin/env bash
# The main job. (Interim: one `idem train` run; becomes the full service run with `idem up`.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/idem train --arch N1 --algorithm modified --lr 0.05 --epochs 300 --seed 0
