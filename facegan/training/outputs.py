"""What a run leaves for people, main process only: the exported networks (and their W&B
artifacts), the metrics.jsonl lines and tracker values, and the report page. Each writer has
one job; Upkeep decides when."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from facegan import files
from facegan.metrics import registry
from facegan.networks import exports
from facegan.watch.trackers import Trackers


class Exporter:
    """generator.safetensors and discriminator.safetensors at every checkpoint, and
    generator-best.safetensors at every new best measurement; W&B artifacts with
    --wandb-artifacts."""

    def __init__(self, run_dir: Path, trackers: Trackers, artifacts: bool, main: bool):
        self.run_dir, self.trackers, self.artifacts, self.main = run_dir, trackers, artifacts, main

    def latest(self, sampler: torch.nn.Module, d: torch.nn.Module, step: int, nimg: int, ema: bool,
               data: dict) -> None:
        if not self.main:
            return
        exports.export_generator(sampler, self.run_dir / "generator.safetensors", step=step, nimg=nimg, ema=ema,
                                 data=data)
        exports.export_discriminator(d, self.run_dir / "discriminator.safetensors", step=step)
        if self.artifacts:
            self.trackers.log_generator(self.run_dir / "generator.safetensors", "latest", step, nimg)

    def best(self, sampler: torch.nn.Module, step: int, nimg: int, ema: bool, record: dict) -> None:
        if not self.main:
            return
        path = self.run_dir / "generator-best.safetensors"
        exports.export_generator(sampler, path, step=step, ema=ema, metrics=record)
        if self.artifacts:
            counts = {k: record[k] for k in ("num_generated", "num_real") if k in record}
            self.trackers.log_generator(path, "best", step, nimg, {**registry.values(record), **counts})


class Reporter:
    """metrics.jsonl (strict JSON: a non-finite value is null), the trackers, and the report page
    (a report that fails is a warning, not a stopped run)."""

    def __init__(self, run_dir: Path, trackers: Trackers, main: bool):
        self.run_dir, self.trackers, self.main = run_dir, trackers, main

    def metrics_line(self, record: dict) -> None:
        if self.main:
            path = self.run_dir / "metrics.jsonl"
            with files.writing(path), open(path, "a") as f:
                f.write(files.strict_json(record) + "\n")

    def measurement(self, record: dict, improved: dict[str, float], step: int, nimg: int) -> None:
        """A measurement's numbers to the trackers: the weights' file and hash, the notes and the
        protocol stay in metrics.jsonl."""
        self.trackers.improved(improved, step, nimg)
        logged = {f"metrics/{k}": v for k, v in registry.values(record).items()}
        self.trackers.log({**logged, "metrics/num_generated": record["num_generated"], "kimg": nimg / 1000}, step,
                          nimg)

    def page(self, live: bool) -> None:
        """RUN/report/index.html (main process)."""
        if not self.main:
            return
        from facegan.watch import run_report  # matplotlib: loaded by the first report, not at start-up

        try:
            run_report.write_report(self.run_dir, live=live)
        except Exception as e:  # noqa: BLE001 - a figure or a file: the run goes on
            print(f"facegan: warning: the report could not be written ({type(e).__name__}: {e})", file=sys.stderr)
