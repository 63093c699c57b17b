"""train(cfg): the GAN training loop. Devices, DDP, mixed precision, checkpoints, signals and
tracking live here and only here; networks, losses and data know nothing of them."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import shutil
import signal
import sys
import time
import uuid
from pathlib import Path

import accelerate.optimizer
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import broadcast_object_list, gather_object, set_seed
from PIL import Image
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchvision.utils import make_grid
from tqdm import tqdm

from facegan import checkpoint as ckpt
from facegan import metrics
from facegan.augment import diffaugment
from facegan.config import TrainConfig
from facegan.data import to_float, train_loader
from facegan.inception import Inception
from facegan.losses import d_fake_loss, d_real_loss, g_loss, r1_penalty
from facegan.networks import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig
from facegan.shardset import load_shardset, shared_shards_warning

SIGNAL_CHECK_EVERY = 10  # steps between the all-rank checks for SIGTERM / SIGUSR1 / SIGINT / STOP
# Config fields that shape the saved state: a checkpoint resumes only into the same ones.
ARCHITECTURE = ("z_dim", "ngf", "ndf", "d_batchnorm", "d_spectral_norm", "ema")


class NonFiniteLoss(FloatingPointError):
    pass


# ---------------------------------------------------------------------------------------------
# Setup helpers.

# Accelerate's optimizer wrapper asks importlib whether the `lomo` package exists at every
# optimizer.step(): a filesystem search over sys.path, twice per GAN step (measured 4% of a small
# CPU step). The answer cannot change while the process runs, so it is asked once.
accelerate.optimizer.is_lomo_available = functools.cache(accelerate.optimizer.is_lomo_available)


def build_networks(cfg: TrainConfig, resolution: int) -> tuple[Generator, Discriminator]:
    g = Generator(GeneratorConfig(resolution, cfg.z_dim, cfg.ngf))
    d = Discriminator(DiscriminatorConfig(resolution, cfg.ndf, cfg.d_batchnorm, cfg.d_spectral_norm))
    return g, d


def to_channels_last(net: torch.nn.Module) -> torch.nn.Module:
    """NHWC weights, except G's first layer: its input is z as [B,z,1,1], where both layouts are
    the same, so eager autograd returns a contiguous weight gradient and torch.compile, expecting
    the weight's layout, would fail its stride check."""
    net = net.to(memory_format=torch.channels_last)
    if isinstance(net, Generator):
        first = net.net[0]
        first.weight.data = first.weight.data.contiguous()
    return net


def warm_start(module: torch.nn.Module, path: str, kind: str) -> None:
    """Load an exported network into `module`; the architectures must match."""
    meta = ckpt.read_network_meta(path)
    if meta["facegan_network"] != kind or meta["config"] != module.cfg.to_dict():
        raise ValueError(f"{path}: a {meta['facegan_network']} with {meta['config']} cannot warm-start "
                         f"this {kind} with {module.cfg.to_dict()}")
    ckpt.load_tensors(module, Path(path))


def total_steps(cfg: TrainConfig, world_size: int) -> int:
    if cfg.max_steps:
        return cfg.max_steps
    if cfg.max_kimg:
        return math.ceil(cfg.max_kimg * 1000 / (cfg.batch_size * world_size))
    raise ValueError("set --max-steps or --max-kimg")


STOP_FILE = "STOP"  # `touch RUN_DIR/STOP`: save and exit at the next check, like SIGUSR1


