#!/usr/bin/env bash
# Every GPU of this node, one process each (DDP over NCCL).
#   launch/multi_gpu.sh SHARDS RUN_DIR [train.py flags...]      NUM_GPUS=4 to use fewer
# --batch-size is per GPU: the global batch is batch size x NUM_GPUS (see docs/scaling.md).
set -euo pipefail
source "$(dirname "$0")/common.sh"
NUM_GPUS="${NUM_GPUS:-$(nvidia-smi --list-gpus 2>/dev/null | wc -l)}"
if [[ "$NUM_GPUS" -lt 1 ]]; then echo "multi_gpu.sh: no GPU found (set NUM_GPUS)" >&2; exit 2; fi
run accelerate launch --config_file "$REPO/accelerate_config.yaml" --multi_gpu --num_processes "$NUM_GPUS" \
    "$REPO/facegan/train.py" --data "$DATA" --run-dir "$RUN_DIR" "$@"
