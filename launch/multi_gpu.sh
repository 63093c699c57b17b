#!/usr/bin/env bash
# Every GPU of this node, one process each (DDP over NCCL).
#   launch/multi_gpu.sh SHARDS RUN_DIR [train.py flags...]      NUM_GPUS=4 to use fewer
# --batch-size is per GPU: the global batch is batch size x NUM_GPUS (see docs/scaling.md).
set -euo pipefail
source "$(dirname "$0")/common.sh"
if [[ -z "${NUM_GPUS:-}" ]]; then
    if ! command -v nvidia-smi >/dev/null; then
        echo "multi_gpu.sh: nvidia-smi not found, so the GPUs cannot be counted: set NUM_GPUS=N (on a machine" \
             "without GPUs, launch/cpu_ddp.sh runs DDP on the CPU)" >&2
        exit 2
    fi
    NUM_GPUS="$(nvidia-smi --list-gpus | wc -l)"
fi
if [[ "$NUM_GPUS" -lt 1 ]]; then echo "multi_gpu.sh: no GPU found (set NUM_GPUS)" >&2; exit 2; fi
run "${LAUNCH[@]}" --multi_gpu --num_processes "$NUM_GPUS" \
    "$REPO/facegan/train.py" --data "$DATA" --run-dir "$RUN_DIR" "$@"
