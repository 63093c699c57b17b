"""Train a face GAN:  accelerate launch facegan/train.py --data SHARDS --run-dir RUN [flags]

Also runs as `python facegan/train.py`, `python -m facegan.train` and under torchrun. Every
config field is a flag (see --help), parsed here into the typed TrainConfig; --preset picks the
defaults the flags override.
"""

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script (accelerate launch / python facegan/train.py): Python put facegan/ first on
    # sys.path, where module names could shadow installed ones. Put the repository root there.
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import errno  # noqa: E402
import json  # noqa: E402
import typing  # noqa: E402

from facegan import networks  # noqa: E402
from facegan.cli import OneLineErrors, field_comments, parse_bool  # noqa: E402
from facegan.data.attributes import parse_condition  # noqa: E402
from facegan.data.shardset import ShardSetError, load_shardset  # noqa: E402
from facegan.metrics.registry import parse_metrics  # noqa: E402
from facegan.training.augment import parse_policy  # noqa: E402
from facegan.training.config import CHOICES, ConfigError, TrainConfig  # noqa: E402
from facegan.training.presets import BY_RESOLUTION, DCGAN, PRESETS, preset_config  # noqa: E402
from facegan.watch.trackers import parse_trackers  # noqa: E402

# List-valued fields and the parser of each: a bad name is one line naming the flag.
LISTS = {"condition": parse_condition, "balance": parse_condition, "diffaugment": parse_policy,
         "tracker": parse_trackers, "metrics": parse_metrics}


def _names(parse: typing.Callable) -> typing.Callable[[str], tuple[str, ...]]:
    def parse_flag(text: str) -> tuple[str, ...]:
        try:
            return tuple(parse(text))
        except ValueError as e:  # argparse would print "invalid value" instead of the reason
            raise argparse.ArgumentTypeError(str(e).split(": ", 1)[-1]) from None

    return parse_flag


def _flag_kwargs(name: str, kind, help_text: str, default) -> dict:
    """argparse settings of a typed field; default None, so a flag overrides the preset only when given."""
    shown = ",".join(default) if isinstance(default, tuple) else default
    shown = f" (default: {shown!r})" if shown not in ("", None) else ""
    kwargs = {"default": None, "help": help_text.replace("%", "%%") + shown}
    if kind is bool:  # `--cpu` alone means true, as in evaluate and sample; `--cpu false` too
        kwargs.update(type=parse_bool, nargs="?", const=True, metavar="true|false")
    elif name in LISTS:
        kwargs.update(type=_names(LISTS[name]), metavar="A,B")
    else:
        kwargs["type"] = kind
    return kwargs


def build_parser() -> argparse.ArgumentParser:
    """--preset plus one flag per config field (--max-steps, --lr-g, ...) and per architecture
    option (--d-batchnorm, ...); all are validated."""
    parser = OneLineErrors(
        prog="facegan/train.py", description="Train a face GAN with Accelerate. Defaults shown are the "
        "dcgan preset's; --preset strong|modern|demo changes some of them.", allow_abbrev=False)
    helps = field_comments(TrainConfig)
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name == "arch_options":
            continue
        kwargs = _flag_kwargs(f.name, hints[f.name], helps.get(f.name, ""), getattr(DCGAN, f.name))
        if f.name == "preset":
            kwargs.update(choices=sorted(PRESETS), help="the preset the other flags override")
        if f.name in CHOICES:
            kwargs["choices"] = CHOICES[f.name]
        parser.add_argument("--" + f.name.replace("_", "-"), **kwargs)
    group = parser.add_argument_group("architecture options", "each belongs to the archs named in brackets")
    for name, (kind, default, help_text, archs) in networks.option_fields().items():
        defaults = {arch: getattr(networks.arch_options(arch)(), name) for arch in archs}
        if len(set(defaults.values())) > 1:  # e.g. d_spectral_norm: off in dcgan, on in resnet
            help_text += " (default: " + ", ".join(f"{a} {v!r}" for a, v in defaults.items()) + ")"
            default = None
        kwargs = _flag_kwargs(name, kind, f"[{', '.join(archs)}] {help_text}", default)
        kwargs.setdefault("metavar", name.upper())
        group.add_argument("--" + name.replace("_", "-"), dest=f"option:{name}", **kwargs)
    parser.add_argument("--config", metavar="RUN/config.json",
                        help="replay a run's config (every value it ran with); flags given here win")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the resolved config and exit without training")
    return parser


def read_config(path: str) -> TrainConfig:
    """The TrainConfig a run's config.json holds; a missing file, bad JSON, an unknown key or a
    value of the wrong type is one line naming the file and the key."""
    try:
        saved = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"--config {path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"--config {path}: unreadable ({e})") from None
    except RecursionError:  # JSON nested thousands deep
        raise ValueError(f"--config {path}: nested too deeply to be a facegan config") from None
    if not isinstance(saved, dict):
        raise ValueError(f"--config {path}: expected a JSON object of config keys")
    hints = typing.get_type_hints(TrainConfig)
    values = {}
    for key, value in saved.items():
        if key not in hints:
            raise ValueError(f"--config {path}: unknown key {key!r} (not a facegan/train.py setting)")
        kind = hints[key]
        if key in LISTS or key == "arch_options":
            ok = isinstance(value, list if key in LISTS else dict)
            value = tuple(value) if key in LISTS and ok else value
        elif kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
        else:
            ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        if not ok:
            raise ValueError(f"--config {path}: {key}={value!r}: expected {getattr(kind, '__name__', kind)}")
        values[key] = value
    arch = values.get("arch", TrainConfig.arch)
    if arch in networks.ARCHS:  # (another arch is refused by name when the config is validated)
        networks.check_options(arch, values.get("arch_options", {}), f"--config {path}: arch_options")
    return dataclasses.replace(TrainConfig(), **values)


