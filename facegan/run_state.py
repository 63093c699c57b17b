"""Saving and restoring a run's resumable state: networks, optimizers, RNGs (Accelerate's
save_state), EMA-G and the counters. Every rank takes part; the files are checkpoint.py's."""

from __future__ import annotations

import hashlib
import math
import shutil
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object, set_seed

from facegan import checkpoint as ckpt
from facegan.config import TrainConfig
from facegan.metrics import fid_key as metrics_fid_key
from facegan.models import Models

COUNTERS = ("step", "nimg", "segment", "segment_batches", "total_nimg", "length", "eval", "best", "ada")
UNBOUNDED = 2**62  # total_nimg of a run that only --max-minutes ends


def fingerprint(*modules: torch.nn.Module) -> str:
    """sha256 of every parameter's bytes: equal across ranks exactly when DDP kept them in sync.
    (BatchNorm running statistics are per rank: each rank updates them from its own batches.)"""
    h = hashlib.sha256()
    for m in modules:
        for p in m.parameters():
            h.update(p.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())  # logical order, any layout
    return h.hexdigest()


def new_state(cfg: TrainConfig, step_nimg: int) -> dict:
    return {"step": 0, "nimg": 0, "segment": 0, "segment_batches": 0, "total_nimg": total_nimg(cfg, 0, 0, step_nimg),
            "length": length(cfg)}


def length(cfg: TrainConfig) -> dict:
    return {"max_steps": cfg.max_steps, "max_kimg": cfg.max_kimg}


def total_nimg(cfg: TrainConfig, step: int, nimg: int, step_nimg: int) -> int:
    """Where training stops, in images: --max-kimg, or the images of the steps left to --max-steps."""
    if cfg.max_kimg:
        return math.ceil(cfg.max_kimg * 1000)
    if cfg.max_steps:
        return nimg + max(cfg.max_steps - step, 0) * step_nimg
    if cfg.max_minutes:
        return UNBOUNDED  # only the clock ends it
    raise ValueError("set --max-steps, --max-kimg or --max-minutes")


def save_run(run_dir: Path, acc: Accelerator, models: Models, state: dict, cfg: TrainConfig,
             resolution: int) -> Path:
    """Every rank takes part; the folder appears complete or not at all."""
    final = ckpt.step_dir(run_dir, state["step"])
    tmp = final.with_name(f".tmp-{final.name}")
    if acc.is_main_process:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    try:
        with ckpt.writing(tmp):
            acc.save_state(str(tmp))  # G, D, optimizers, scaler, RNG states of every rank
        g, d = models.unwrapped()
        prints = gather_object([fingerprint(g, d)])
        if len(set(prints)) > 1:  # every rank has the list, so every rank stops
            raise RuntimeError(f"step {state['step']}: parameters differ across ranks ({prints}); DDP lost sync")
        if acc.is_main_process:
            record = {**state, "world_size": acc.num_processes, "rank_param_sha256": prints,
                      "config": cfg.to_dict(), "resolution": resolution,
                      "specs": {"generator": g.spec, "discriminator": d.spec}}
            with ckpt.writing(tmp):
                if models.ema is not None:
                    ckpt.save_tensors(models.ema, tmp / ckpt.EMA_FILE)
                ckpt.commit_checkpoint(tmp, final, record, cfg.keep)
    except BaseException:
        if acc.is_main_process:  # no half-written folder stays behind to fill the disk
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    acc.wait_for_everyone()
    return final


def _architecture_change(saved: dict, models: Models, cfg: TrainConfig) -> str | None:
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


def load_run(path: Path, acc: Accelerator, models: Models, cfg: TrainConfig, resolution: int,
             step_nimg: int) -> tuple[dict, list[str]]:
    """Restore every rank from checkpoint `path`; return the counters and notes for the user."""
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
            ckpt.load_tensors(models.ema, path / ckpt.EMA_FILE)
    except Exception as e:  # pickle, safetensors and shape errors: many types, many lines
        text = str(e).strip().splitlines()
        raise ValueError(f"{path}: cannot be loaded ({type(e).__name__}: {text[0] if text else ''})") from None
    notes = []
    # Optimizer state brings back the saved betas: the config's win (the schedules set the lr at
    # every step), so a resume with --lr-g / --lr-d / --beta1 / --beta2 applies them.
    for opt in (models.opt_g, models.opt_d):
        for group in opt.param_groups:
            group["betas"] = (cfg.beta1, cfg.beta2)
    for name in ("lr_g", "lr_d", "beta1", "beta2", "lr_schedule", "lr_schedule_g", "lr_schedule_d",
                 "lr_decay_kimg", "lr_final", "warmup_kimg", "warmup_kimg_g", "warmup_kimg_d"):
        if saved["config"].get(name) != getattr(cfg, name):
            notes.append(f"{name} changed from {saved['config'].get(name)} to {getattr(cfg, name)}; applied")
    state = {k: saved[k] for k in COUNTERS if k in saved}
    if "best_fid" in saved and "best" not in saved:  # saved when FID was the only metric
        best = saved["best_fid"]
        state["best"] = {"by": "fid", "key": metrics_fid_key(best["standard_weights"]), "step": best["step"],
                         "value": best["value"]}
    if state["length"] != length(cfg):
        state["total_nimg"], state["length"] = total_nimg(cfg, state["step"], state["nimg"], step_nimg), length(cfg)
        notes.append(f"training length changed to {length(cfg)}: now ends at {state['total_nimg'] / 1000:g} kimg")
    if saved["world_size"] != acc.num_processes:
        # Accelerate restores one RNG file per saved rank and silently skips the others: reseed
        # every rank, deterministically, from the seed, the world size and the segment.
        set_seed(cfg.seed * acc.num_processes + acc.process_index + 7919 * state["segment"])
        notes.append(f"saved by {saved['world_size']} process(es), resumed on {acc.num_processes}: kimg, "
                     "schedules and the stop point continue from the image count, but the data order and "
                     "random draws differ from an unbroken run")
    return state, notes
