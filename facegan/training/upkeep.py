"""What happens between steps, like EDM's tick: log, sample grid, FID, checkpoint, stop.
Also the pieces it uses: stop signals, the progress line, the tracker and metrics.jsonl."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm import tqdm

from facegan import files, networks
from facegan.metrics import registry
from facegan.networks import sampling
from facegan.training import stop
from facegan.training.budget import TimeBudget
from facegan.training.evaluation import EvalSettings, Evaluation
from facegan.training.health import Diverged, NonFiniteLoss, Reading
from facegan.training.models import Models
from facegan.training.outputs import Exporter, Reporter
from facegan.training.state import UNBOUNDED, AnnealPlan, RunState
from facegan.training.step import GANStep
from facegan.watch.trackers import Trackers


def clock(seconds: float) -> str:
    """1h02m, 4m05s or 12s."""
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Progress:
    """tqdm on a terminal, or one concise line per log interval in a log file."""

    def __init__(self, acc: Accelerator, start: int, total: int | None):
        self.tty = sys.stderr.isatty() and acc.is_main_process
        self.bar = tqdm(initial=start, total=total, unit="step", disable=not self.tty, dynamic_ncols=True)
        self.main = acc.is_main_process

    def update(self, record: dict | None) -> None:
        self.bar.update()
        if record is None or not self.main:
            return
        text = (f"step {record['step']} kimg {record['kimg']:.1f} loss/D {record['loss/D']:.3f} "
                f"loss/G {record['loss/G']:.3f} D(x) {record['D(x)']:.3f} D(G(z)) {record['D(G(z))']:.3f} "
                f"{record['img/s']:.0f} img/s {record['sec/kimg']:.1f} sec/kimg {clock(record['elapsed_s'])} elapsed")
        if "percent" in record:
            text += f" {record['percent']:.0f}% ETA {clock(record['eta_s'])}"
        if "mem/peak_gb" in record:
            text += f" mem {record['mem/peak_gb']:.1f} GB"
        if self.tty:
            self.bar.set_postfix_str(text.split(" ", 4)[-1])
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        self.bar.close()


@dataclass(frozen=True)
class UpkeepSettings:
    """Upkeep's section of the config: when each job runs and what its lines say (the loop fills it
    from TrainConfig's flags of the same names; no defaults here: TrainConfig's are the only ones)."""

    run_dir: str
    log_every: int
    sample_every: int
    ckpt_every: int
    num_samples: int  # images in each fixed-latent grid
    z_dim: int
    seed: int  # of the grids' fixed latents
    live_report: bool
    max_minutes: float
    lr_decay_minutes: float
    lr_schedule: str  # (the anneal's plan line names it)
    lr_final: float
    loss: str  # (the divergence guard's evidence names it)
    wandb_artifacts: bool


class Upkeep:
    """The per-step upkeep phase, like EDM's tick: log, sample grid, measure, checkpoint, stop. It
    decides when; each job is its own: the health reading (once per tick), Evaluation (metrics and
    the best measurement), Exporter (networks and artifacts), Reporter (metrics.jsonl, trackers,
    the report page)."""

    def __init__(self, cfg: UpkeepSettings, evaluation: EvalSettings, acc: Accelerator, models: Models,
                 step: GANStep, state: RunState, data, resumed: bool, tracking: Trackers,
                 save: Callable[[], None], now: Callable[[], float] = time.monotonic):
        """`data`: the loop's RealBatches, whose position each checkpoint saves; `save`: saves the
        resumable state (state.save_run, which the loop binds); `now`: the run's clock."""
        self.cfg, self.acc, self.m, self.gan_step, self.state, self.data = cfg, acc, models, step, state, data
        self.run_dir, self.save = Path(cfg.run_dir), save
        self.trackers = tracking
        self.evaluation = Evaluation(evaluation, acc)
        keys = self.evaluation.planned_keys()
        tracking.declare(keys, [k for k in keys if registry.ranked(k)])
        self.exporter = Exporter(self.run_dir, tracking, cfg.wandb_artifacts, acc.is_main_process)
        self.reporter = Reporter(self.run_dir, tracking, acc.is_main_process)
        self.fixed_z = torch.randn(cfg.num_samples, cfg.z_dim, generator=torch.Generator().manual_seed(cfg.seed))
        # A conditional run's grid rows show attribute settings; [N, 0] for an unconditional one.
        self.fixed_attrs = sampling.grid_settings(len(networks.attributes(models.sampler)), cfg.num_samples,
                                                  sampling.grid_columns(cfg.num_samples))
        self.stop = stop.StopSignal(self.run_dir, announce=acc.is_main_process)
        self.progress = Progress(acc, state.step, self.planned_steps())
        self.tick_time, self.tick_nimg = time.perf_counter(), state.nimg
        self.last_saved = state.step if resumed else -1
        self.checkpoint_due = False  # a checkpoint held back by an unhealthy step, taken at the next healthy one
        self.warned_since: int | None = None  # the streak of unhealthy steps already warned about
        self.reading: tuple[int, Reading] | None = None  # (step, the health reading taken at it)
        self.clock = TimeBudget(cfg.max_minutes, cfg.lr_decay_minutes, state, now)

    def planned_steps(self) -> int | None:
        if self.state.total_nimg >= UNBOUNDED:  # only --max-minutes ends it
            return None
        left = max(self.state.total_nimg - self.state.nimg, 0)
        return self.state.step + math.ceil(left / self.gan_step.step_nimg())

    def tick(self) -> bool:
        """After each step; True when a stop signal or --max-minutes ended the run (after saving)."""
        cfg, step = self.cfg, self.state.step
        record = self.log() if step % cfg.log_every == 0 else None
        if step % cfg.sample_every == 0:
            self.sample_grid()
        every = self.evaluation.cfg.eval_every
        if every and step % every == 0:  # every rank takes part
            self.measure()
        self.progress.update(record)
        signalled = out_of_time = plan_due = False
        if step % stop.SIGNAL_CHECK_EVERY == 0:
            signalled, out_of_time, plan_due = self.stop.agreed(
                self.acc, self.clock.out_of_time(self.state), self.clock.plan_due(self.state))
        if plan_due:
            self.plan_anneal()
        if out_of_time:
            self.finish()  # the time budget is spent: an ordinary end (saved, exported, last grid)
            if self.acc.is_main_process:
                print(f"facegan: --max-minutes {cfg.max_minutes:g} reached at step {step}; saved and exported",
                      file=sys.stderr, flush=True)
            return True
        if step % cfg.ckpt_every == 0 or signalled or self.checkpoint_due:
            self.checkpoint(ending=signalled)
            if signalled and self.acc.is_main_process:
                print(f"facegan: stop signal received; saved step {step}, exiting", file=sys.stderr)
        return signalled

    def plan_anneal(self) -> None:
        """--lr-decay-minutes: fix where the anneal ends, in images, the same on every rank (the
        least of the ranks' estimates), and end the run there."""
        state = self.state
        end = self.clock.planned_end(state)
        if self.acc.num_processes > 1:
            end = int(self.acc.reduce(torch.tensor([end], dtype=torch.float64, device=self.acc.device), "min")[0])
        state.anneal = AnnealPlan(state.step, state.nimg, end)
        state.total_nimg = end
        self.progress.bar.total = self.planned_steps()
        if self.acc.is_main_process:
            cfg, spent = self.cfg, self.clock.spent() / 60
            print(f"facegan: lr anneal planned at step {state.step} ({state.nimg / 1000:g} kimg, {spent:.1f} of "
                  f"{cfg.max_minutes:g} minutes): {cfg.lr_schedule} to {cfg.lr_final:g} x base lr over the next "
                  f"{(end - state.nimg) / 1000:g} kimg; the run ends at {end / 1000:g} kimg", file=sys.stderr,
                  flush=True)

    def finish(self) -> None:
        """The last step is always saved, exported and has its grid, whatever the intervals; every
        run writes its report (grids, losses and the run table, metrics where it measured)."""
        step = self.state.step
        if self.last_saved != step:
            self.checkpoint(ending=True)
        elif self.acc.is_main_process and not (self.run_dir / "generator.safetensors").exists():
            self.export()
        if step % self.cfg.sample_every:  # decided from the step alone: every rank joins its check
            self.sample_grid()
        if self.cfg.live_report:
            self.reporter.page(live=False)
        if self.state.nimg >= self.state.total_nimg:  # its planned end (not the clock's): the session ends
            self.trackers.ended()

    def close(self) -> None:
        self.stop.restore()
        self.progress.close()

    # The jobs.

    def kimg(self) -> float:  # thousands of real images shown, all ranks together
        return self.state.nimg / 1000

    def log(self) -> dict:
        self.healthy()
        now = time.perf_counter()
        speed = (self.state.nimg - self.tick_nimg) / (now - self.tick_time)
        record = {"step": self.state.step, "kimg": self.kimg(),
                  **self.gan_step.stats.take(lambda t: self.acc.reduce(t, "sum")),
                  "img/s": speed, **self.gan_step.learning_rates(), **self.gan_step.aug_logs(),
                  **self.timing(speed)}
        self.tick_time, self.tick_nimg = now, self.state.nimg
        self.reporter.metrics_line({**record, "time": round(time.time(), 3)})  # the trackers stamp their own
        self.trackers.log(record, record["step"], self.state.nimg)
        return record

    def timing(self, speed: float) -> dict:
        """Seconds per kimg, the run's training time, and where the end is known (images planned, or
        the clock's budget) the percent done and the time left; the peak GPU memory on a GPU."""
        state, cfg = self.state, self.cfg
        out = {"sec/kimg": 1000 / speed if speed > 0 else math.inf, "elapsed_s": round(self.clock.spent(), 1)}
        if state.total_nimg < UNBOUNDED:
            out["percent"] = 100 * state.nimg / state.total_nimg
            out["eta_s"] = round(max(state.total_nimg - state.nimg, 0) / speed, 1) if speed > 0 else math.inf
        elif cfg.max_minutes:  # only the clock ends it
            out["percent"] = min(100.0, 100 * self.clock.budget_spent() / (cfg.max_minutes * 60))
            out["eta_s"] = round(max(cfg.max_minutes * 60 - self.clock.budget_spent(), 0), 1)
        if self.acc.device.type == "cuda":
            out["mem/peak_gb"] = torch.cuda.max_memory_allocated(self.acc.device) / 2**30
        return out

    def health(self) -> Reading:
        """Every rank: the latest step's health reading, taken once per step (one all-reduce of two
        numbers), however many jobs of the tick ask for it."""
        if self.reading is None or self.reading[0] != self.state.step:
            self.reading = (self.state.step, self.gan_step.health.read(lambda t: self.acc.reduce(t, "max")))
        return self.reading[1]

    def healthy(self, ending: bool = False) -> bool:
        """Every rank: whether the latest step is healthy (facegan.training.health). A non-finite loss
        raises NonFiniteLoss naming its first step; losses beyond the plausible range raise
        Diverged once they last --divergence-steps steps, or at once when the run is `ending`
        (nothing of an unhealthy step is saved); a shorter excursion is warned about once."""
        watch, reading = self.gan_step.health, self.health()
        if reading.first_bad >= 0:
            raise NonFiniteLoss(f"non-finite loss at step {reading.first_bad}; stopping without saving. Lower the "
                                "learning rates or use --mixed-precision no/bf16")
        if reading.streak == 0:
            self.warned_since = None
            return True
        evidence = watch.describe(reading, self.cfg.loss)
        if reading.streak >= watch.patience or ending:
            last = f"step {self.last_saved}" if self.last_saved >= 0 else "none"
            why = f"for {reading.streak} consecutive steps" if not ending else "as the run ended"
            raise Diverged(f"diverging {why} {evidence}; stopped without saving any step since (last checkpoint: "
                           f"{last}). Lower the learning rates, or turn the guard off with --divergence-guard false")
        if self.acc.is_main_process and self.warned_since != reading.since:
            print(f"facegan: warning: diverging? {evidence}. Grids and checkpoints wait for a healthy step; the run "
                  f"stops if this lasts {watch.patience} steps (--divergence-steps)", file=sys.stderr, flush=True)
        self.warned_since = reading.since
        return False

    def sample_grid(self) -> None:
        if not self.healthy() or not self.acc.is_main_process:  # every rank checks; no grid of an unhealthy step
            return
        step = self.state.step
        path = self.run_dir / "samples" / f"step-{step:09d}.png"
        with files.writing(path):
            pixels = sampling.write_samples(self.m.sampler, self.fixed_z, path, self.fixed_attrs)
        if pixels is not None:
            self.trackers.log_grid(pixels.numpy(), step, self.state.nimg)

    def measure(self) -> None:
        """--metrics of the sampler, every rank its share (Evaluation); the best G by --best-by is
        exported; the line, the trackers and the report follow. Skipped at an unhealthy step."""
        if not self.healthy():
            return
        cfg, state, main = self.cfg, self.state, self.acc.is_main_process
        if main:  # a measurement takes minutes: say so before, not only after
            print(f"facegan: measuring {','.join(self.evaluation.names)} at step {state.step} on "
                  f"{self.evaluation.cfg.eval_samples} generated images...", file=sys.stderr, flush=True)
        balance = self.data.balance.shares() if self.data.balance is not None else None
        record, seconds = self.evaluation.measure(self.m.sampler, self.data.shardset, balance)
        self.tick_time += seconds  # measuring does not count against img/s
        step = state.step
        if self.evaluation.take_best(state, record, step):
            self.exporter.best(self.m.sampler, step, state.nimg, self.m.ema is not None, record)
        entry = {"step": step, "kimg": self.kimg(), **record}
        self.reporter.metrics_line(entry)
        if main:
            print(f"facegan: {self.evaluation.describe(entry)} ({clock(seconds)})", file=sys.stderr, flush=True)
            if cfg.live_report:
                self.reporter.page(live=True)
        improved = self.evaluation.improved_values(state, record, step)
        self.reporter.measurement(record, improved, step, state.nimg)

    def checkpoint(self, ending: bool = False) -> None:
        """Save the resumable state, the stream's position included, and export G and D. The
        stream goes on untouched: a save changes nothing of what the run does next. At an
        unhealthy step the save waits for the next healthy one (or raises, when `ending`)."""
        self.checkpoint_due = not self.healthy(ending)
        if self.checkpoint_due:
            return
        self.state.segment, self.state.segment_batches = self.data.position()
        self.state.train_seconds = self.clock.spent()
        self.save()
        self.export()
        self.last_saved = self.state.step

    def export(self) -> None:
        manifest = self.data.shardset.manifest  # how its faces were cropped: facegan.project crops targets alike
        data = {"crop": manifest.get("crop"), "size": manifest.get("size")}
        if self.data.balance is not None:  # what the stream showed: the attr metric compares against it
            data["balance"] = self.data.balance.shares().to_json()
        self.exporter.latest(self.m.sampler, self.m.unwrapped()[1], self.state.step, self.state.nimg,
                             self.m.ema is not None, data)
