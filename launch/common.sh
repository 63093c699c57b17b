# Sourced by the launch scripts: repository root, data and run folders, dry-run support.
# DATA and RUN_DIR come from the environment or the first two arguments; the rest pass through
# to facegan/train.py. DRY_RUN=1 prints the command instead of running it.
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ $# -ge 2 && $1 != --* && $2 != --* ]]; then
    DATA="$1"; RUN_DIR="$2"; shift 2
fi
: "${DATA:?set DATA=shards/... or pass the shard folder as the first argument}"
: "${RUN_DIR:?set RUN_DIR=runs/... or pass the run folder as the second argument}"
PYTHON="${PYTHON:-python3}"

run() {  # print the command (always), then run it unless DRY_RUN=1
    printf '%q ' "$@"; printf '\n'
    [[ "${DRY_RUN:-0}" == 1 ]] || "$@"
}
