"""train(cfg): the GAN training loop. Devices, DDP, mixed precision, checkpoints, signals and
tracking live here and in the modules it drives (gan_step, run_state, upkeep); networks, losses
and data know nothing of them.

The loop reads top to bottom: set up; then, until the image budget is spent, one step
(gan_step.GANStep) and one upkeep phase (Upkeep.tick: log, samples, FID, checkpoint, stop)."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import broadcast_object_list, set_seed

from facegan import files
from facegan.data import attributes as conditioning
from facegan.data import balance as balancing
from facegan.data.balance import Balance
from facegan.data.decode import to_float
from facegan.data.samples import TrainSpec
from facegan.data.shardset import ShardSet, load_shardset, shared_shards_warning
from facegan.data.stream import train_loader
from facegan.distribution import Dist
from facegan.runtime import make_accelerator, process_warnings, resolve_precision
from facegan.training import checkpoint as ckpt
from facegan.training.ada import AdaController
from facegan.training.config import TrainConfig
from facegan.training.evaluation import EvalSettings
from facegan.training.health import Diverged, Health, NonFiniteLoss
from facegan.training.lock import RunLock
from facegan.training.losses import GANLoss, build_loss
from facegan.training.models import ModelOptions, Models, build_models
from facegan.training.path_length import PathLength
from facegan.training.schedules import Schedule
from facegan.training.state import UNBOUNDED, RunSettings, RunState, load_run, new_state, save_run, trim_metrics
from facegan.training.step import GANStep, StepOptions
from facegan.training.stop import STOP_FILE
from facegan.training.upkeep import Upkeep, UpkeepSettings
from facegan.watch import trackers
from facegan.watch.trackers import Trackers

__all__ = ["train", "NonFiniteLoss", "Diverged", "STOP_FILE"]


# Images per rank in one stream segment. Segments start at this fixed cadence, whatever the
# checkpoints, so a run's data order does not depend on when it was saved or stopped; a resume
# reads past what its segment already delivered (shard bytes, without decoding).
SEGMENT_IMAGES = 100_000


class RealBatches:
    """Real images for the step, float [B,3,H,W] in [-1,1] on the device. The stream is cut into
    segments of SEGMENT_IMAGES per rank; `position()` (segment, batches taken from it) is saved in
    every checkpoint, and `open()` of a saved position continues the stream exactly. The loader is
    not prepared by Accelerate (it would dispatch every batch from rank 0); it splits ranks itself.
    Batches come uint8 in pinned memory and become float on the device (bench/RESULTS.md: a thread
    doing this ahead of the step was slower)."""

    def __init__(self, cfg: TrainConfig, acc: Accelerator, shardset: ShardSet, balance: Balance | None = None):
        self.cfg, self.acc, self.shardset, self.stream = cfg, acc, shardset, None
        self.balance = balance  # --balance: how often each attribute cell is shown
        self.segment, self.taken = 0, 0
        self.segment_batches = max(1, SEGMENT_IMAGES // cfg.batch_size)

    def open(self, segment: int, taken: int = 0) -> None:
        cfg, acc = self.cfg, self.acc
        self.segment, self.taken = segment, taken
        spec = TrainSpec(cfg.batch_size, attributes=cfg.condition or None, seed=cfg.seed, segment=segment, skip=taken,
                         hflip=cfg.hflip, shuffle_buffer=cfg.shuffle_buffer, balance=self.balance)
        self.stream = iter(train_loader(self.shardset, spec, dist=Dist(acc.process_index, acc.num_processes),
                                        num_workers=cfg.num_workers, uint8=True,
                                        pin_memory=acc.device.type == "cuda"))

    def position(self) -> tuple[int, int]:
        """(segment, batches taken from it): what a checkpoint saves and open() takes back."""
        return self.segment, self.taken

    def close(self) -> None:
        self.stream = None  # shuts its workers down

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Images; (images, attributes [B,K] 0/1) when the run is conditional."""
        if self.taken == self.segment_batches:
            self.close()
            self.open(self.segment + 1)
        batch = next(self.stream)
        self.taken += 1
        images = to_float(batch["image"].to(self.acc.device, non_blocking=True))
        return (images, batch["attrs"].to(self.acc.device, non_blocking=True)) if "attrs" in batch else images


def section(cls: type, cfg: TrainConfig, **given):
    """A component's section of the config (a dataclass defined beside it), filled from the
    TrainConfig fields of the same names (`given`: its fields that are not flags): the flags keep
    their names, the component sees only its own."""
    return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls) if f.name not in given}, **given)


# The components, each given the parts of the config it uses (as EDM's training loop is given
# its *_kwargs): this is the one place that reads TrainConfig for them.

