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
# Every script launches the same way: Accelerate's launcher as a module of the Python that trains
# (no `accelerate` on PATH needed, no other environment's), with facegan's config.
LAUNCH=("$PYTHON" -m accelerate.commands.launch --config_file "$REPO/accelerate_config.yaml")

run() {  # print the command (always), then run it unless DRY_RUN=1, passing stop signals on as RUN_DIR/STOP
    printf '%q ' "$@"; printf '\n'
    [[ "${DRY_RUN:-0}" == 1 ]] && return 0
    "$@" &
    TRAINER_PID=$!
    trap stop_request TERM INT USR1
    local status
    while :; do  # a trapped signal interrupts `wait`; wait again until the trainer has exited
        wait "$TRAINER_PID" && status=0 || status=$?  # (set -e must not end the script here)
        kill -0 "$TRAINER_PID" 2>/dev/null || break
    done
    trap - TERM INT USR1
    return "$status"
}

# A scheduler's SIGTERM (or SIGUSR1, Ctrl-C) to this script becomes RUN_DIR/STOP: every rank
# sees it at its next 10-step check, they save one checkpoint together and exit 0. Signalled
# directly, torchrun and accelerate's launcher would exit 1 with their own traceback after the
# ranks saved; the file goes through them unharmed.
stop_request() {
    echo "facegan: stop requested; asking the ranks to save and exit ($RUN_DIR/STOP)" >&2
    mkdir -p "$RUN_DIR" && touch "$RUN_DIR/STOP"
}
