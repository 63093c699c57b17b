"""Trackers through Accelerate: W&B and TensorBoard, one or both (--tracker wandb,tensorboard).

metrics.jsonl is written whatever the trackers (upkeep.py); these add, on the main process:
- W&B: the run id kept in the run folder (a resume continues the run), kimg as the charts'
  x-axis (define_metric), the best value of every metric in the run summary (`best/<value>`),
  the sample grids, and with --wandb-artifacts the exported generator as a model artifact at
  every checkpoint.
- TensorBoard: event files in RUN/tensorboard/ (scalars against the step, the config as hparams
  and text, the sample grids).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
from accelerate import Accelerator

from facegan.cli import first_line

TRACKERS = ("wandb", "tensorboard")
TENSORBOARD_DIR = "tensorboard"  # in the run folder


def parse_trackers(text: str | tuple[str, ...], flag: str = "--tracker") -> tuple[str, ...]:
    """'wandb,tensorboard' (or its names) -> ('wandb', 'tensorboard'); 'none' or '' -> ()."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    if names == ["none"] or not names:
        return ()
    for name in names:
        if name not in TRACKERS:
            raise ValueError(f"{flag} {','.join(names)}: unknown {name!r}; expected none, or a comma list of "
                             f"{', '.join(TRACKERS)}")
    return tuple(dict.fromkeys(names))


def flat_config(config: dict) -> dict:
    """TensorBoard's hparams take scalars and strings only: anything else as JSON text."""
    return {k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v) for k, v in config.items()}


def init(acc: Accelerator, names: list[str], project: str, run_name: str, config: dict, run_dir: Path) -> None:
    """Start the trackers; a W&B without login is one line naming the ways to log in."""
    if not names:
        return
    kwargs = {}
    if "wandb" in names:
        id_file = run_dir / "wandb_run_id.txt"
        if acc.is_main_process and not id_file.exists():
            id_file.write_text(uuid.uuid4().hex[:12])
        acc.wait_for_everyone()
        kwargs["wandb"] = {"id": id_file.read_text().strip(), "resume": "allow", "dir": str(run_dir),
                           "name": run_name}
    try:
        acc.init_trackers(project, init_kwargs=kwargs)
    except Exception as e:  # wandb.errors.UsageError, a traceback of wandb internals otherwise
        if type(e).__name__ != "UsageError":
            raise
        reason = first_line(e) or "usage error"
        raise ValueError(f"--tracker wandb: {reason}; run `wandb login`, set WANDB_API_KEY, or set "
                         "WANDB_MODE=offline (upload later with `wandb sync`)") from None
    if not acc.is_main_process:
        return
    if "wandb" in names:
        run = acc.get_tracker("wandb", unwrap=True)
        run.config.update(config, allow_val_change=True)
        run.define_metric("kimg")
        run.define_metric("*", step_metric="kimg")  # every chart against thousands of images shown
    if "tensorboard" in names:
        acc.get_tracker("tensorboard").store_init_configuration(flat_config(config))


def log_grid(acc: Accelerator, names: list[str], pixels, step: int) -> None:
    """A sample grid (uint8 [H,W,3]) to every tracker, under `samples`."""
    if not acc.is_main_process:
        return
    array = np.asarray(pixels)
    if "wandb" in names:
        acc.get_tracker("wandb").log_images({"samples": [array]}, step=step)
    if "tensorboard" in names:
        acc.get_tracker("tensorboard").log_images({"samples": [array]}, step=step, dataformats="HWC")


def update_summary(acc: Accelerator, names: tuple[str, ...], improved: dict[str, float], step: int) -> None:
    """W&B's run summary keeps each value's best so far as `best/<value>` (and its step): the loop
    judges which values improved (it keeps the bests in the run state) and hands them over."""
    if "wandb" not in names or not acc.is_main_process:
        return
    run = acc.get_tracker("wandb", unwrap=True)
    for key, value in improved.items():
        run.summary[f"best/{key}"] = value
        run.summary[f"best/{key}_step"] = step


def log_generator(acc: Accelerator, names: list[str], run_dir: Path, step: int, kimg: float) -> None:
    """The exported generator (.safetensors and its .json) as a W&B model artifact."""
    if "wandb" not in names or not acc.is_main_process:
        return
    import wandb

    run = acc.get_tracker("wandb", unwrap=True)
    artifact = wandb.Artifact(f"generator-{run.id}", type="model", metadata={"step": step, "kimg": kimg})
    for name in ("generator.safetensors", "generator.json"):
        artifact.add_file(str(run_dir / name), name=name)
    run.log_artifact(artifact, aliases=["latest", f"step-{step}"])