def make_models(cfg: TrainConfig, acc: Accelerator, resolution: int,
                condition: dict[str, float] | None = None) -> Models:
    """G, D, their optimizers and EMA-G at `resolution`, conditional on `condition` ({attribute:
    training frequency}) where given."""
    g_spec, d_spec = cfg.network_specs(resolution, condition)
    return build_models(acc, g_spec, d_spec, ModelOptions(
        lr_g=cfg.lr_g, lr_d=cfg.lr_d, betas=(cfg.beta1, cfg.beta2), fused_adam=cfg.fused_adam,
        channels_last=cfg.channels_last, ema=cfg.ema, compile=cfg.compile, warm_start_g=cfg.warm_start_g,
        warm_start_d=cfg.warm_start_d, seed=cfg.seed))


def make_loss(cfg: TrainConfig) -> GANLoss:
    return build_loss(cfg.loss, real_label=cfg.real_label, r1_gamma=cfg.r1_gamma, r2_gamma=cfg.r2_gamma,
                      reg_every=cfg.reg_every, gp_lambda=cfg.gp_lambda)


def make_step(cfg: TrainConfig, acc: Accelerator, models: Models, loss: GANLoss) -> GANStep:
    """The step, with ADA's controller and the health watch (the divergence guard) it updates."""
    schedules = {net: Schedule(base, *cfg.schedule(net), decay_kimg=cfg.lr_decay_kimg, final=cfg.lr_final)
                 for net, base in (("g", cfg.lr_g), ("d", cfg.lr_d))}
    options = StepOptions(batch_size=cfg.batch_size, schedules=schedules, accumulate=cfg.accumulate,
                          d_steps=cfg.d_steps, diffaugment=cfg.diffaugment, ema_kimg=cfg.ema_kimg,
                          ema_rampup=cfg.ema_rampup, cuda_graphs=cfg.compile == "reduce-overhead")
    ada = AdaController(cfg.ada_target, cfg.ada_kimg, cfg.ada_interval) if cfg.ada else None
    health = Health(acc.device, loss.plausible_loss if cfg.divergence_guard else 0.0, cfg.divergence_steps)
    path_length = None
    if cfg.pl_weight:
        if acc.unwrap_model(models.g).space != "w":
            raise ValueError(f"pl_weight={cfg.pl_weight:g}: path-length regularisation needs a style generator "
                             f"(--arch stylegan2), not arch={cfg.arch}")
        path_length = PathLength(cfg.pl_weight, cfg.pl_every)
    return GANStep(acc, models, loss, options, ada, health, path_length)


def _claim_run(acc: Accelerator, cfg: TrainConfig, lock: RunLock) -> tuple[Path | None, list[str]]:
    """The main process locks the run folder and picks the checkpoint to resume from (the newest
    intact one, hashing and loading its files once), for every rank; an error there (the folder
    is busy, a damaged --resume PATH) stops every rank with the same line."""
    path, notes, error = None, [], None
    if acc.is_main_process:
        try:
            notes = [lock.acquire()]
            path, more = ckpt.resolve_resume(cfg.run_dir, cfg.resume)
            notes += more
        except ValueError as e:
            error = str(e)
    if acc.num_processes > 1:
        box = [path, error]
        broadcast_object_list(box)
        path, error = box
    if error:
        raise ValueError(error)
    return path, notes


def _announce(acc: Accelerator, cfg: TrainConfig, state: RunState, shardset: ShardSet, notes: list[str],
              resumed_from: Path | None, precision: str) -> None:
    """Prepare the run folder and say what this start will do (main process)."""
    if not acc.is_main_process:
        return
    run_dir, world = Path(cfg.run_dir), acc.num_processes
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1) + "\n")
    trim_metrics(run_dir / "metrics.jsonl", state.step)
    notes = notes + [ckpt.set_aside_newer(run_dir, state.step)]  # another timeline is never resumed
    (run_dir / STOP_FILE).unlink(missing_ok=True)  # the request that ended the last start
    readers = world * max(cfg.num_workers, 1)  # 0 workers: the process reads itself
    notes = notes + [shared_shards_warning(len(shardset.shards), readers, shardset.count)]
    for note in filter(None, notes + process_warnings(acc)):
        print(f"facegan: {note}", file=sys.stderr)
    where = f"resuming from {resumed_from}" if resumed_from else "starting"
    global_batch = world * cfg.accumulate * cfg.batch_size
    until = [f"{state.total_nimg / 1000:g} kimg"] if state.total_nimg < UNBOUNDED else []
    if cfg.lr_decay_minutes and state.anneal is None:
        until += [f"{cfg.max_minutes:g} minutes of training ({state.train_seconds / 60:.1f} spent), the lr annealed "
                  f"over the last {cfg.lr_decay_minutes:g}"]
    elif cfg.max_minutes and state.anneal is None:
        until += [f"{cfg.max_minutes:g} minutes of this start"]
    print(f"facegan: {where} at {state.nimg / 1000:g} kimg; {world} process(es) x {cfg.accumulate} "
          f"micro-batch(es) x batch {cfg.batch_size} = global batch {global_batch}; until "
          f"{' or '.join(until)}; {shardset.count} images at {shardset.size} px; "
          f"{cfg.arch} {cfg.loss}; mixed precision {precision}", file=sys.stderr, flush=True)


