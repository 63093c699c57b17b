"""The one typed training config, its presets, and the command line built from its fields."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import typing
from dataclasses import dataclass
from pathlib import Path

LOSSES = ("bce", "hinge", "nonsat")
PRECISIONS = ("auto", "no", "bf16", "fp16")
TRACKERS = ("none", "wandb")
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
AUGMENTS = ("color", "translation", "cutout")  # facegan.augment.AUGMENTS


@dataclass
class TrainConfig:
    # Data and run
    data: str = ""  # packed shard folder (python -m facegan.pack)
    run_dir: str = ""  # where config, metrics, samples, checkpoints and exports go
    preset: str = "dcgan"  # the preset these values started from
    seed: int = 0  # base seed; each rank draws from seed * world + rank
    num_workers: int = 2  # DataLoader workers per process
    hflip: bool = True  # mirror half the faces
    shuffle_buffer: int = 2000  # samples held per worker for shuffling
    # Networks
    z_dim: int = 100  # latent size
    ngf: int = 64  # generator width at the last block
    ndf: int = 64  # discriminator width at the first block
    d_batchnorm: bool = True  # BatchNorm in D (the DCGAN recipe); off when spectral norm is on
    d_spectral_norm: bool = False  # spectral normalisation of every D layer
    # Objective
    loss: str = "bce"  # bce (with label smoothing), hinge or nonsat (non-saturating softplus)
    real_label: float = 0.9  # bce target for real images (one-sided label smoothing)
    r1_gamma: float = 0.0  # R1 penalty weight on real images; 0 is off
    r1_every: int = 16  # lazy R1: apply every N D steps, scaled by N
    diffaugment: str = ""  # comma list of color,translation,cutout; empty is off
    # Optimisation
    batch_size: int = 128  # per process; the global batch is batch_size x world size
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    ema: bool = False  # keep an exponential moving average of G for sampling and FID
    ema_decay: float = 0.999  # EMA decay per step
    # Length and precision
    max_steps: int = 0  # stop after this many steps (0: use max_kimg)
    max_kimg: float = 0.0  # or after this many thousand images across all ranks
    mixed_precision: str = "auto"  # auto (the launcher's, else bf16 on a GPU, else no), no, bf16 or fp16
    cpu: bool = False  # train on the CPU even where a GPU is present
    # Speed (none changes the maths of a step beyond float rounding; resume stays exact)
    channels_last: bool = True  # NHWC memory layout for G, D and the batches (faster convolutions)
    fused_adam: bool = True  # torch's fused Adam kernels (one kernel per optimizer step)
    deterministic: bool = False  # cuDNN deterministic algorithms: bitwise-exact resume on GPU (a little slower)
    compile: str = "off"  # torch.compile mode for G and D: off, default, reduce-overhead (CUDA graphs), max-autotune
    # Checkpoints, logging, tracking
    ckpt_every: int = 1000  # steps between resumable checkpoints (and generator exports)
    keep: int = 3  # checkpoints kept; older ones are deleted
    resume: str = "auto"  # auto (latest complete checkpoint in run_dir, if any), none, or a path
    log_every: int = 50  # steps between metrics.jsonl lines / tracker scalars
    sample_every: int = 500  # steps between sample grids of the fixed latents
    num_samples: int = 64  # images in a sample grid
    tracker: str = "none"  # none or wandb (WANDB_MODE=offline works without network)
    wandb_project: str = "facegan"
    run_name: str = ""  # tracker run name (default: the run folder's name)
    # FID (torch-fidelity InceptionV3), measured during training when fid_every > 0
    fid_every: int = 0  # steps between FID measurements; 0 is off
    fid_samples: int = 10000  # generated images per FID (the real side is every packed sample)
    fid_batch_size: int = 100  # Inception batch per process
    inception_weights: str = ""  # torch-fidelity InceptionV3 weights file (default: standard, downloaded)
    fid_cache: str = ""  # folder for cached real-data statistics (default: ~/.cache/facegan/fid-stats)
    warm_start_g: str = ""  # exported generator (.safetensors) to start G from
    warm_start_d: str = ""  # exported discriminator (.safetensors) to start D from

    def validate(self) -> None:
        """Raise ValueError naming the first wrong field."""
        hints = typing.get_type_hints(TrainConfig)
        for f in dataclasses.fields(self):  # inf and nan pass every comparison below
            if hints[f.name] is float and not math.isfinite(getattr(self, f.name)):
                raise ValueError(f"{f.name}={getattr(self, f.name)}: must be a finite number")
        choices = {"loss": LOSSES, "mixed_precision": PRECISIONS, "tracker": TRACKERS, "compile": COMPILE_MODES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}: expected one of {', '.join(allowed)}")
        for name in ("z_dim", "ngf", "ndf", "batch_size", "ckpt_every", "keep", "log_every",
                     "sample_every", "num_samples", "r1_every", "fid_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be at least 1")
        for name in ("lr_g", "lr_d"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)}: must be positive")
        for name in ("beta1", "beta2", "ema_decay"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be in [0, 1)")
        if self.max_steps < 0 or self.max_kimg < 0 or self.r1_gamma < 0 or self.num_workers < 0:
            raise ValueError("max_steps, max_kimg, r1_gamma and num_workers must not be negative")
        if self.fid_every < 0:
            raise ValueError(f"fid_every={self.fid_every}: must not be negative (0 is off)")
        if self.fid_every and self.fid_samples < 2:
            raise ValueError(f"fid_samples={self.fid_samples}: must be at least 2")
        if self.compile != "off" and self.r1_gamma > 0:
            raise ValueError(f"compile={self.compile} cannot be combined with r1_gamma > 0: torch.compile does not "
                             "support R1's double backward")
        for aug in filter(None, self.diffaugment.split(",")):
            if aug not in AUGMENTS:
                raise ValueError(f"diffaugment={self.diffaugment!r}: unknown {aug!r}; "
                                 f"expected a comma list of {', '.join(AUGMENTS)}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# The seed notebooks' DCGAN (Radford et al.): BCE with 0.9 real labels, Adam 2e-4 (0.5, 0.999).
DCGAN = TrainConfig(preset="dcgan")

# The upgrades the best GAN codebases use, with these defaults:
# - hinge loss + spectral norm on D (SNGAN, BigGAN): stable without BatchNorm in D, so D's
#   output for one image no longer depends on the rest of its batch;
# - EMA of G, decay 0.999 (ProGAN, StyleGAN, BigGAN): the cheapest FID gain there is;
# - z_dim 128; R1 and DiffAugment off: hinge + SN is stable on its own, R1 costs a second
#   backward pass, and DiffAugment pays off only with little data (turn it on, e.g.
#   --diffaugment color,translation, for a few thousand images such as the CelebA sample).
STRONG = dataclasses.replace(DCGAN, preset="strong", loss="hinge", d_spectral_norm=True,
                             d_batchnorm=False, ema=True, z_dim=128)

# Tiny and quick on CPU: 32-wide networks, batch 64, short intervals.
DEMO = dataclasses.replace(DCGAN, preset="demo", z_dim=64, ngf=32, ndf=32, batch_size=64,
                           max_steps=1500, ckpt_every=500, log_every=25, sample_every=250,
                           shuffle_buffer=1000)

PRESETS = {"dcgan": DCGAN, "strong": STRONG, "demo": DEMO}


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _comments() -> dict[str, str]:
    """Field name -> its trailing comment in this file's TrainConfig, used as --help text."""
    import inspect

    helps = {}
    for line in inspect.getsource(TrainConfig).splitlines():
        name, sep, rest = line.strip().partition(":")
        if sep and "#" in rest and name.isidentifier():
            helps[name] = rest.split("#", 1)[1].strip()
    return helps


