"""Train a face GAN:  accelerate launch facegan/train.py --data SHARDS --run-dir RUN [flags]

Also runs as `python facegan/train.py`, `python -m facegan.train` and under torchrun. Every
config field is a flag (see --help); --preset dcgan|strong|demo picks the defaults.
"""

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script (accelerate launch / python facegan/train.py): Python put facegan/ first on
    # sys.path, where module names could shadow installed ones. Put the repository root there.
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from facegan.config import config_from_args  # noqa: E402
from facegan.shardset import ShardSetError  # noqa: E402


def main(argv=None) -> int:
    try:
        cfg, args = config_from_args(argv)
    except ValueError as e:
        print(f"facegan/train.py: error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        import json

        print(json.dumps(cfg.to_dict(), indent=1))
        return 0
    from facegan.training_loop import Diverged, NonFiniteLoss, train

    try:
        train(cfg)
    except KeyboardInterrupt:  # a second Ctrl-C (the first asks for a save), or one during start-up
        print("facegan/train.py: aborted by Ctrl-C without saving; --resume auto continues from the newest "
              "checkpoint", file=sys.stderr)
        return 130
    except (NonFiniteLoss, Diverged, ShardSetError, ValueError) as e:
        print(f"facegan/train.py: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a full disk, a read-only or vanished run folder: the file and the reason
        where = f"{e.filename}: " if e.filename else ""
        print(f"facegan/train.py: error: {where}{e.strerror or e}; once there is room, --resume auto "
              "continues from the newest intact checkpoint", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