class StopSignal:
    """Remembers SIGTERM / SIGUSR1 (SLURM preemption) and Ctrl-C (SIGINT), or finds RUN_DIR/STOP
    (what a launcher writes when signalling the right processes through its process tree is
    unreliable); the loop finishes its step, saves and exits. A second Ctrl-C aborts at once.
    Loader workers ignore these signals (facegan.data.ignore_stop_signals): the save is ours."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)

    def __init__(self, run_dir: Path, announce: bool):
        self.received: int | None = None
        self.stop_file = run_dir / STOP_FILE
        self.announce = announce
        self.previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.received == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: abort without saving
        if self.announce and signum == signal.SIGINT:
            print(f"\nfacegan: Ctrl-C: saving within {SIGNAL_CHECK_EVERY} steps, then exiting; "
                  "Ctrl-C again aborts without saving", file=sys.stderr, flush=True)
        self.received = signum

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def agreed(self, acc: Accelerator) -> bool:
        """Whether any rank got a signal or sees the stop file. One process needs no collective,
        and no host-device sync that would drain the GPU queue; several ranks all-reduce."""
        local = self.received is not None or self.stop_file.exists()
        if acc.num_processes == 1:
            return local
        flag = torch.full((), float(local), device=acc.device)
        return bool(acc.reduce(flag, "max") > 0)


def tracker_init(accelerator: Accelerator, cfg: TrainConfig, run_dir: Path) -> None:
    """W&B through Accelerate; the run id persists in the run folder so a resume continues it."""
    if cfg.tracker != "wandb":
        return
    id_file = run_dir / "wandb_run_id.txt"
    if accelerator.is_main_process and not id_file.exists():
        id_file.write_text(uuid.uuid4().hex[:12])
    accelerator.wait_for_everyone()
    init = {"id": id_file.read_text().strip(), "resume": "allow", "dir": str(run_dir),
            "name": cfg.run_name or run_dir.name}
    try:
        accelerator.init_trackers(cfg.wandb_project, config=cfg.to_dict(), init_kwargs={"wandb": init})
    except Exception as e:  # wandb.errors.UsageError, a traceback of wandb internals otherwise
        if type(e).__name__ != "UsageError":
            raise
        reason = str(e).strip().splitlines()[0] if str(e).strip() else "usage error"
        raise ValueError(f"--tracker wandb: {reason}; run `wandb login`, set WANDB_API_KEY, or set "
                         "WANDB_MODE=offline (upload later with `wandb sync`)") from None


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


def fingerprint(*modules: torch.nn.Module) -> str:
    """sha256 of every parameter's bytes: equal across ranks exactly when DDP kept them in sync.
    (BatchNorm running statistics are per rank: each rank updates them from its own batches.)"""
    h = hashlib.sha256()
    for m in modules:
        for p in m.parameters():
            h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# One training step.


class Trainer:
    """The state and the step of a run: G, D, their optimizers, EMA and counters."""

    def __init__(self, cfg: TrainConfig, accelerator: Accelerator, resolution: int):
        self.cfg, self.acc, self.resolution = cfg, accelerator, resolution
        set_seed(cfg.seed)  # same initial weights on every rank (DDP also broadcasts them)
        g, d = build_networks(cfg, resolution)
        if cfg.warm_start_g:
            warm_start(g, cfg.warm_start_g, "generator")
        if cfg.warm_start_d:
            warm_start(d, cfg.warm_start_d, "discriminator")
        if cfg.channels_last:
            g, d = to_channels_last(g), to_channels_last(d)
        fused = cfg.fused_adam or None  # None lets torch pick its default (foreach)
        opt_g = torch.optim.Adam(g.parameters(), cfg.lr_g, betas=(cfg.beta1, cfg.beta2), fused=fused)
        opt_d = torch.optim.Adam(d.parameters(), cfg.lr_d, betas=(cfg.beta1, cfg.beta2), fused=fused)
        # One prepare call: save_state/load_state rely on this order.
        self.g, self.d, self.opt_g, self.opt_d = accelerator.prepare(g, d, opt_g, opt_d)
        self.ema = None
        if cfg.ema:  # torch's AveragedModel, fed from the unwrapped G once per step
            self.ema = AveragedModel(accelerator.unwrap_model(self.g),
                                     multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
        if cfg.compile != "off":  # in place: parameter names, checkpoints and exports are unchanged
            # Start from an empty compile cache, as a resumed run in a new process does: graphs
            # left by an earlier train() in this process would make this one differ numerically.
            torch._dynamo.reset()
            for net in (self.g, self.d):
                accelerator.unwrap_model(net).compile(mode=cfg.compile)
        self.state = {"step": 0, "segment": 0}
        # Running sums on the device, read only when logging: no per-step host sync.
        self.sums = torch.zeros(5, device=accelerator.device, dtype=torch.float64)
        self.first_bad = torch.full((), -1, device=accelerator.device, dtype=torch.long)
        self.step_on_device = torch.zeros((), device=accelerator.device, dtype=torch.long)  # no host sync

    @property
    def sampler(self) -> Generator:
        """The generator to sample from: EMA-G when enabled."""
        return self.ema.module if self.ema is not None else self.acc.unwrap_model(self.g)

    def d_step(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cfg, acc, d = self.cfg, self.acc, self.d
        self.opt_d.zero_grad(set_to_none=True)
        r1 = cfg.r1_gamma > 0 and self.state["step"] % cfg.r1_every == 0
        real = real.detach().requires_grad_(r1)
        # Backward after each forward (two D forwards before one backward break BatchNorm under
        # DDP); the first backward skips the all-reduce, the second syncs the summed gradients.
        with acc.no_sync(d):
            real_logits = d(diffaugment(real, cfg.diffaugment))
            loss_real = d_real_loss(cfg.loss, real_logits, cfg.real_label if cfg.loss == "bce" else 1.0)
            if r1:
                loss_real = loss_real + cfg.r1_gamma / 2 * cfg.r1_every * r1_penalty(real_logits, real)
            acc.backward(loss_real)
        fake_logits = d(diffaugment(fake.detach(), cfg.diffaugment))
        loss_fake = d_fake_loss(cfg.loss, fake_logits)
        acc.backward(loss_fake)
        self.opt_d.step()
        return loss_real.detach() + loss_fake.detach(), real_logits.detach(), fake_logits.detach()

    def g_step(self, fake: torch.Tensor) -> torch.Tensor:
        cfg, acc, d = self.cfg, self.acc, self.d
        self.opt_g.zero_grad(set_to_none=True)
        d.requires_grad_(False)  # D is frozen and not all-reduced during the G step
        with acc.no_sync(d):
            loss = g_loss(cfg.loss, d(diffaugment(fake, cfg.diffaugment)))
        acc.backward(loss)
        d.requires_grad_(True)
        self.opt_g.step()
        return loss.detach()

    def step(self, real: torch.Tensor) -> None:
        """One D step and one G step on a batch of real images [B,3,H,W] in [-1,1]."""
        if self.cfg.compile == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()  # the last step's graph outputs may be reused
        z = torch.randn(real.shape[0], self.cfg.z_dim, device=real.device)
        fake = self.g(z)  # one G forward, used detached by D and attached by G's step
        loss_d, real_logits, fake_logits = self.d_step(real, fake)
        loss_g = self.g_step(fake)
        if self.ema is not None:
            self.ema.update_parameters(self.acc.unwrap_model(self.g))
        stats = torch.stack([loss_d.double(), loss_g.double(),
                             torch.sigmoid(real_logits).mean().double(),
                             torch.sigmoid(fake_logits).mean().double(), torch.ones((), device=z.device,
                                                                                    dtype=torch.float64)])
        self.sums += stats
        self.step_on_device += 1
        bad = ~torch.isfinite(stats[:2]).all() & (self.first_bad < 0)
        self.first_bad = torch.where(bad, self.step_on_device, self.first_bad)
        self.state["step"] += 1

    def check_finite(self) -> None:
        """Raise NonFiniteLoss naming the first step whose loss was NaN or infinite."""
        step = int(self.acc.reduce(self.first_bad.clone(), "max"))
        if step >= 0:
            raise NonFiniteLoss(f"non-finite loss at step {step}; stopping without saving. Lower the "
                                "learning rates or use --mixed-precision no/bf16")

    def take_stats(self) -> dict:
        """Mean loss/D, loss/G, D(x), D(G(z)) since the last call, averaged across ranks."""
        sums = self.acc.reduce(self.sums.clone(), "sum")
        self.sums.zero_()
        n = max(float(sums[4]), 1.0)
        return {"loss/D": float(sums[0]) / n, "loss/G": float(sums[1]) / n,
                "D(x)": float(sums[2]) / n, "D(G(z))": float(sums[3]) / n}

    # Checkpoints.

    def save(self, run_dir: Path) -> Path:
        """Every rank takes part; the folder appears complete or not at all."""
        acc, step = self.acc, self.state["step"]
        final = ckpt.step_dir(run_dir, step)
        tmp = final.with_name(f".tmp-{final.name}")
        if acc.is_main_process:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        try:
            with ckpt.writing(tmp):
                acc.save_state(str(tmp))  # G, D, optimizers, scaler, RNG states of every rank
            prints = gather_object([fingerprint(acc.unwrap_model(self.g), acc.unwrap_model(self.d))])
            if len(set(prints)) > 1:  # every rank has the list, so every rank stops
                raise RuntimeError(f"step {step}: parameters differ across ranks ({prints}); DDP lost sync")
            if acc.is_main_process:
                state = {**self.state, "rank_param_sha256": prints, "config": self.cfg.to_dict(),
                         "resolution": self.resolution}
                with ckpt.writing(tmp):
                    if self.ema is not None:
                        ckpt.save_tensors(self.ema, tmp / ckpt.EMA_FILE)
                    ckpt.commit_checkpoint(tmp, final, state, self.cfg.keep)
        except BaseException:
            if acc.is_main_process:  # no half-written folder stays behind to fill the disk
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        acc.wait_for_everyone()
        return final

    def load(self, path: Path) -> None:
        state = ckpt.read_state(path)
        saved = state.get("resolution", self.resolution)  # older checkpoints did not record it
        if saved != self.resolution:
            raise ValueError(f"{path} was trained at {saved} px, not {self.resolution} px (the shards in --data); "
                             f"resume with {saved} px shards, or use another --run-dir or --resume none")
        for name in ARCHITECTURE:
            saved, asked = state["config"][name], getattr(self.cfg, name)
            if saved != asked:
                raise ValueError(f"{path} was trained with {name}={saved}, not {name}={asked}; "
                                 "use another --run-dir or --resume none")
        self.acc.load_state(str(path))
        if self.ema is not None:
            ckpt.load_tensors(self.ema, path / ckpt.EMA_FILE)
        # Optimizer state brings back the saved learning rates: the config's win, so a resume
        # with --lr-g / --lr-d / --beta1 / --beta2 applies them.
        for opt, lr in ((self.opt_g, self.cfg.lr_g), (self.opt_d, self.cfg.lr_d)):
            for group in opt.param_groups:
                group["lr"], group["betas"] = lr, (self.cfg.beta1, self.cfg.beta2)
        self.state = {k: state[k] for k in ("step", "segment", "fid", "best_fid") if k in state}
        self.step_on_device.fill_(self.state["step"])

    def measure_fid(self, inception: Inception, shardset, run_dir: Path) -> dict:
        """FID of the sampler (EMA-G when enabled) on every rank's share; the best G is exported.
        The latents, the shard reader and Inception use their own RNGs: training is unchanged."""
        cfg, acc = self.cfg, self.acc
        record = metrics.score_generator(
            inception, self.sampler, cfg.z_dim, shardset, cfg.fid_samples, seed=cfg.seed,
            batch_size=cfg.fid_batch_size, num_workers=cfg.num_workers, rank=acc.process_index,
            world_size=acc.num_processes, reduce=lambda t: acc.reduce(t, "sum"),
            cache_dir=cfg.fid_cache or None, progress=acc.is_main_process and sys.stderr.isatty())
        value, step = metrics.fid_value(record), self.state["step"]
        self.state["fid"] = {"step": step, "value": value, "standard_weights": record["standard_weights"]}
        best = self.state.get("best_fid")
        if best is None or value < best["value"]:
            self.state["best_fid"] = self.state["fid"]
            if acc.is_main_process:
                ckpt.export_generator(self.sampler, run_dir / "generator-best.safetensors", step=step,
                                      ema=self.ema is not None, fid=record)
        return record

    def export(self, run_dir: Path, **info) -> None:
        if self.acc.is_main_process:
            ckpt.export_generator(self.sampler, run_dir / "generator.safetensors",
                                  step=self.state["step"], ema=self.ema is not None, **info)
            ckpt.export_discriminator(self.acc.unwrap_model(self.d), run_dir / "discriminator.safetensors",
                                      step=self.state["step"], **info)


# ---------------------------------------------------------------------------------------------
# Outputs.


@torch.no_grad()
def write_samples(g: Generator, z: torch.Tensor, path: Path) -> torch.Tensor | None:
    """A PNG grid of G(z) for the fixed latents, G in eval mode (BatchNorm running statistics);
    returns its uint8 [H,W,3] pixels, or None, writing nothing, when G's output is not finite."""
    was_training = g.training
    g.eval()
    images = g(z.to(next(g.parameters()).device)).float().cpu()  # [N,3,H,W] in [-1,1]
    g.train(was_training)
    if not torch.isfinite(images).all():
        return None
    grid = make_grid(images, nrow=int(math.sqrt(len(images))), normalize=True, value_range=(-1, 1))
    # Rounded as torchvision's save_image does. Trackers get these uint8 pixels, not floats in
    # [0,1], which wandb casts straight to uint8 (every grid black).
    pixels = grid.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.numpy()).save(path)
    return pixels


