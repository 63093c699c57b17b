"""Trackers: W&B and TensorBoard, one or both (--tracker wandb,tensorboard), on the main process.

metrics.jsonl is written whatever the trackers (upkeep.py); these add:
- W&B (through Accelerate): the run id kept in the run folder (a resume continues the run), kimg
  as every chart's x-axis (define_metric), the best of each ranked value in the run summary
  (`best/<value>` and its step; not spreads such as kid_std), sample grids captioned with their
  step and kimg, and with --wandb-artifacts the generator as a model artifact: every checkpoint's
  export under the alias `latest`, every new best under `best`, its metrics in the metadata.
- TensorBoard (our own writer, not Accelerate's): event files in RUN/tensorboard/ with tags as
  written (`D(x)`, not `D_x_`), images seen (nimg) as the global step, the sample grids, and the
  config as hparams in the same run, with `metrics/<value>` (the last) and `best/<value>` as its
  metrics, so TensorBoard's HPARAMS tab compares runs.
Nothing here writes a file path into a history: paths and hashes stay in metrics.jsonl.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
from accelerate import Accelerator

from facegan.cli import first_line
from facegan.files import is_number

TRACKERS = ("wandb", "tensorboard")
TENSORBOARD_DIR = "tensorboard"  # in the run folder
ACCELERATE = ("wandb",)  # the trackers Accelerate drives; TensorBoard is TensorBoardWriter below


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


def accelerate_trackers(names: tuple[str, ...]) -> tuple[str, ...]:
    """What Accelerator(log_with=...) is given."""
    return tuple(n for n in names if n in ACCELERATE)


def flat_config(config: dict) -> dict:
    """TensorBoard's hparams take scalars and strings only: anything else as JSON text."""
    return {k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v) for k, v in config.items()}


