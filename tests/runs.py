"""Helpers for the training tests: tiny configs, the train.py command line, subprocess runs, tracker readers."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

from facegan import networks
from facegan.runtime import make_accelerator
from facegan.training.config import TrainConfig
from facegan.training.loop import Hooks, make_loss, make_models, make_step
from facegan.training.presets import DEMO

from .conftest import REPO

TRAIN_PY = str(REPO / "facegan" / "train.py")


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def tiny(data: Path, run_dir: Path, **overrides) -> TrainConfig:
    """A network of width 8 at 32 px: a step takes milliseconds on CPU. Arch options (d_batchnorm,
    ...) may be given like fields."""
    base = dict(data=str(data), run_dir=str(run_dir), z_dim=16, ngf=8, ndf=8, batch_size=8,
                max_steps=8, ckpt_every=4, log_every=2, sample_every=4, num_samples=16, num_workers=2,
                shuffle_buffer=50, deterministic=True, live_report=False)  # (test_metrics_during_training has it)
    options = {k: overrides.pop(k) for k in list(overrides) if k in networks.option_fields()}
    return dataclasses.replace(DEMO, **{**base, **overrides}, arch_options=options)


def nets(cfg: TrainConfig, resolution: int = 32):
    """Models and GANStep of `cfg` on a fresh one-process Accelerator."""
    acc = accelerator(cfg)
    models = make_models(cfg, acc, resolution)
    return models, make_step(cfg, acc, models, make_loss(cfg))


def accelerator(cfg: TrainConfig):
    return make_accelerator(cpu=cfg.cpu, mixed_precision="no", deterministic=True)


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def env(**extra) -> dict:
    return {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", **extra}


WRAPPED_TRAIN = """
import os, signal, sys
sys.path.insert(0, {repo!r})
from facegan.training import loop as training_loop
from facegan.training import stop
{patch}
from facegan.train import main
from facegan.training.loop import Hooks
sys.exit(main(sys.argv[1:], Hooks(after_step=lambda state: after_step(state.step))))
"""


def sigterm_at(step: int = 1) -> Hooks:
    """The loop's hooks for a run that sends its own process SIGTERM once it has taken `step`
    steps: it saves at its next signal check and exits, as under a preemption."""

    def after(state):
        if state.step == step:
            os.kill(os.getpid(), signal.SIGTERM)

    return Hooks(after_step=after)


def wrapped_train(tmp_path: Path, patch: str) -> list[str]:
    """A command that runs train.py's main with `patch` applied; `patch` defines after_step(step),
    which the loop's Hooks call after every step."""
    script = tmp_path / "wrapped_train.py"
    script.write_text(WRAPPED_TRAIN.format(repo=str(REPO), patch=patch))
    return [sys.executable, str(script)]


def tensorboard_runs(folder: Path) -> dict:
    """{run: EventAccumulator} as TensorBoard itself reads `folder` (every sub-folder with event
    files is a run of its own)."""
    from tensorboard.backend.event_processing import event_accumulator, plugin_event_multiplexer

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(folder))
    runs = {}
    for run in multiplexer.Runs():
        runs[run] = event_accumulator.EventAccumulator(str(folder / run), size_guidance={"scalars": 0, "images": 0})
        runs[run].Reload()
    return runs


def read_wandb(path: Path, kinds=("summary", "history")) -> tuple[dict, list[dict]]:
    """(summary, rows of the other `kinds`) of an offline W&B run file: LevelDB-log framing
    (32 KiB blocks of records with a 7-byte header: CRC, length, type) of wandb_internal_pb2.Record
    messages. History rows are {key: value}; metric rows {"name", "step_metric"}; artifact rows
    {"name", "type", "aliases", "files", "metadata"}."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B"
    summary, history, pending, pos, block = {}, [], b"", 7, 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            pos += block - pos % block if pos % block else 0
            continue
        pending = chunk if kind in (1, 2) else pending + chunk  # full, first / middle, last
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            kind_name = record.WhichOneof("record_type")
            if kind_name == "summary":
                summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                for i in record.summary.update})
            elif kind_name == "history" and kind_name in kinds:
                history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                for i in record.history.item})
            elif kind_name == "metric" and kind_name in kinds:
                history.append({"name": record.metric.name or record.metric.glob_name,
                                "step_metric": record.metric.step_metric})
            elif kind_name == "artifact" and kind_name in kinds:
                a = record.artifact
                history.append({"name": a.name, "type": a.type, "aliases": list(a.aliases),
                                "files": [f.path for f in a.manifest.contents],
                                "metadata": json.loads(a.metadata or "{}")})
    return summary, history


def _run(cmd, timeout=300, environment=None, **kwargs):
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=environment or env(), **kwargs)


def _flags(data, run, **kw):
    flags = {"data": data, "run-dir": run, "preset": "demo", "z-dim": 16, "ngf": 8, "ndf": 8,
             "batch-size": 8, "max-steps": 6, "ckpt-every": 3, "log-every": 3, "sample-every": 3,
             "num-samples": 4, "num-workers": 1, "live-report": "false", **kw}
    return [x for k, v in flags.items() for x in (f"--{k}", str(v))]
