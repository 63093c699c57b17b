"""The one typed training config, its presets, and the command line built from its fields."""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import typing
from dataclasses import dataclass

from facegan import networks, trackers
from facegan.conditioning import parse_condition
from facegan.losses import LOSSES, build_loss
from facegan.schedules import SCHEDULES
from facegan.shardset import load_shardset

PRECISIONS = ("auto", "no", "bf16", "fp16")
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
    condition: str = ""  # comma list of attributes from the shards' json to condition G and D on (projection D)
    shuffle_buffer: int = 2000  # samples held per worker for shuffling
    # Networks (facegan/networks/: --arch picks one; its own options are listed below --help's main flags)
    arch: str = "dcgan"  # registered architecture (facegan.networks.ARCHS)
    z_dim: int = 100  # latent size
    ngf: int = 64  # generator width at the last block
    ndf: int = 64  # discriminator width at the first block
    arch_options: dict = dataclasses.field(default_factory=dict)  # the arch's own options, set by their flags
    # Objective (facegan/losses.py)
    loss: str = "bce"  # bce (label-smoothed), nonsat, hinge, lsgan, wgan-gp (gradient penalty) or rpgan (R3GAN's)
    real_label: float = 0.9  # bce target for real images (one-sided label smoothing)
    d_steps: int = 1  # D (critic) steps per G step; wgan-gp uses 5
    gp_lambda: float = 10.0  # wgan-gp gradient penalty weight
    r1_gamma: float = 0.0  # R1 penalty weight (zero-centred, on real images); 0 is off
    r2_gamma: float = 0.0  # R2 penalty weight (zero-centred, on generated images); 0 is off
    reg_every: int = 16  # lazy R1/R2: apply every N D steps, scaled by N (1: every step)
    diffaugment: str = ""  # comma list of color,translation,cutout; empty is off
    ada: bool = False  # adaptive discriminator augmentation (StyleGAN2-ADA): p follows D's overfitting
    ada_target: float = 0.6  # ADA's target for r_t = E[sign(D(real))]
    ada_kimg: float = 100.0  # ADA: thousand images over which p can move from 0 to 1
    ada_interval: int = 4  # ADA: G steps between updates of p
    # Optimisation
    batch_size: int = 128  # per process and micro-batch; global batch = batch_size x accumulate x processes
    accumulate: int = 1  # micro-batches per optimizer step (gradient accumulation)
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    lr_schedule: str = "constant"  # constant, linear or cosine (to --lr-final at the end of training), for G and D
    lr_schedule_g: str = ""  # G's schedule when it differs from --lr-schedule
    lr_schedule_d: str = ""  # D's schedule when it differs from --lr-schedule
    lr_decay_kimg: float = 0.0  # linear/cosine: decay over the last this many kimg only (0: from the warm-up's end)
    lr_final: float = 0.0  # linear/cosine: the multiplier of the base lr they end at
    warmup_kimg: float = 0.0  # linear lr warm-up over this many thousand images, for G and D
    warmup_kimg_g: float = -1.0  # G's warm-up when it differs from --warmup-kimg (negative: the same)
    warmup_kimg_d: float = -1.0  # D's warm-up when it differs from --warmup-kimg (negative: the same)
    ema: bool = False  # keep an exponential moving average of G for sampling and FID
    ema_kimg: float = 10.0  # EMA half-life in thousand images
    ema_rampup: float = 0.05  # EMA ramp-up: half-life at most this fraction of the images seen (0: off)
    # Length and precision
    max_steps: int = 0  # stop after this many G steps (0: use max_kimg)
    max_kimg: float = 0.0  # or after this many thousand images across all ranks
    max_minutes: float = 0.0  # and stop cleanly (save, export, exit 0) after this many minutes of this start; 0 is off
    mixed_precision: str = "auto"  # auto (the launcher's, else bf16 on a GPU, else no), no, bf16 or fp16
    cpu: bool = False  # train on the CPU even where a GPU is present
    # Speed (none changes the maths of a step beyond float rounding; resume stays exact)
    channels_last: bool = True  # NHWC memory layout for G, D and the batches (faster convolutions)
    fused_adam: bool = True  # torch's fused Adam kernels (one kernel per optimizer step)
    deterministic: bool = False  # cuDNN deterministic algorithms: bitwise-exact resume on GPU (a little slower)
    compile: str = "off"  # torch.compile mode for G and D: off, default, reduce-overhead (CUDA graphs), max-autotune
    divergence_guard: bool = True  # stop (exit 1, nothing saved after the last healthy step) when losses go implausible
    divergence_steps: int = 100  # consecutive steps of implausible losses before the divergence guard stops the run
    # Checkpoints, logging, tracking
    ckpt_every: int = 1000  # steps between resumable checkpoints (and generator exports)
    keep: int = 3  # checkpoints kept; older ones are deleted
    resume: str = "auto"  # auto (latest complete checkpoint in run_dir, if any), none, or a path
    log_every: int = 50  # steps between metrics.jsonl lines / tracker scalars
    sample_every: int = 500  # steps between sample grids of the fixed latents
    num_samples: int = 64  # images in a sample grid
    tracker: str = "none"  # none, or a comma list of wandb, tensorboard (WANDB_MODE=offline works without network)
    wandb_project: str = "facegan"
    run_name: str = ""  # tracker run name (default: the run folder's name)
    wandb_artifacts: bool = False  # log the exported generator to W&B as a model artifact at every checkpoint
    # Metrics (facegan.metrics: torch-fidelity's InceptionV3 and VGG16), measured when eval_every > 0
    metrics: str = "fid"  # comma list of fid, kid, is, pr, measured every --eval-every steps
    eval_every: int = 0  # steps between measurements of --metrics; 0 is off
    eval_samples: int = 10000  # generated images per measurement (the real side is every packed sample)
    eval_batch_size: int = 100  # feature-extractor batch per process
    best_by: str = ""  # value generator-best follows: fid, kid, is, precision, recall (default: the first metric's)
    inception_weights: str = ""  # torch-fidelity InceptionV3 weights file (default: standard, downloaded)
    vgg16_weights: str = ""  # torchvision VGG16 weights file for pr (default: standard, downloaded)
    attr_classifier: str = ""  # attribute classifier for --metrics attr (python -m facegan.attributes train)
    eval_cache: str = ""  # folder for cached real-data features (default: ~/.cache/facegan/fid-stats)
    warm_start_g: str = ""  # exported generator (.safetensors) to start G from
    warm_start_d: str = ""  # exported discriminator (.safetensors) to start D from

    def validate(self) -> None:
        """Raise ValueError naming the first wrong field."""
        hints = typing.get_type_hints(TrainConfig)
        for f in dataclasses.fields(self):  # inf and nan pass every comparison below
            if hints[f.name] is float and not math.isfinite(getattr(self, f.name)):
                raise ValueError(f"{f.name}={getattr(self, f.name)}: must be a finite number")
        choices = {**CHOICES, "lr_schedule_g": ("", *SCHEDULES), "lr_schedule_d": ("", *SCHEDULES)}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}: expected one of {', '.join(map(repr, allowed))}")
        for name in ("z_dim", "ngf", "ndf", "batch_size", "accumulate", "d_steps", "ckpt_every", "keep",
                     "divergence_steps", "log_every", "sample_every", "num_samples", "reg_every", "eval_batch_size",
                     "ada_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be at least 1")
        for name in ("lr_g", "lr_d", "ema_kimg", "ada_kimg"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)}: must be positive")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be in [0, 1)")
        for name in ("max_steps", "max_kimg", "r1_gamma", "r2_gamma", "gp_lambda", "num_workers", "warmup_kimg",
                     "ema_rampup", "eval_every", "max_minutes", "lr_decay_kimg"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)}: must not be negative")
        if not (self.max_steps or self.max_kimg):
            for net in ("g", "d"):
                kind = self.schedule(net)[0]
                if kind != "constant":
                    name = f"lr_schedule_{net}" if getattr(self, f"lr_schedule_{net}") else "lr_schedule"
                    raise ValueError(f"{name}={kind} decays over the training length: set --max-kimg or "
                                     "--max-steps (--max-minutes alone has no length in images)")
        if (self.lr_decay_kimg or self.lr_final) and all(self.schedule(n)[0] == "constant" for n in ("g", "d")):
            raise ValueError(f"lr_decay_kimg={self.lr_decay_kimg:g}, lr_final={self.lr_final:g}: they shape a "
                             "linear or cosine --lr-schedule; the schedule is constant")
        if not 0 <= self.lr_final <= 1:
            raise ValueError(f"lr_final={self.lr_final:g}: must be in [0, 1] (a multiplier of the base lr)")
        if not -1 <= self.ada_target <= 1:
            raise ValueError(f"ada_target={self.ada_target}: must be in [-1, 1] (r_t is the mean sign of D's "
                             "outputs on real images)")
        if self.ada and self.diffaugment:
            raise ValueError(f"ada=true and diffaugment={self.diffaugment!r}: choose one augmentation scheme")
        trackers.parse_trackers(self.tracker)
        if self.eval_every and self.eval_samples < 2:
            raise ValueError(f"eval_samples={self.eval_samples}: must be at least 2")
        from facegan import metrics as metrics_registry  # not at import: it loads torch-fidelity

        names = metrics_registry.parse_metrics(self.metrics, "metrics")
        if self.best_by and self.best_by not in metrics_registry.directions(names):
            raise ValueError(f"best_by={self.best_by!r}: not a value of metrics={self.metrics!r} (they give: "
                             f"{', '.join(metrics_registry.directions(names))})")
        if "attr" in names and not self.condition:
            raise ValueError("metrics=attr scores a conditional generator: add --condition NAME,...")
        if "attr" in names and self.eval_every and not self.attr_classifier:
            raise ValueError("metrics=attr needs --attr-classifier FILE (python -m facegan.attributes train SHARDS "
                             "--out FILE)")
        second_order = [name for name, on in (("r1_gamma > 0", self.r1_gamma > 0), ("r2_gamma > 0", self.r2_gamma > 0),
                                             ("loss=wgan-gp", self.loss == "wgan-gp")) if on]
        if self.compile != "off" and second_order:
            raise ValueError(f"compile={self.compile} cannot be combined with {second_order[0]}: torch.compile does "
                             "not support a gradient penalty's double backward")
        for aug in filter(None, self.diffaugment.split(",")):
            if aug not in AUGMENTS:
                raise ValueError(f"diffaugment={self.diffaugment!r}: unknown {aug!r}; "
                                 f"expected a comma list of {', '.join(AUGMENTS)}")
        self.condition_names()  # a malformed --condition fails here, the shards are checked at the start
        d_spec = self.network_specs(networks.RESOLUTIONS[0])[1]  # an unknown arch option fails here
        if build_loss(self.loss).needs_no_batchnorm and networks.has_batchnorm(networks.build("discriminator", d_spec)):
            raise ValueError(f"loss={self.loss} cannot train a D with BatchNorm (its per-sample gradient penalty "
                             "needs per-sample outputs); turn it off (dcgan: --d-batchnorm false) or pick another loss")

    def network_specs(self, resolution: int, condition: dict[str, float] | None = None) -> tuple[dict, dict]:
        """G's and D's {arch, kwargs} at `resolution`, conditional on `condition` ({attribute:
        training frequency}) where given."""
        return networks.make_specs(self.arch, resolution, self.z_dim, self.ngf, self.ndf, self.arch_options, condition)

    def condition_names(self) -> list[str]:
        return parse_condition(self.condition)

    def schedule(self, net: str) -> tuple[str, float]:
        """(lr schedule, warm-up kimg) of net 'g' or 'd'."""
        kind = getattr(self, f"lr_schedule_{net}") or self.lr_schedule
        warmup = getattr(self, f"warmup_kimg_{net}")
        return kind, (warmup if warmup >= 0 else self.warmup_kimg)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# The seed notebooks' DCGAN (Radford et al.): BCE with 0.9 real labels, Adam 2e-4 (0.5, 0.999).