class Progress:
    """tqdm on a terminal, or one concise line per log interval in a log file."""

    def __init__(self, acc: Accelerator, start: int, total: int):
        self.tty = sys.stderr.isatty() and acc.is_main_process
        self.bar = tqdm(initial=start, total=total, unit="step", disable=not self.tty, dynamic_ncols=True)
        self.main = acc.is_main_process

    def update(self, record: dict | None) -> None:
        self.bar.update()
        if record is None or not self.main:
            return
        text = (f"step {record['step']} kimg {record['kimg']:.1f} loss/D {record['loss/D']:.3f} "
                f"loss/G {record['loss/G']:.3f} D(x) {record['D(x)']:.3f} D(G(z)) {record['D(G(z))']:.3f} "
                f"{record['img/s']:.0f} img/s")
        if self.tty:
            self.bar.set_postfix_str(text.split(" ", 4)[-1])
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        self.bar.close()


# ---------------------------------------------------------------------------------------------
# The loop.


def resolve_precision(cfg: TrainConfig) -> tuple[str, str]:
    """(precision, where it came from). 'auto': the launcher's bf16 or fp16, else bf16 on a GPU
    that has it, else no. A launcher's 'no' is not taken: plain `accelerate launch` exports
    ACCELERATE_MIXED_PRECISION=no when nobody asked for anything, so it says nothing; fp32 on a
    GPU is `--mixed-precision no`."""
    if cfg.mixed_precision != "auto":
        return cfg.mixed_precision, "--mixed-precision"
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if launcher in ("bf16", "fp16"):
        return launcher, f"launcher: ACCELERATE_MIXED_PRECISION={launcher}"
    if not torch.cuda.is_available() or cfg.cpu:
        return "no", "auto: CPU"
    if torch.cuda.is_bf16_supported():
        return "bf16", "auto: GPU with bf16"
    return "no", "auto: GPU without bf16"


