"""The run's state and its one home: RunState (counters, the stream's position, measurements and
ADA's controller state), and saving and restoring all that is resumable with it: networks,
optimizers, RNGs (Accelerate's save_state) and EMA-G. Every rank takes part in a save or a load;
the files are checkpoint.py's. Also the trim of metrics.jsonl that a resume needs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object, set_seed

from facegan import files
from facegan.cli import describe_error
from facegan.networks import exports
from facegan.training import checkpoint as ckpt
from facegan.training.ada import AdaController
from facegan.training.models import Models

UNBOUNDED = 2**62  # total_nimg of a run that only --max-minutes ends


@dataclasses.dataclass(frozen=True)
class AnnealPlan:
    """--lr-decay-minutes' plan, made once (budget.py): from `start_nimg` (at G step `step`) the lr
    decays to its floor at `end_nimg`, where the run ends."""

    step: int
    start_nimg: int
    end_nimg: int

    @property
    def decay_kimg(self) -> float:
        return (self.end_nimg - self.start_nimg) / 1000


@dataclasses.dataclass
class RunState:
    """What a run has done; saved in every checkpoint's state file, field by field."""

    step: int = 0  # G steps taken
    nimg: int = 0  # real images shown to D, all ranks together (kimg, schedules and EMA follow it)
    total_nimg: int = 0  # where training stops, in images (UNBOUNDED: only --max-minutes ends it)
    length: dict = dataclasses.field(default_factory=dict)  # the --max-steps/--max-kimg total_nimg came from
    segment: int = 0  # the data stream's segment ...
    segment_batches: int = 0  # ... and the batches this rank has taken from it
    eval: dict | None = None  # the latest measurement: {"step", value: ...}
    best: dict | None = None  # generator-best's: {"by", "key", "step", "value"}
    bests: dict = dataclasses.field(default_factory=dict)  # every measured value's best: {key: {"value", "step"}}
    ada: dict | None = None  # ADA's controller (p, r_t and the sums pending since its last update)
    train_seconds: float = 0.0  # training time over every start of the run (budget.py)
    anneal: AnnealPlan | None = None  # --lr-decay-minutes' plan, once made

    def to_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, saved: dict) -> RunState:
        """The fields a state file has (an older one may lack some: they keep their defaults)."""
        state = cls(**{f.name: saved[f.name] for f in dataclasses.fields(cls) if f.name in saved})
        if isinstance(state.anneal, dict):  # the file holds the plan's fields
            state.anneal = AnnealPlan(**state.anneal)
        return state


def fingerprint(*modules: torch.nn.Module) -> str:
    """sha256 of every parameter's bytes: equal across ranks exactly when DDP kept them in sync.
    (BatchNorm running statistics are per rank: each rank updates them from its own batches.)"""
    h = hashlib.sha256()
    for m in modules:
        for p in m.parameters():
            h.update(p.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())  # logical order, any layout
    return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """What saving and resuming read of the config (the loop fills it from the flags of the same
    names; no defaults of its own: TrainConfig's are the only ones), and `config`: the whole config
    as the checkpoint records it, which a resume compares with what it was saved with."""

    max_steps: int
    max_kimg: float
    max_minutes: float
    keep: int  # checkpoints kept
    seed: int
    ema: bool
    beta1: float
    beta2: float
    config: dict


def new_state(cfg: RunSettings, step_nimg: int) -> RunState:
    return RunState(total_nimg=total_nimg(cfg, 0, 0, step_nimg), length=length(cfg))


def length(cfg: RunSettings) -> dict:
    return {"max_steps": cfg.max_steps, "max_kimg": cfg.max_kimg}


def total_nimg(cfg: RunSettings, step: int, nimg: int, step_nimg: int) -> int:
    """Where training stops, in images: --max-kimg, or the images of the steps left to --max-steps."""
    if cfg.max_kimg:
        return math.ceil(cfg.max_kimg * 1000)
    if cfg.max_steps:
        return nimg + max(cfg.max_steps - step, 0) * step_nimg
    if cfg.max_minutes:
        return UNBOUNDED  # only the clock ends it (or the anneal planned against it: budget.py)
    raise ValueError("set --max-steps, --max-kimg or --max-minutes")


def save_run(run_dir: Path, acc: Accelerator, models: Models, state: RunState, cfg: RunSettings,
             resolution: int, ada: AdaController | None = None) -> Path:
    """Every rank takes part; the folder appears complete or not at all. ADA's pending sums of
    every rank go into the record (the controller's `state()` is collective)."""
    if ada is not None:
        state.ada = ada.state(lambda t: acc.reduce(t, "sum"), acc.device, acc.is_main_process)
    final = ckpt.step_dir(run_dir, state.step)
    tmp = final.with_name(f".tmp-{final.name}")
    if acc.is_main_process:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    try:
        with files.writing(tmp):
            acc.save_state(str(tmp))  # G, D, optimizers, scaler, RNG states of every rank
        g, d = models.unwrapped()
        prints = gather_object([fingerprint(g, d)])
        if len(set(prints)) > 1:  # every rank has the list, so every rank stops
            raise RuntimeError(f"step {state.step}: parameters differ across ranks ({prints}); DDP lost sync")
        if acc.is_main_process:
            record = {**state.to_dict(), "world_size": acc.num_processes, "rank_param_sha256": prints,
                      "config": cfg.config, "resolution": resolution,
                      "specs": {"generator": g.spec, "discriminator": d.spec}}
            with files.writing(tmp):
                if models.ema is not None:
                    exports.save_tensors(models.ema, tmp / ckpt.EMA_FILE)
                ckpt.commit_checkpoint(tmp, final, record, cfg.keep)
    except BaseException:
        if acc.is_main_process:  # no half-written folder stays behind to fill the disk
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    acc.wait_for_everyone()
    return final