class TensorBoardWriter:
    """Event files as TensorBoard reads them. tensorboardX's add_scalar rewrites a tag's
    characters outside [-/\\w.] to `_` (`D(G(z))` becomes `D_G_z__`) and add_hparams writes into a
    new sub-run named by the clock; this writes Summary protos itself, so neither happens."""

    def __init__(self, folder: Path):
        from tensorboardX import SummaryWriter  # protobuf and its event-file writer: runs that ask only

        self.writer = SummaryWriter(str(folder))
        self.events = self.writer._get_file_writer()

    def scalars(self, values: dict, nimg: int) -> None:
        from tensorboardX.proto.summary_pb2 import Summary

        found = [Summary.Value(tag=k, simple_value=float(v)) for k, v in values.items() if is_number(v)]
        if found:
            self.events.add_summary(Summary(value=found), global_step=nimg)

    def image(self, tag: str, pixels: np.ndarray, nimg: int) -> None:
        self.writer.add_image(tag, pixels, global_step=nimg, dataformats="HWC")

    def hparams(self, config: dict, metric_tags: list[str]) -> None:
        """The experiment (every config key as an hparam, `metric_tags` as its metrics) and this
        session's start, in this run: the HPARAMS tab shows each metric tag's last scalar."""
        from tensorboardX.summary import hparams

        experiment, start, _ = hparams(flat_config(config), dict.fromkeys(metric_tags, 0.0))
        self.events.add_summary(experiment)
        self.events.add_summary(start)
        self.writer.flush()

    def ended(self) -> None:
        """The session's end (status: success), once the run reached its end."""
        from tensorboardX.summary import hparams

        self.events.add_summary(hparams({}, {})[2])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class Trackers:
    """The run's trackers, as the training loop uses them; every method is a no-op off the main
    process and for trackers not asked for."""

    def __init__(self, acc: Accelerator, names: tuple[str, ...], run_dir: Path):
        self.acc, self.names, self.run_dir = acc, tuple(names), Path(run_dir)
        self.wandb = "wandb" in self.names and acc.is_main_process
        self.tensorboard: TensorBoardWriter | None = None
        self.config: dict = {}

    def start(self, project: str, run_name: str, config: dict) -> None:
        """Start the trackers; a W&B without login is one line naming the ways to log in."""
        acc, self.config = self.acc, config
        if "wandb" in self.names:
            id_file = self.run_dir / "wandb_run_id.txt"
            if acc.is_main_process and not id_file.exists():
                id_file.write_text(uuid.uuid4().hex[:12])
            acc.wait_for_everyone()
            kwargs = {"wandb": {"id": id_file.read_text().strip(), "resume": "allow", "dir": str(self.run_dir),
                                "name": run_name}}
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
        if self.wandb:
            run = self.wandb_run()
            run.config.update(config, allow_val_change=True)
            run.define_metric("kimg")
            run.define_metric("*", step_metric="kimg")  # every chart against thousands of images shown
        if "tensorboard" in self.names:
            self.tensorboard = TensorBoardWriter(self.run_dir / TENSORBOARD_DIR)

    def wandb_run(self):
        return self.acc.get_tracker("wandb", unwrap=True)

    def declare(self, value_keys: list[str], ranked: list[str]) -> None:
        """The values the run will measure (`ranked`: those with a best), for TensorBoard's hparams."""
        if self.tensorboard is not None:
            tags = [f"metrics/{k}" for k in value_keys] + [f"best/{k}" for k in ranked]
            self.tensorboard.hparams(self.config, tags)

    def log(self, values: dict, step: int, nimg: int) -> None:
        """Scalars: W&B at `step` (its charts use the kimg in `values`), TensorBoard at `nimg`."""
        if self.wandb:
            self.wandb_run().log(values, step=step)
        if self.tensorboard is not None:
            self.tensorboard.scalars(values, nimg)

    def log_grid(self, pixels, step: int, nimg: int) -> None:
        """A sample grid (uint8 [H,W,3]) under `samples`, captioned with its step and kimg on W&B."""
        array = np.asarray(pixels)
        if self.wandb:
            import wandb

            kimg = nimg / 1000
            self.wandb_run().log({"samples": wandb.Image(array, caption=f"step {step}, {kimg:g} kimg"),
                                  "kimg": kimg}, step=step)
        if self.tensorboard is not None:
            self.tensorboard.image("samples", array, nimg)

    def improved(self, bests: dict[str, float], step: int, nimg: int) -> None:
        """Values that beat their best so far (the loop judges, from its run state): W&B's run
        summary keeps them as `best/<value>` and `best/<value>_step`, TensorBoard as `best/<value>`."""
        if not bests:
            return
        if self.wandb:
            run = self.wandb_run()
            for key, value in bests.items():
                run.summary[f"best/{key}"] = value
                run.summary[f"best/{key}_step"] = step
        if self.tensorboard is not None:
            self.tensorboard.scalars({f"best/{k}": v for k, v in bests.items()}, nimg)

    def log_generator(self, path: Path, alias: str, step: int, nimg: int, metrics: dict | None = None) -> None:
        """An exported generator (`path`, a .safetensors with its .json) as a version of the model
        artifact `generator-<run id>`, under `alias` (latest or best) and `step-N`; its metadata
        holds the step, kimg and, for a best, the metrics."""
        if not self.wandb:
            return
        import wandb

        run = self.wandb_run()
        metadata = {"step": step, "kimg": nimg / 1000, **({"metrics": metrics} if metrics else {})}
        artifact = wandb.Artifact(f"generator-{run.id}", type="model", metadata=metadata)
        for suffix in (".safetensors", ".json"):
            artifact.add_file(str(path.with_suffix(suffix)), name=f"generator{suffix}")
        run.log_artifact(artifact, aliases=[alias, f"step-{step}"])

    def ended(self) -> None:
        """The run reached its planned end (not a stop signal: a resume continues the session)."""
        if self.tensorboard is not None:
            self.tensorboard.ended()

    def finish(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None
        self.acc.end_training()