def process_warnings(acc: Accelerator) -> list[str]:
    """Launches that run other than asked: more processes on this node than devices, or
    `accelerate launch --cpu --num_processes N`, which starts one process (Accelerate's own
    behaviour; it still sets up a rendezvous address for N)."""
    warnings = []
    local = int(os.environ.get("LOCAL_WORLD_SIZE", acc.num_processes))
    gpu = acc.device.type == "cuda"
    devices = torch.cuda.device_count() if gpu else (os.cpu_count() or 1)
    if local > devices:
        what = "GPU(s)" if gpu else "CPU core(s)"
        warnings.append(f"warning: {local} processes on this node but {devices} {what}; pass --num_processes "
                        f"{devices} or fewer to accelerate launch (a config file's num_processes is taken as is)")
    launched_by_accelerate = "ACCELERATE_USE_CPU" in os.environ and "MASTER_ADDR" in os.environ
    if acc.num_processes == 1 and launched_by_accelerate and "WORLD_SIZE" not in os.environ:
        warnings.append("warning: accelerate launch was asked for several processes but started 1 (its --cpu "
                        "launcher does that); use accelerate launch --multi_gpu --num_processes N, which runs "
                        "gloo DDP on a CPU too, or launch/cpu_ddp.sh")
    return warnings


