"""The one typed training config: a field per setting, each with a one-line comment that becomes
its --help text (facegan/train.py builds the parser from them). List-valued fields are tuples,
parsed once where they come in (the command line, or a str split on commas for Python callers);
validate() checks the config's own values. Rules that involve a component are checked where the
component is built (a loss refuses a D it cannot train, an arch its unknown options)."""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass

from facegan import networks
from facegan.data.attributes import parse_condition
from facegan.data.balance import parse_targets
from facegan.metrics import registry
from facegan.training.augment import parse_policy
from facegan.training.losses import LOSSES
from facegan.training.schedules import SCHEDULES
from facegan.watch.trackers import parse_trackers

PRECISIONS = ("auto", "no", "bf16", "fp16")
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
NAMES = tuple[str, ...]  # the type of list-valued fields


class ConfigError(ValueError):
    """A config value that is wrong on its own: one line naming the field."""


@dataclass
class TrainConfig:
    # Data and run
    data: str = ""  # packed shard folder (python -m facegan.pack)
    run_dir: str = ""  # where config, metrics, samples, checkpoints and exports go
    preset: str = "dcgan"  # the preset these values started from
    seed: int = 0  # base seed; each rank draws from seed * world + rank
    num_workers: int = 2  # DataLoader workers per process
    hflip: bool = True  # mirror half the faces
    condition: NAMES = ()  # comma list of attributes from the shards' json to condition G and D on (projection D)
    balance: NAMES = ()  # comma list of attributes whose every combination the stream shows equally often
    balance_to: str = ""  # other target shares for --balance's attributes, e.g. Male=0.5,Young=0.3 (default 0.5)
    shuffle_buffer: int = 2000  # samples held per worker for shuffling
    # Networks (facegan/networks/: --arch picks one; its own options are listed below --help's main flags)
    arch: str = "dcgan"  # registered architecture (facegan.networks.ARCHS)
    z_dim: int = 100  # latent size
    ngf: int = 64  # generator width at the last block
    ndf: int = 64  # discriminator width at the first block
    arch_options: dict = dataclasses.field(default_factory=dict)  # the arch's own options, set by their flags
    # Objective (facegan/training/losses.py)
    loss: str = "bce"  # bce (label-smoothed), nonsat, hinge, lsgan, wgan-gp (gradient penalty) or rpgan (R3GAN's)
    real_label: float = 0.9  # bce target for real images (one-sided label smoothing)
    d_steps: int = 1  # D (critic) steps per G step; wgan-gp uses 5
    gp_lambda: float = 10.0  # wgan-gp gradient penalty weight
    r1_gamma: float = 0.0  # R1 penalty weight (zero-centred, on real images); 0 is off
    r2_gamma: float = 0.0  # R2 penalty weight (zero-centred, on generated images); 0 is off
    reg_every: int = 16  # lazy R1/R2: apply every N D steps, scaled by N (1: every step)
    pl_weight: float = 0.0  # path-length regularisation of a style G (stylegan2; StyleGAN2's 2); 0 is off
    pl_every: int = 4  # lazy path-length regularisation: every N G steps, weighted N times
    diffaugment: NAMES = ()  # comma list of color, translation, cutout (DiffAugment); empty is off
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
    lr_decay_minutes: float = 0.0  # linear/cosine: decay over the last this many minutes of --max-minutes (budget.py)
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
    tracker: NAMES = ()  # none, or a comma list of wandb, tensorboard (WANDB_MODE=offline works without network)
    wandb_project: str = "facegan"
    run_name: str = ""  # tracker run name (default: the run folder's name)
    wandb_artifacts: bool = False  # log the exported generator to W&B as a model artifact at every checkpoint
    # Metrics (facegan.metrics: torch-fidelity's InceptionV3 and VGG16), measured when eval_every > 0
    metrics: NAMES = registry.DEFAULT  # comma list of fid, kid, is, pr, attr, measured every --eval-every steps
    eval_every: int = 0  # steps between measurements of --metrics; 0 is off
    eval_samples: int = 10000  # generated images per measurement (the real side is every packed sample)
    eval_batch_size: int = 100  # feature-extractor batch per process
    best_by: str = ""  # value generator-best follows: fid, kid, is, precision, recall (default: the first metric's)
    inception_weights: str = ""  # torch-fidelity InceptionV3 weights file (default: standard, downloaded)
    vgg16_weights: str = ""  # torchvision VGG16 weights file for pr (default: standard, downloaded)
    dinov2_weights: str = ""  # Meta's DINOv2 weights file for fd_dinov2, pr_dinov2 (default: hub cache, downloaded)
    dinov2_model: str = "dinov2-vit-l-14"  # DINOv2 of fd_dinov2, pr_dinov2 (dinov2-vit-b-14: about 4x cheaper)
    attr_classifier: str = ""  # attribute classifier for --metrics attr (python -m facegan.attributes train)
    eval_cache: str = ""  # folder for cached real-data features (default: ~/.cache/facegan/fid-stats)
    live_report: bool = True  # write RUN/report/ at the end of the run and at every evaluation (--eval-every)
    warm_start_g: str = ""  # exported generator (.safetensors) to start G from
    warm_start_d: str = ""  # exported discriminator (.safetensors) to start D from

    def __post_init__(self) -> None:
        """A str given for a list-valued field (Python callers) becomes its tuple of names."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "NAMES" and not isinstance(value, tuple):
                names = value.split(",") if isinstance(value, str) else value
                object.__setattr__(self, f.name, tuple(n.strip() for n in names if n.strip()))

    def validate(self) -> TrainConfig:
        """Raise ConfigError naming the first wrong field; return the config."""
        try:
            self._check()
        except ValueError as e:
            raise ConfigError(str(e)) from None
        return self

    def _check(self) -> None:
        hints = typing.get_type_hints(TrainConfig)
        for f in dataclasses.fields(self):  # inf and nan pass every comparison below
            if hints[f.name] is float and not math.isfinite(getattr(self, f.name)):
                raise ValueError(f"{f.name}={getattr(self, f.name)}: must be a finite number")
        choices = {**CHOICES, "lr_schedule_g": ("", *SCHEDULES), "lr_schedule_d": ("", *SCHEDULES)}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}: expected one of {', '.join(map(repr, allowed))}")
        if not isinstance(self.arch_options, dict):
            raise ValueError(f"arch_options={self.arch_options!r}: expected a dict of the arch's options")
        networks.check_options(self.arch, self.arch_options, "arch_options")
        for name in ("z_dim", "ngf", "ndf", "batch_size", "accumulate", "d_steps", "ckpt_every", "keep",
                     "divergence_steps", "pl_every", "log_every", "sample_every", "num_samples", "reg_every",
                     "eval_batch_size", "ada_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be at least 1")
        for name in ("lr_g", "lr_d", "ema_kimg", "ada_kimg"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)}: must be positive")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be in [0, 1)")
        for name in ("max_steps", "max_kimg", "r1_gamma", "r2_gamma", "gp_lambda", "pl_weight", "num_workers",
                     "warmup_kimg", "ema_rampup", "eval_every", "max_minutes", "lr_decay_kimg", "lr_decay_minutes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)}: must not be negative")
        if self.lr_decay_minutes:
            self._check_time_anneal()
        elif not (self.max_steps or self.max_kimg):
            for net in ("g", "d"):
                kind = self.schedule(net)[0]
                if kind != "constant":
                    name = f"lr_schedule_{net}" if getattr(self, f"lr_schedule_{net}") else "lr_schedule"
                    raise ValueError(f"{name}={kind} decays over the training length: set --max-kimg or "
                                     "--max-steps (--max-minutes alone has no length in images)")
        constant = all(self.schedule(n)[0] == "constant" for n in ("g", "d"))
        if (self.lr_decay_kimg or self.lr_decay_minutes or self.lr_final) and constant:
            raise ValueError(f"lr_decay_kimg={self.lr_decay_kimg:g}, lr_decay_minutes={self.lr_decay_minutes:g}, "
                             f"lr_final={self.lr_final:g}: they shape a "
                             "linear or cosine --lr-schedule; the schedule is constant")
        if not 0 <= self.lr_final <= 1:
            raise ValueError(f"lr_final={self.lr_final:g}: must be in [0, 1] (a multiplier of the base lr)")
        if not -1 <= self.ada_target <= 1:
            raise ValueError(f"ada_target={self.ada_target}: must be in [-1, 1] (r_t is the mean sign of D's "
                             "outputs on real images)")
        if self.ada and self.diffaugment:
            raise ValueError(f"ada=true and diffaugment={','.join(self.diffaugment)}: choose one augmentation scheme")
        parse_policy(self.diffaugment, "diffaugment")
        parse_trackers(self.tracker, "tracker")
        parse_condition(self.condition, "condition")
        balance = parse_condition(self.balance, "balance")
        parse_targets(self.balance_to, balance, "balance_to")
        if self.eval_every and self.eval_samples < 2:
            raise ValueError(f"eval_samples={self.eval_samples}: must be at least 2")
        names = registry.parse_metrics(self.metrics, "metrics")
        if self.dinov2_model not in registry.DINOV2_MODELS:
            raise ValueError(f"dinov2_model={self.dinov2_model!r}: unknown; choose from "
                             f"{', '.join(registry.DINOV2_MODELS)}")
        rankable = [k for k in registry.directions(names) if registry.ranked(k)]
        if self.best_by and self.best_by not in rankable:
            raise ValueError(f"best_by={self.best_by!r}: not a value of metrics={','.join(names)} to rank by (they "
                             f"give: {', '.join(rankable)})")
        if "attr" in names and not self.condition and not self.balance:
            raise ValueError("metrics=attr scores a conditional generator or a balanced stream's: add --condition "
                             "NAME,... or --balance NAME,...")
        if "attr" in names and self.eval_every and not self.attr_classifier:
            raise ValueError("metrics=attr needs --attr-classifier FILE (python -m facegan.attributes train SHARDS "
                             "--out FILE)")
        second_order = [name for name, on in (("r1_gamma > 0", self.r1_gamma > 0), ("r2_gamma > 0", self.r2_gamma > 0),
                                             ("loss=wgan-gp", self.loss == "wgan-gp"),
                                             ("pl_weight > 0", self.pl_weight > 0)) if on]
        if self.compile != "off" and second_order:
            raise ValueError(f"compile={self.compile} cannot be combined with {second_order[0]}: torch.compile does "
                             "not support a gradient penalty's double backward")

    def _check_time_anneal(self) -> None:
        """--lr-decay-minutes plans the anneal against --max-minutes, and against nothing else."""
        m = self.lr_decay_minutes
        if not self.max_minutes > m:
            raise ValueError(f"lr_decay_minutes={m:g}: the anneal takes the last minutes of --max-minutes, which must "
                             f"be longer (max_minutes={self.max_minutes:g})")
        for name in ("max_steps", "max_kimg", "lr_decay_kimg"):
            if getattr(self, name):
                raise ValueError(f"lr_decay_minutes={m:g} and {name}={getattr(self, name):g}: a time-budgeted anneal "
                                 "ends the run where its plan says; choose one length")

    def network_specs(self, resolution: int, condition: dict[str, float] | None = None) -> tuple[dict, dict]:
        """G's and D's {arch, kwargs} at `resolution`, conditional on `condition` ({attribute:
        training frequency}) where given."""
        return networks.make_specs(self.arch, resolution, self.z_dim, self.ngf, self.ndf, self.arch_options, condition)

    def schedule(self, net: str) -> tuple[str, float]:
        """(lr schedule, warm-up kimg) of net 'g' or 'd'."""
        kind = getattr(self, f"lr_schedule_{net}") or self.lr_schedule
        warmup = getattr(self, f"warmup_kimg_{net}")
        return kind, (warmup if warmup >= 0 else self.warmup_kimg)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


CHOICES = {"loss": LOSSES, "mixed_precision": PRECISIONS, "compile": COMPILE_MODES,
           "lr_schedule": SCHEDULES, "lr_schedule_g": SCHEDULES, "lr_schedule_d": SCHEDULES,
           "arch": tuple(networks.ARCHS)}