DCGAN = TrainConfig(preset="dcgan")

# The upgrades the best GAN codebases use, with these defaults:
# - hinge loss + spectral norm on D (SNGAN, BigGAN): stable without BatchNorm in D, so D's
#   output for one image no longer depends on the rest of its batch;
# - EMA of G (ProGAN, StyleGAN, BigGAN), the cheapest FID gain there is: half-life 10 kimg,
#   ramped up over the first images as StyleGAN2 does, so early grids are faces, not grey;
# - z_dim 128; R1 and DiffAugment off: hinge + SN is stable on its own, R1 costs a second
#   backward pass, and DiffAugment pays off only with little data (turn it on, e.g.
#   --diffaugment color,translation, for a few thousand images such as the CelebA sample).
STRONG = dataclasses.replace(DCGAN, preset="strong", loss="hinge", ema=True, z_dim=128,
                             arch_options={"d_spectral_norm": True, "d_batchnorm": False})

# Tiny and quick on CPU: 32-wide networks, batch 64, short intervals.
DEMO = dataclasses.replace(DCGAN, preset="demo", z_dim=64, ngf=32, ndf=32, batch_size=64,
                           max_steps=1500, ckpt_every=500, log_every=25, sample_every=250,
                           shuffle_buffer=1000)

# R3GAN's recipe (Huang et al. 2024) with StyleGAN2-ADA's augmentation: the r3gan networks (no
# normalisation, fix-up init, grouped inverted bottlenecks), the relativistic pairing loss with
# R1 and R2, Adam (0, 0.99), EMA of G, and ADA so that a few thousand faces do not make D
# memorise. The settings that depend on the image size are in MODERN_BY_RESOLUTION (README,
# "Recipes", says why each value): at 32 px, lr 1e-3 (the paper's 2e-4 let D pull ahead of the
# small networks) and lazy R1/R2 every 16 D steps (StyleGAN2's interval), measured on the CPU.
MODERN = dataclasses.replace(DCGAN, preset="modern", arch="r3gan", loss="rpgan", z_dim=64, beta1=0.0,
                             beta2=0.99, lr_g=2e-4, lr_d=2e-4, ema=True, ada=True, hflip=True)