def config_from_args(argv: list[str] | None = None, resolution: int | None = None
                     ) -> tuple[TrainConfig, argparse.Namespace]:
    """The config that train.py's flags `argv` give (not yet validated: train() does that, once).
    A preset whose values depend on the image size reads the size from --data's manifest, unless
    `resolution` gives it (benchmarks without shards)."""
    args = build_parser().parse_args(argv)
    if args.config:
        if args.preset:
            raise ValueError(f"--preset {args.preset} with --config {args.config}: the config holds every value "
                             "already; give the flags to change instead")
        base = read_config(args.config)
    else:
        name = args.preset or "dcgan"
        if name in BY_RESOLUTION and resolution is None:  # read the image size from the shards' manifest
            if not args.data:
                raise ValueError(f"--preset {name} needs --data SHARDS_DIR (its settings depend on the image size)")
            resolution = load_shardset(args.data).size
        base = preset_config(name, resolution)
    given = {k: v for k, v in vars(args).items() if v is not None and k not in ("dry_run", "config")}
    fields = {k: v for k, v in given.items() if not k.startswith("option:")}
    options = {k.split(":", 1)[1]: v for k, v in given.items() if k.startswith("option:")}
    arch = fields.get("arch", base.arch)
    known = {f.name for f in dataclasses.fields(networks.arch_options(arch))} if arch in networks.ARCHS else set()
    for name in options:
        if name not in known:
            raise ValueError(f"--{name.replace('_', '-')} is not an option of arch {arch} (its options: "
                             f"{', '.join('--' + k.replace('_', '-') for k in sorted(known)) or 'none'})")
    # The preset's options that the chosen arch has, then the flags given.
    preset_options = {k: v for k, v in base.arch_options.items() if k in known}
    cfg = dataclasses.replace(base, **fields, arch_options={**preset_options, **options})
    if not cfg.data or not cfg.run_dir:
        raise ValueError("--data SHARDS_DIR and --run-dir RUN_DIR are required")
    return cfg, args


def main(argv=None, hooks=None) -> int:
    """The command: exit 0 when trained, 1 for a failed run, 2 for bad input, 130 for a second
    Ctrl-C. `hooks` (facegan.training.loop.Hooks) go to train(), for tests and notebooks."""
    try:
        cfg, args = config_from_args(argv)
        if args.dry_run:
            cfg.validate()
            from facegan.runtime import resolve_precision  # Accelerate and torch: not for --help or a bad flag

            precision, source = resolve_precision(cfg.mixed_precision, cfg.cpu)
            print(json.dumps(cfg.to_dict(), indent=1))
            print(f"facegan/train.py: dry run: mixed precision {precision} ({source})", file=sys.stderr)
            return 0
    except ValueError as e:
        print(f"facegan/train.py: error: {e}", file=sys.stderr)
        return 2
    # Here, after parsing: the loop loads Accelerate, webdataset and torchvision (about 3 s), which
    # --help, --dry-run and a bad flag do without.
    from facegan.training.health import Diverged, NonFiniteLoss  # noqa: I001  (loads nothing more)
    from facegan.training.loop import train  # Accelerate, webdataset, torchvision

    try:
        train(cfg, hooks)  # validates cfg first
    except ConfigError as e:
        print(f"facegan/train.py: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C (the first asks for a save), or one during start-up
        print("facegan/train.py: aborted by Ctrl-C without saving; --resume auto continues from the newest "
              "checkpoint", file=sys.stderr)
        return 130
    except (NonFiniteLoss, Diverged, ShardSetError, ValueError) as e:
        print(f"facegan/train.py: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a full disk, a read-only or vanished run folder: the file and the reason
        print(f"facegan/train.py: error: {describe_os_error(e)}", file=sys.stderr)
        return 1
    return 0


def describe_os_error(e: OSError) -> str:
    """The file and the reason, and what to do: a full disk or quota resumes once there is room;
    anything else (a read-only or vanished folder, a file where a folder should be) needs fixing."""
    where = f"{e.filename}: " if e.filename else ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        advice = "once there is room, --resume auto continues from the newest intact checkpoint"
    elif e.errno == errno.EIO:  # files.writing's word for a write that failed, beside the disk's free space
        advice = "if the disk is full, once there is room --resume auto continues from the newest intact checkpoint"
    else:
        advice = "fix that path (or pick another --run-dir); --resume auto then continues from the newest intact " \
                 "checkpoint"
    return f"{where}{e.strerror or e}; {advice}"


if __name__ == "__main__":
    sys.exit(main())