def use_cpu(asked: bool) -> bool:
    """Accelerate sets up multi-process CPU (gloo) only when told cpu=True: do so when asked, and
    under torchrun or accelerate launch on a machine without CUDA."""
    multi_process = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return asked or (multi_process and not torch.cuda.is_available())


def make_accelerator(cfg: TrainConfig) -> Accelerator:
    # On a GPU some cuDNN kernels (convolution backward) sum in a varying order, so two runs, or a
    # run and its resume, drift apart in the last bits. Deterministic kernels make resume bitwise
    # exact there too; on CPU every kernel is deterministic already.
    torch.backends.cudnn.deterministic = cfg.deterministic
    if cfg.deterministic:
        torch.backends.cudnn.benchmark = False
    return Accelerator(cpu=use_cpu(cfg.cpu), mixed_precision=resolve_precision(cfg)[0],
                       log_with="wandb" if cfg.tracker == "wandb" else None,
                       project_dir=cfg.run_dir, step_scheduler_with_optimizer=False)


def train(cfg: TrainConfig) -> Path:
    """Train until max steps (or a stop signal); return the exported generator's path."""
    cfg.validate()
    precision, precision_source = resolve_precision(cfg)
    cfg = dataclasses.replace(cfg, mixed_precision=precision)
    run_dir = Path(cfg.run_dir)
    acc = make_accelerator(cfg)
    world, rank = acc.num_processes, acc.process_index

    # Data, networks, state.
    shardset = load_shardset(cfg.data)
    max_steps = total_steps(cfg, world)
    trainer = Trainer(cfg, acc, shardset.size)
    # The main process picks the newest intact checkpoint (hashing its files once) for every rank.
    resume_from, notes = ckpt.resolve_resume(run_dir, cfg.resume) if acc.is_main_process else (None, [])
    if world > 1:
        box = [resume_from]
        broadcast_object_list(box)
        resume_from = box[0]
    if resume_from is not None:
        trainer.load(resume_from)  # restores every rank's RNG states too
    else:
        set_seed(cfg.seed * world + rank)  # different z and augmentations on every rank
    if acc.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1) + "\n")
        trim_metrics(run_dir / "metrics.jsonl", trainer.state["step"])
        (run_dir / STOP_FILE).unlink(missing_ok=True)  # the request that ended the last start
        readers = world * max(cfg.num_workers, 1)  # 0 workers: the process reads itself
        notes.append(shared_shards_warning(len(shardset.shards), readers, shardset.count))
        for note in filter(None, notes + process_warnings(acc)):
            print(f"facegan: {note}", file=sys.stderr)
        where = f"resuming from {resume_from}" if resume_from else "starting"
        print(f"facegan: {where}; {world} process(es) x batch {cfg.batch_size} = global batch "
              f"{world * cfg.batch_size}; {max_steps} steps; {shardset.count} images at "
              f"{shardset.size} px; mixed precision {precision} ({precision_source})", file=sys.stderr, flush=True)
    tracker_init(acc, cfg, run_dir)
    # Load the Inception weights now: a wrong path fails in seconds, not at the first FID.
    inception = Inception(cfg.inception_weights or None, acc.device) if cfg.fid_every else None
    fixed_z = torch.randn(cfg.num_samples, cfg.z_dim, generator=torch.Generator().manual_seed(cfg.seed))
    acc.wait_for_everyone()  # no rank looks for the stop file before the main process removed it

    def new_stream():
        # A new, deterministic stream segment starts at every checkpoint, in a resumed run and in
        # an unbroken one alike: that is what makes resume exact. The loader is not prepared by
        # Accelerate (it would dispatch every batch from rank 0); it splits ranks itself.
        # Batches come uint8 in pinned memory and become float [-1,1] on the device. (A thread
        # doing this ahead of the step was measured slower on an H100, with CUDA graphs: the loop
        # fell from 0.83x to 0.67x of the bare step's rate; it competes for the GIL.)
        return iter(train_loader(shardset, cfg.batch_size, seed=cfg.seed, segment=trainer.state["segment"],
                                 hflip=cfg.hflip, num_workers=cfg.num_workers, rank=rank, world_size=world,
                                 shuffle_buffer=cfg.shuffle_buffer, uint8=True,
                                 pin_memory=acc.device.type == "cuda"))

    def kimg(step: int) -> float:  # thousands of real images shown, all ranks together
        return step * cfg.batch_size * world / 1000

    def append_metrics(record: dict) -> None:
        if acc.is_main_process:
            with ckpt.writing(run_dir / "metrics.jsonl"), open(run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def sample_grid(step: int) -> None:
        trainer.check_finite()  # every rank; no grid of a step after a non-finite loss
        if not acc.is_main_process:
            return
        path = run_dir / "samples" / f"step-{step:09d}.png"
        with ckpt.writing(path):
            pixels = write_samples(trainer.sampler, fixed_z, path)
        if pixels is not None and cfg.tracker == "wandb":
            acc.get_tracker("wandb").log_images({"samples": [pixels.numpy()]}, step=step)

    def checkpoint():
        trainer.check_finite()
        trainer.state["segment"] += 1
        path = trainer.save(run_dir)
        trainer.export(run_dir)
        return path

    stream = new_stream()
    progress = Progress(acc, trainer.state["step"], max_steps)
    tick, tick_step = time.perf_counter(), trainer.state["step"]
    last_saved = trainer.state["step"] if resume_from else -1
    stop = StopSignal(run_dir, announce=acc.is_main_process)
    try:
        while trainer.state["step"] < max_steps:
            batch = next(stream)
            real = to_float(batch["image"].to(acc.device, non_blocking=True))  # [B,3,H,W] in [-1,1]
            trainer.step(real)
            step = trainer.state["step"]
            record = None
            if step % cfg.log_every == 0:
                trainer.check_finite()
                now = time.perf_counter()
                record = {"step": step, "kimg": kimg(step), **trainer.take_stats(),
                          "img/s": (step - tick_step) * cfg.batch_size * world / (now - tick),
                          "lr/G": cfg.lr_g, "lr/D": cfg.lr_d}
                tick, tick_step = now, step
                append_metrics(record)
                acc.log(record, step=step)
            if step % cfg.sample_every == 0:
                sample_grid(step)
            if cfg.fid_every and step % cfg.fid_every == 0:  # every rank takes part
                trainer.check_finite()
                started = time.perf_counter()
                fid = {"step": step, "kimg": kimg(step), **trainer.measure_fid(inception, shardset, run_dir)}
                tick += time.perf_counter() - started  # FID time does not count against img/s
                append_metrics(fid)
                if acc.is_main_process:
                    print(f"facegan: {metrics.describe(fid)}", file=sys.stderr, flush=True)
                acc.log({metrics.fid_key(fid["standard_weights"]): metrics.fid_value(fid),
                         "fid/num_generated": fid["num_generated"],
                         "fid/weights": f"{fid['weights']} (sha256 {fid['weights_sha256'][:12]})"}, step=step)
            progress.update(record)
            signalled = step % SIGNAL_CHECK_EVERY == 0 and stop.agreed(acc)
            if step % cfg.ckpt_every == 0 or signalled:
                del stream  # shuts its workers down
                checkpoint()
                last_saved = step
                if signalled:
                    if acc.is_main_process:
                        print(f"facegan: stop signal received; saved step {step}, exiting", file=sys.stderr)
                    break
                stream = new_stream()
        step = trainer.state["step"]
        if last_saved != step:
            checkpoint()
        elif acc.is_main_process and not (run_dir / "generator.safetensors").exists():
            trainer.export(run_dir)
        if step % cfg.sample_every:  # the last step always has its grid, whatever --sample-every
            sample_grid(step)  # (decided from the step alone: every rank takes part in its check)
    finally:
        stop.restore()
        progress.close()
        acc.end_training()
        # Accelerate keeps its state per process: reset it so another train() in this process
        # (tests, notebooks) may choose another mixed precision.
        AcceleratorState._reset_state()
    if acc.is_main_process:
        print(f"facegan: step {trainer.state['step']}: generator exported to "
              f"{run_dir}/generator.safetensors, samples in {run_dir}/samples, metrics in "
              f"{run_dir}/metrics.jsonl", file=sys.stderr)
    return run_dir / "generator.safetensors"
