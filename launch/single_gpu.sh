#!/usr/bin/env bash
# One GPU.  launch/single_gpu.sh SHARDS RUN_DIR [train.py flags...]
#   e.g. launch/single_gpu.sh shards/celeba-64 runs/celeba --preset strong --max-kimg 5000
# bf16 autocast where the GPU has it; resumes automatically from RUN_DIR's latest complete checkpoint.
set -euo pipefail
source "$(dirname "$0")/common.sh"
run "${LAUNCH[@]}" --num_processes 1 \
    "$REPO/facegan/train.py" --data "$DATA" --run-dir "$RUN_DIR" "$@"
