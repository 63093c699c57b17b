#!/usr/bin/env bash
# DDP without a GPU: 2 processes on the CPU (gloo), to try multi-process training.
#   launch/cpu_ddp.sh SHARDS RUN_DIR [train.py flags...]        NPROC=2 by default
# `accelerate launch --multi_gpu` starts them all, and facegan picks gloo when it finds no GPU;
# `accelerate launch --cpu --num_processes 2` would start a single process (Accelerate's own
# behaviour). torchrun works too: python -m torch.distributed.run --standalone --nproc_per_node 2 ...
set -euo pipefail
source "$(dirname "$0")/common.sh"
run "${LAUNCH[@]}" --multi_gpu \
    --num_processes "${NPROC:-2}" --mixed_precision no "$REPO/facegan/train.py" --data "$DATA" --run-dir "$RUN_DIR" "$@"