def _architecture_change(saved: dict, models: Models, cfg: RunSettings) -> str | None:
    """What differs between the saved networks and this config's, as 'X, not Y'; None if nothing."""
    for kind, net in zip(("generator", "discriminator"), models.unwrapped()):
        old, new = saved["specs"][kind], net.spec
        if old["arch"] != new["arch"]:
            return f"{kind} arch={old['arch']}, not arch={new['arch']}"
        for key in sorted(set(old["kwargs"]) | set(new["kwargs"])):
            if old["kwargs"].get(key) != new["kwargs"].get(key):
                return f"{kind} {key}={old['kwargs'].get(key)}, not {key}={new['kwargs'].get(key)}"
        was, now = (",".join(spec.get("condition", {}).get("attributes", [])) or "none" for spec in (old, new))
        if was != now:
            return f"{kind} condition={was}, not condition={now}"
    if saved["config"]["ema"] != cfg.ema:
        return f"ema={saved['config']['ema']}, not ema={cfg.ema}"
    return None


def load_run(path: Path, acc: Accelerator, models: Models, cfg: RunSettings, resolution: int,
             step_nimg: int, ada: AdaController | None = None) -> tuple[RunState, list[str]]:
    """Restore every rank from checkpoint `path` (ADA's controller too); return the run state and
    notes for the user."""
    saved = ckpt.read_state(path)
    if "nimg" not in saved or "specs" not in saved:
        raise ValueError(f"{path} was written by an older facegan (no image counter or network specs); resume it "
                         "with that version, or start anew with --resume none or another --run-dir")
    if saved["resolution"] != resolution:
        raise ValueError(f"{path} was trained at {saved['resolution']} px, not {resolution} px (the shards in "
                         f"--data); resume with {saved['resolution']} px shards, or use another --run-dir or "
                         "--resume none")
    change = _architecture_change(saved, models, cfg)
    if change:
        raise ValueError(f"{path} was trained with {change}; use another --run-dir or --resume none")
    try:  # resolve_resume loaded every file once already: this is for what only a load can tell
        acc.load_state(str(path))
        if models.ema is not None:
            exports.load_tensors(models.ema, path / ckpt.EMA_FILE)
    except Exception as e:  # pickle, safetensors and shape errors: many types, many lines
        raise ValueError(f"{path}: cannot be loaded ({describe_error(e)})") from None
    notes = []
    # Optimizer state brings back the saved betas: the config's win (the schedules set the lr at
    # every step), so a resume with --lr-g / --lr-d / --beta1 / --beta2 applies them.
    for opt in (models.opt_g, models.opt_d):
        for group in opt.param_groups:
            group["betas"] = (cfg.beta1, cfg.beta2)
    for name in ("lr_g", "lr_d", "beta1", "beta2", "lr_schedule", "lr_schedule_g", "lr_schedule_d",
                 "lr_decay_kimg", "lr_decay_minutes", "lr_final", "warmup_kimg", "warmup_kimg_g", "warmup_kimg_d"):
        if saved["config"].get(name) != cfg.config.get(name):
            notes.append(f"{name} changed from {saved['config'].get(name)} to {cfg.config.get(name)}; applied")
    state = RunState.from_dict(saved)
    if ada is not None and state.ada is not None:
        ada.load(state.ada, acc.is_main_process)
    if state.length != length(cfg) and state.anneal is None:  # a planned anneal ends the run where it planned
        state.total_nimg, state.length = total_nimg(cfg, state.step, state.nimg, step_nimg), length(cfg)
        notes.append(f"training length changed to {length(cfg)}: now ends at {state.total_nimg / 1000:g} kimg")
    if saved["world_size"] != acc.num_processes:
        # Accelerate restores one RNG file per saved rank and silently skips the others: reseed
        # every rank, deterministically, from the seed, the world size and the segment.
        set_seed(cfg.seed * acc.num_processes + acc.process_index + 7919 * state.segment)
        notes.append(f"saved by {saved['world_size']} process(es), resumed on {acc.num_processes}: kimg, "
                     "schedules and the stop point continue from the image count, but the data order and "
                     "random draws differ from an unbroken run")
    return state, notes


def trim_metrics(path: Path, step: int) -> None:
    """On resume, drop lines a killed run wrote after its last checkpoint, and lines torn by a
    power loss or a full disk (with a warning naming the file: nothing goes silently)."""
    if not path.exists():
        return
    kept = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        try:
            record = json.loads(line) if line else None
        except json.JSONDecodeError:
            print(f"facegan: warning: {path}: line {number} is torn ({line[:40]!r}...); dropped",
                  file=sys.stderr)
            continue
        if record is not None and record["step"] <= step:
            kept.append(line)
    path.write_text("".join(ln + "\n" for ln in kept))