def plan_balance(cfg: TrainConfig, acc: Accelerator, shardset: ShardSet) -> tuple[Balance | None, list[str]]:
    """--balance: every rank counts the attribute cells (the same on each: no rank waits on
    another); bad names and empty cells fail here, before any network is built. Returns the
    balance and its warnings (heavy repetition)."""
    if not cfg.balance:
        return None, []
    balance = balancing.plan(shardset, cfg.balance, balancing.parse_targets(cfg.balance_to, cfg.balance),
                             progress=acc.is_main_process and sys.stderr.isatty())
    return balance, balance.check()


def announce_balance(acc: Accelerator, cfg: TrainConfig, balance: Balance, warnings: list[str]) -> None:
    """The main process says what the stream will show and keeps it in RUN/balance.json."""
    if acc.is_main_process:
        for line in [balance.describe(), *(f"warning: {w}" for w in warnings)]:
            print(f"facegan: {line}", file=sys.stderr, flush=True)
        files.write_json_atomic(Path(cfg.run_dir) / "balance.json", balance.to_json())


@dataclasses.dataclass(frozen=True)
class Hooks:
    """What a caller (a test, a notebook) may plug into a run, instead of patching its internals."""

    after_step: Callable[[RunState], None] | None = None  # every rank, after each optimiser step
    now: Callable[[], float] = time.monotonic  # the clock of --max-minutes and the anneal's plan, in seconds


def train(cfg: TrainConfig, hooks: Hooks | None = None) -> Path:
    """Train until the image budget is spent (or a stop signal); return the exported generator's path."""
    hooks = hooks or Hooks()
    cfg.validate()
    precision, precision_source = resolve_precision(cfg.mixed_precision, cfg.cpu)
    cfg = dataclasses.replace(cfg, mixed_precision=precision)
    acc = make_accelerator(cpu=cfg.cpu, mixed_precision=precision, deterministic=cfg.deterministic,
                           trackers=trackers.accelerate_trackers(cfg.tracker), project_dir=cfg.run_dir,
                           logging_dir=str(Path(cfg.run_dir) / trackers.TENSORBOARD_DIR))
    run_trackers = Trackers(acc, cfg.tracker, Path(cfg.run_dir))
    tracking = False  # a tracker whose init failed cannot be finished
    lock = RunLock(cfg.run_dir)
    try:
        # Data, networks, loss, state.
        shardset = load_shardset(cfg.data)
        condition = conditioning.check_names(cfg.condition, shardset) if cfg.condition else None
        balance, balance_warnings = plan_balance(cfg, acc, shardset)
        models = make_models(cfg, acc, shardset.size, condition)
        loss = make_loss(cfg)
        loss.check_discriminator(models.unwrapped()[1])
        gan_step = make_step(cfg, acc, models, loss)
        resume_from, notes = _claim_run(acc, cfg, lock)
        run = section(RunSettings, cfg, config=cfg.to_dict())  # what saving and resuming read
        if resume_from is not None:
            state, more = load_run(resume_from, acc, models, run, shardset.size, gan_step.step_nimg(), gan_step.ada)
            notes += more  # (load_run restored every rank's RNG states and ADA's controller too)
        else:
            state = new_state(run, gan_step.step_nimg())
            set_seed(cfg.seed * acc.num_processes + acc.process_index)  # other z and augmentations per rank
        _announce(acc, cfg, state, shardset, notes, resume_from, f"{precision} ({precision_source})")
        if balance is not None:
            announce_balance(acc, cfg, balance, balance_warnings)
        run_trackers.start(cfg.wandb_project, cfg.run_name or Path(cfg.run_dir).name, cfg.to_dict())
        tracking = True
        data = RealBatches(cfg, acc, shardset, balance)
        upkeep = Upkeep(section(UpkeepSettings, cfg), section(EvalSettings, cfg), acc, models, gan_step, state, data,
                        resumed=resume_from is not None, tracking=run_trackers, now=hooks.now,
                        save=lambda: save_run(Path(cfg.run_dir), acc, models, state, run, shardset.size, gan_step.ada))
        acc.wait_for_everyone()  # no rank looks for the stop file before the main process removed it

        # Train.
        data.open(state.segment, state.segment_batches)  # (older checkpoints: 0, a new segment)
        try:
            while state.nimg < state.total_nimg:
                gan_step(data, state)
                if hooks.after_step is not None:
                    hooks.after_step(state)
                if upkeep.tick():
                    break
            else:
                upkeep.finish()
        finally:
            data.close()
            upkeep.close()
    finally:
        lock.release()
        if tracking:
            run_trackers.finish()
        # Accelerate keeps its state per process: reset it so another train() in this process
        # (tests, notebooks) may choose another mixed precision.
        AcceleratorState._reset_state()
    if acc.is_main_process:
        print(f"facegan: step {state.step}: generator exported to {cfg.run_dir}/generator.safetensors, "
              f"samples in {cfg.run_dir}/samples, metrics in {cfg.run_dir}/metrics.jsonl", file=sys.stderr)
    return Path(cfg.run_dir) / "generator.safetensors"