class OneLineErrors(argparse.ArgumentParser):
    """Bad flags and values get one line, not the whole usage of fifty flags."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """--preset plus one flag per config field (--max-steps, --lr-g, ...); all are validated."""
    parser = OneLineErrors(
        prog="facegan/train.py", description="Train a face GAN with Accelerate. Defaults shown are the "
        "dcgan preset's; --preset strong|demo changes some of them.", allow_abbrev=False)
    helps = _comments()
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        # default None: a flag overrides the preset only when given.
        default = getattr(DCGAN, f.name)
        shown = f" (default: {default!r})" if default not in ("", None) else ""
        kwargs = {"default": None, "help": helps.get(f.name, "").replace("%", "%%") + shown}
        if f.name == "preset":
            kwargs.update(choices=sorted(PRESETS), help="the preset the other flags override")
        elif kind is bool:  # `--cpu` alone means true, as in evaluate and sample; `--cpu false` too
            kwargs.update(type=_parse_bool, nargs="?", const=True, metavar="true|false")
        else:
            kwargs["type"] = kind
        if f.name == "loss":
            kwargs["choices"] = LOSSES
        elif f.name == "mixed_precision":
            kwargs["choices"] = PRECISIONS
        elif f.name == "tracker":
            kwargs["choices"] = TRACKERS
        elif f.name == "compile":
            kwargs["choices"] = COMPILE_MODES
        parser.add_argument(flag, **kwargs)
    parser.add_argument("--dry-run", action="store_true",
                        help="print the resolved config and exit without training")
    return parser


def config_from_args(argv: list[str] | None = None) -> tuple[TrainConfig, argparse.Namespace]:
    args = build_parser().parse_args(argv)
    base = PRESETS[args.preset or "dcgan"]
    overrides = {k: v for k, v in vars(args).items() if v is not None and k != "dry_run"}
    cfg = dataclasses.replace(base, **overrides)
    if not cfg.data or not cfg.run_dir:
        raise ValueError("--data SHARDS_DIR and --run-dir RUN_DIR are required")
    cfg.validate()
    return cfg, args


def load_config(path: str | Path) -> TrainConfig:
    """A config saved by a run (config.json); an unknown key is an error naming it."""
    data = json.loads(Path(path).read_text())
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{path}: unknown config key {unknown[0]!r}")
    cfg = TrainConfig(**data)
    cfg.validate()
    return cfg
