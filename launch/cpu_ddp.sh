#!/usr/bin/env bash
# DDP without a GPU: 2 processes on the CPU with torchrun (gloo), to try multi-process training.
#   launch/cpu_ddp.sh SHARDS RUN_DIR [train.py flags...]        NPROC=2 by default
# (accelerate launch --cpu --num_processes 2 starts a single process on some machines; torchrun
# starts them all, and facegan picks gloo when it finds no GPU.)
set -euo pipefail
source "$(dirname "$0")/common.sh"
run "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "${NPROC:-2}" \
    "$REPO/facegan/train.py" --data "$DATA" --run-dir "$RUN_DIR" "$@"
