"""Measuring during training (--eval-every): the metrics of the sampler (EMA-G when enabled), each
rank extracting features for its share, and which measurement is the best so far (--best-by)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import torch
from accelerate import Accelerator

from facegan.data.balance import Shares
from facegan.distribution import Dist
from facegan.metrics import registry
from facegan.training.state import RunState


@dataclass(frozen=True)
class EvalSettings:
    """Evaluation's section of the config: the loop fills it from TrainConfig's flags of the same
    names (no defaults here: TrainConfig's are the only ones)."""

    eval_every: int  # measure every N steps; 0 is off
    metrics: tuple[str, ...]  # what to measure (facegan.metrics.registry)
    best_by: str  # the value generator-best follows ("": the first metric's headline)
    eval_samples: int  # generated images per measurement
    eval_batch_size: int
    num_workers: int  # loader workers for the real set
    eval_cache: str  # folder for cached real-data features ("": the default)
    seed: int  # of the latents measured
    inception_weights: str
    vgg16_weights: str
    dinov2_weights: str
    dinov2_model: str
    attr_classifier: str


class Evaluation:
    """The extractors (loaded at start: a wrong weights path fails in seconds, not at the first
    measurement) and one `measure` per --eval-every steps, on every rank."""

    def __init__(self, cfg: EvalSettings, acc: Accelerator):
        self.cfg, self.acc, self.names = cfg, acc, cfg.metrics
        self.best_by = cfg.best_by or registry.metric(self.names[0]).headline
        self.score = self.extractors = None
        if cfg.eval_every:
            # Here, not at the top: scoring loads torch-fidelity and torchvision (~3 s per process),
            # which a run without --eval-every never needs.
            from facegan.metrics import score  # torch-fidelity, torchvision

            self.score = score
            self.extractors = score.build_extractors(self.names, cfg.inception_weights or None,
                                                     cfg.vgg16_weights or None, acc.device, cfg.attr_classifier or None,
                                                     cfg.dinov2_weights or None, cfg.dinov2_model)

    def planned_keys(self) -> list[str]:
        """The record keys the measurements will have (what the trackers declare at start)."""
        return self.score.planned_keys(self.names, self.extractors) if self.score is not None else []

    def measure(self, sampler: torch.nn.Module, shardset, balance: Shares | None) -> tuple[dict, float]:
        """Every rank: (the record, seconds it took). The latents, the shard reader and the
        extractors use their own RNGs: training is unchanged."""
        cfg, acc = self.cfg, self.acc
        started = time.perf_counter()
        record = self.score.score_generator(
            self.extractors, self.names, sampler, shardset, cfg.eval_samples, seed=cfg.seed,
            batch_size=cfg.eval_batch_size, num_workers=cfg.num_workers, dist=Dist.of(acc),
            cache_dir=cfg.eval_cache or None, progress=acc.is_main_process and sys.stderr.isatty(), balance=balance)
        return record, time.perf_counter() - started

    def take_best(self, state: RunState, record: dict, step: int) -> bool:
        """Record the measurement in `state` (the latest, and the best by --best-by when it beats
        it or ranks by another key); True when it is the new best."""
        key = registry.value_key(record, self.best_by)
        value = record[key]
        state.eval = {"step": step, **registry.values(record)}
        best = state.best
        if best is None or best["key"] != key or registry.improves(self.names, self.best_by, value, best["value"]):
            state.best = {"by": self.best_by, "key": key, "step": step, "value": value}
            return True
        return False

    def improved_values(self, state: RunState, record: dict, step: int) -> dict[str, float]:
        """Every ranked value that beat its own best (the trackers' summaries), recorded in `state`."""
        improved = {k: v for k, v in registry.values(record).items() if registry.ranked(k)
                    and registry.improves(self.names, k, v, state.bests.get(k, {}).get("value"))}
        state.bests.update({k: {"value": v, "step": step} for k, v in improved.items()})
        return improved

    def describe(self, entry: dict) -> str:
        return self.score.describe(entry)