MODERN_BY_RESOLUTION = {
    32: dict(ngf=16, ndf=16, batch_size=64, lr_g=1e-3, lr_d=1e-3, r1_gamma=0.05, r2_gamma=0.05, reg_every=16,
             ema_kimg=10.0, ada_kimg=20.0, arch_options={"g_blocks": 1, "d_blocks": 1}),
    64: dict(ngf=64, ndf=64, batch_size=128, r1_gamma=0.5, r2_gamma=0.5, reg_every=4, ema_kimg=20.0,
             ada_kimg=100.0),
    128: dict(ngf=32, ndf=32, batch_size=64, r1_gamma=2.0, r2_gamma=2.0, reg_every=4, ema_kimg=20.0,
              ada_kimg=100.0),
}

PRESETS = {"dcgan": DCGAN, "strong": STRONG, "demo": DEMO, "modern": MODERN}
BY_RESOLUTION = {"modern": MODERN_BY_RESOLUTION}  # presets whose values depend on the image size


def preset_config(name: str, resolution: int | None = None) -> TrainConfig:
    """The preset `name`, with its values for `resolution` where it has some (the shards' size)."""
    if name not in PRESETS:
        raise ValueError(f"preset {name!r}: unknown; expected one of {', '.join(PRESETS)}")
    table = BY_RESOLUTION.get(name)
    if table is None:
        return PRESETS[name]
    if resolution not in table:
        raise ValueError(f"preset {name}: no settings for {resolution} px; it has {', '.join(map(str, table))} px")
    return dataclasses.replace(PRESETS[name], **table[resolution])


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class OneLineErrors(argparse.ArgumentParser):
    """Bad flags and values get one line, not the whole usage of fifty flags."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _flag_kwargs(kind: type, help_text: str, default) -> dict:
    """argparse settings of a typed field; default None, so a flag overrides the preset only when given."""
    shown = f" (default: {default!r})" if default not in ("", None) else ""
    kwargs = {"default": None, "help": help_text.replace("%", "%%") + shown}
    if kind is bool:  # `--cpu` alone means true, as in evaluate and sample; `--cpu false` too
        kwargs.update(type=_parse_bool, nargs="?", const=True, metavar="true|false")
    else:
        kwargs["type"] = kind
    return kwargs


CHOICES = {"loss": LOSSES, "mixed_precision": PRECISIONS, "compile": COMPILE_MODES,
           "lr_schedule": SCHEDULES, "lr_schedule_g": SCHEDULES, "lr_schedule_d": SCHEDULES,
           "arch": tuple(networks.ARCHS)}


def build_parser() -> argparse.ArgumentParser:
    """--preset plus one flag per config field (--max-steps, --lr-g, ...) and per architecture
    option (--d-batchnorm, ...); all are validated."""
    parser = OneLineErrors(
        prog="facegan/train.py", description="Train a face GAN with Accelerate. Defaults shown are the "
        "dcgan preset's; --preset strong|modern|demo changes some of them.", allow_abbrev=False)
    helps = networks.field_comments(TrainConfig)
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name == "arch_options":
            continue
        kwargs = _flag_kwargs(hints[f.name], helps.get(f.name, ""), getattr(DCGAN, f.name))
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
        kwargs = _flag_kwargs(kind, f"[{', '.join(archs)}] {help_text}", default)
        kwargs.setdefault("metavar", name.upper())
        group.add_argument("--" + name.replace("_", "-"), dest=f"option:{name}", **kwargs)
    parser.add_argument("--dry-run", action="store_true",
                        help="print the resolved config and exit without training")
    for old, new in DEPRECATED.items():  # still taken, with a message; not in --help
        parser.add_argument("--" + old.replace("_", "-"), dest=f"deprecated:{old}", default=None,
                            type=hints[new], help=argparse.SUPPRESS)
    return parser


# Flags renamed when FID stopped being the only metric: old field -> new field.
DEPRECATED = {"fid_every": "eval_every", "fid_samples": "eval_samples", "fid_batch_size": "eval_batch_size",
              "fid_cache": "eval_cache"}


def _renamed(given: dict, warn) -> dict:
    """The deprecated flags given, under their new names, each with a message; both names at once
    is an error."""
    out = {}
    for key, value in given.items():
        if key.startswith("deprecated:"):
            old = key.split(":", 1)[1]
            new = DEPRECATED[old]
            flag, new_flag = "--" + old.replace("_", "-"), "--" + new.replace("_", "-")
            if new in given:
                raise ValueError(f"{flag} and {new_flag} both given: {flag} is the old name of {new_flag}; keep one")
            warn(f"facegan: {flag} is deprecated; use {new_flag} (it covers every metric in --metrics)")
            out[new] = value
        else:
            out[key] = value
    return out


def config_from_args(argv: list[str] | None = None, resolution: int | None = None
                     ) -> tuple[TrainConfig, argparse.Namespace]:
    """The config that train.py's flags `argv` give. A preset whose values depend on the image size
    reads the size from --data's manifest, unless `resolution` gives it (benchmarks without shards)."""
    args = build_parser().parse_args(argv)
    name = args.preset or "dcgan"
    if name in BY_RESOLUTION and resolution is None:  # read the image size from the shards' manifest
        if not args.data:
            raise ValueError(f"--preset {name} needs --data SHARDS_DIR (its settings depend on the image size)")
        resolution = load_shardset(args.data).size
    base = preset_config(name, resolution)
    given = {k: v for k, v in vars(args).items() if v is not None and k != "dry_run"}
    given = _renamed(given, lambda message: print(message, file=sys.stderr))
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
    cfg.validate()
    return cfg, args
