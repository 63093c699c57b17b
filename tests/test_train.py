"""Training: outputs, exact resume, GAN/DDP traps, signals, faults, CLI and entry points."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facegan import checkpoint as ckpt
from facegan import networks, report, training_loop, upkeep
from facegan.config import DEMO, STRONG, TrainConfig, config_from_args
from facegan.gan_step import GANStep
from facegan.losses import build_loss
from facegan.models import build_models
from facegan.runtime import make_accelerator
from facegan.training_loop import STOP_FILE, NonFiniteLoss, train

from .conftest import REPO

TRAIN_PY = str(REPO / "facegan" / "train.py")


def tiny(data: Path, run_dir: Path, **overrides) -> TrainConfig:
    """A network of width 8 at 32 px: a step takes milliseconds on CPU. Arch options (d_batchnorm,
    ...) may be given like fields."""
    base = dict(data=str(data), run_dir=str(run_dir), z_dim=16, ngf=8, ndf=8, batch_size=8,
                max_steps=8, ckpt_every=4, log_every=2, sample_every=4, num_samples=16, num_workers=2,
                shuffle_buffer=50, deterministic=True)
    options = {k: overrides.pop(k) for k in list(overrides) if k in networks.option_fields()}
    return dataclasses.replace(DEMO, **{**base, **overrides}, arch_options=options)


def nets(cfg: TrainConfig, resolution: int = 32):
    """Models and GANStep of `cfg` on a fresh one-process Accelerator."""
    acc = accelerator(cfg)
    models = build_models(cfg, acc, resolution)
    return models, GANStep(cfg, acc, models, build_loss(cfg.loss, r1_gamma=cfg.r1_gamma, reg_every=cfg.reg_every))


def accelerator(cfg: TrainConfig):
    return make_accelerator(cpu=cfg.cpu, mixed_precision="no", deterministic=True)


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def env(**extra) -> dict:
    return {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", **extra}


def test_run_folder_contents(tmp_path, synthetic_shards):
    run = tmp_path / "run"
    train(tiny(synthetic_shards, run))
    assert json.loads((run / "config.json").read_text())["max_steps"] == 8
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6, 8]
    assert [r["kimg"] for r in records] == [0.016, 0.032, 0.048, 0.064]  # steps x batch 8 x 1 rank
    for key in ("loss/D", "loss/G", "D(x)", "D(G(z))", "img/s", "lr/G", "lr/D"):
        assert all(isinstance(r[key], float) for r in records), key
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step-000000004.png", "step-000000008.png"]
    assert Image.open(run / "samples" / "step-000000008.png").size == (4 * 34 + 2, 4 * 34 + 2)  # 4x4 grid
    assert [p.name for p in ckpt.complete_checkpoints(run)] == ["step-000000004", "step-000000008"]
    g, meta = ckpt.load_generator(run / "generator.safetensors")
    assert meta["step"] == 8
    assert meta["spec"] == {"arch": "dcgan", "kwargs": {"resolution": 32, "z_dim": 16, "width": 8}}
    assert json.loads((run / "generator.json").read_text()) == meta
    assert g(torch.randn(3, 16)).shape == (3, 3, 32, 32)
    for path in (run / "checkpoints").rglob("*.bin"):  # optimizer state loads without pickle
        torch.load(path, weights_only=True)


OPTS = {"default": {},  # channels_last + fused Adam
        "plain": {"channels_last": False, "fused_adam": False},
        "compile": {"compile": "default"},
        "cudagraphs": {"compile": "reduce-overhead"}}  # CUDA graphs on a GPU; plain inductor on CPU


@pytest.mark.parametrize("recipe,precision,opts", [
    ("dcgan", "no", "default"), ("strong", "no", "default"), ("dcgan", "fp16", "default"),
    ("strong", "bf16", "default"), ("dcgan", "no", "plain"), ("wgan", "no", "default"), ("modern", "no", "default"),
    pytest.param("dcgan", "bf16", "compile", marks=pytest.mark.slow),
    pytest.param("strong", "bf16", "cudagraphs", marks=pytest.mark.slow)])
def test_resume_is_bitwise_exact(tmp_path, synthetic_shards, monkeypatch, recipe, precision, opts):
    """2K steps in one run == K steps, then a resume for K more (segments, RNG, Adam, EMA, SN,
    the fp16 grad scaler), with each speed option."""
    extra = {"mixed_precision": precision, **OPTS[opts]}
    if recipe == "strong":
        extra.update(loss="hinge", d_spectral_norm=True, d_batchnorm=False, ema=True,
                     r1_gamma=0.0 if "compile" in OPTS[opts] else 1.0,  # compile cannot do R1's double backward
                     reg_every=3, diffaugment="color,translation,cutout")
    if recipe == "wgan":  # a critic, 5 D steps, 2 micro-batches, a cosine schedule with warm-up, EMA
        extra.update(loss="wgan-gp", d_steps=5, d_batchnorm=False, accumulate=2, batch_size=4, lr_schedule="cosine",
                     warmup_kimg=0.1, ema=True, ema_kimg=0.05)
    if recipe == "modern":  # r3gan, rpgan with lazy R1 + R2, EMA, and ADA moving p at every 3rd step
        extra.update(arch="r3gan", loss="rpgan", r1_gamma=1.0, r2_gamma=1.0, reg_every=2, ema=True, ada=True,
                     ada_interval=3, ada_kimg=0.5, ada_target=-1.0, beta1=0.0)
    one = tiny(synthetic_shards, tmp_path / "one", **extra)
    train(one)
    two = tiny(synthetic_shards, tmp_path / "two", **extra)
    with monkeypatch.context() as patch:  # preempted at step 4: saves and exits (the schedule keeps its length)
        patch.setattr(upkeep, "SIGNAL_CHECK_EVERY", 4)
        patch.setattr(upkeep.StopSignal, "agreed", lambda self, acc, out_of_time=False: (True, False))
        train(two)
    assert [p.name for p in ckpt.complete_checkpoints(tmp_path / "two")] == ["step-000000004"]
    train(two)
    assert sha(tmp_path / "one" / "generator.safetensors") == sha(tmp_path / "two" / "generator.safetensors")
    assert sha(tmp_path / "one" / "discriminator.safetensors") == sha(
        tmp_path / "two" / "discriminator.safetensors")
    assert (tmp_path / "one" / "metrics.jsonl").read_text().count("\n") == 4
    one_m = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    two_m = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss/D"] for r in one_m] == [r["loss/D"] for r in two_m]
    assert [r["lr/G"] for r in one_m] == [r["lr/G"] for r in two_m]
    if recipe == "modern":  # p moved (any r_t > -1 = target) along the same path; the save at step 4
        # fell between two updates (3, 6), so the pending sums of r_t went through the checkpoint
        assert [r["aug/p"] for r in one_m] == [r["aug/p"] for r in two_m] and one_m[-1]["aug/p"] > 0
        assert [r.get("aug/rt") for r in one_m] == [r.get("aug/rt") for r in two_m]
    if recipe == "wgan":  # 8 steps x 5 D steps x 2 micro-batches x 4 images; lr read from Adam
        assert [r["kimg"] for r in one_m] == [0.08, 0.16, 0.24, 0.32] and "reg/gp" in one_m[0]
        lrs = [r["lr/G"] for r in one_m]
        assert lrs[0] < lrs[1] > lrs[2] > lrs[3] > 0  # warm-up to 0.1 kimg, then cosine decay


WRAPPED_TRAIN = """
import os, signal, sys
sys.path.insert(0, {repo!r})
from facegan import gan_step, training_loop, upkeep
{patch}
real_step = gan_step.GANStep.__call__
def step(self, batches, state):
    real_step(self, batches, state)
    after_step(state["step"])
gan_step.GANStep.__call__ = step
from facegan.train import main
sys.exit(main(sys.argv[1:]))
"""


def wrapped_train(tmp_path: Path, patch: str) -> list[str]:
    """A command that runs train.py's main with `patch` applied; `patch` defines after_step(step)."""
    script = tmp_path / "wrapped_train.py"
    script.write_text(WRAPPED_TRAIN.format(repo=str(REPO), patch=patch))
    return [sys.executable, str(script)]


def test_the_result_does_not_depend_on_when_the_run_stopped(tmp_path, synthetic_shards, monkeypatch):
    """Stop anywhere, resume to the same bits: 30 steps saved only at the end, against the same
    command saving every 3 steps and stopped by SIGTERM at its first signal check (step 10), then
    resumed; and against one saving every 7 steps, killed with kill -9 at step 12 and resumed
    from step 7. Two loader workers sending 4 batches a message, and stream segments of 20
    batches, so the resumes start inside a message, with the workers' turns rotated, and cross a
    segment boundary."""
    monkeypatch.setattr(training_loop, "SEGMENT_IMAGES", 160)
    flags = {"max-steps": 30, "log-every": 5, "sample-every": 100, "num-workers": 2}

    def start(run, **kw):
        train(config_from_args(_flags(synthetic_shards, run, **flags, **kw))[0])

    start(tmp_path / "one", **{"ckpt-every": 1000})
    assert [p.name for p in ckpt.complete_checkpoints(tmp_path / "one")] == ["step-000000030"]
    real_step = GANStep.__call__

    def step(self, batches, state):
        real_step(self, batches, state)
        if state["step"] == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    with monkeypatch.context() as patch:
        patch.setattr(GANStep, "__call__", step)
        start(tmp_path / "two", **{"ckpt-every": 3})
    assert [p.name for p in ckpt.complete_checkpoints(tmp_path / "two")][-1] == "step-000000010"
    start(tmp_path / "two", **{"ckpt-every": 3})
    kill = ("training_loop.SEGMENT_IMAGES = 160\n"
            "def after_step(step):\n    if step == 12:\n        os.kill(os.getpid(), signal.SIGKILL)")
    res = _run(wrapped_train(tmp_path, kill) + _flags(synthetic_shards, tmp_path / "three", **flags,
                                                      **{"ckpt-every": 7}))
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    assert [p.name for p in ckpt.complete_checkpoints(tmp_path / "three")] == ["step-000000007"]
    start(tmp_path / "three", **{"ckpt-every": 7})
    for run in ("two", "three"):
        for net in ("generator", "discriminator"):
            assert sha(tmp_path / run / f"{net}.safetensors") == sha(tmp_path / "one" / f"{net}.safetensors"), run
    losses = [[json.loads(x)["loss/D"] for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
              for run in ("one", "two", "three")]
    assert losses[0][-1] == losses[1][-1] == losses[2][-1]  # (earlier lines average other spans of steps)


def test_resume_auto_skips_unfinished_checkpoints(tmp_path, synthetic_shards):
    run = tmp_path / "run"
    train(tiny(synthetic_shards, run, max_steps=4, keep=5))
    good = ckpt.complete_checkpoints(run)[-1]
    # What kill -9 leaves mid-save: a temporary folder, and a step folder without its state file.
    (run / "checkpoints" / ".tmp-step-000000008").mkdir()
    broken = run / "checkpoints" / "step-000000006"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"half")
    assert ckpt.resolve_resume(run, "auto") == (good, [])
    with pytest.raises(ValueError, match="not a complete facegan checkpoint"):
        ckpt.resolve_resume(run, str(broken))


def test_save_is_atomic(tmp_path, synthetic_shards, monkeypatch):
    """A save that dies before its final rename leaves no checkpoint that resume would take."""
    run = tmp_path / "run"
    train(tiny(synthetic_shards, run, max_steps=4))

    def die(*args, **kwargs):
        raise KeyboardInterrupt("killed during the rename")

    monkeypatch.setattr(ckpt.os, "replace", die)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(synthetic_shards, run, max_steps=8))
    monkeypatch.undo()
    assert [p.name for p in ckpt.complete_checkpoints(run)] == ["step-000000004"]


def test_resume_refuses_another_architecture(tmp_path, synthetic_shards):
    run = tmp_path / "run"
    train(tiny(synthetic_shards, run, max_steps=4))
    with pytest.raises(ValueError, match=r"step-000000004 was trained with discriminator width=8, not width=16"):
        train(tiny(synthetic_shards, run, max_steps=8, ndf=16))


def test_keep_last_n(tmp_path, synthetic_shards):
    run = tmp_path / "run"
    train(tiny(synthetic_shards, run, max_steps=10, ckpt_every=2, keep=2, log_every=5))
    assert [p.name for p in ckpt.complete_checkpoints(run)] == ["step-000000008", "step-000000010"]


def test_resuming_an_older_checkpoint_sets_the_newer_ones_aside(tmp_path, synthetic_shards, capsys):
    """--resume of step 4 when step 6 exists, with --keep 1: the new step-5 checkpoint stays (it
    was pruned as it was written, leaving the abandoned step 6 for --resume auto); step 6 is moved
    to checkpoints/abandoned-TIME/, kept, and never resumed."""
    run = tmp_path / "run"
    train(tiny(synthetic_shards, run, max_steps=6, ckpt_every=2, keep=3))
    older = ckpt.step_dir(run, 4)
    capsys.readouterr()
    train(tiny(synthetic_shards, run, max_steps=5, ckpt_every=1, keep=1, resume=str(older)))
    assert [p.name for p in ckpt.complete_checkpoints(run)] == ["step-000000005"]
    [aside] = (run / "checkpoints").glob("abandoned-*")
    assert [p.name for p in aside.iterdir()] == ["step-000000006"]
    assert (aside / "step-000000006" / ckpt.STATE_FILE).is_file()  # whole, not deleted
    err = capsys.readouterr().err
    assert f"the later checkpoint(s) step-000000006 were moved to {aside}" in err
    assert ckpt.resolve_resume(run, "auto")[0].name == "step-000000005"
    assert ckpt.read_network_meta(run / "generator.safetensors")["step"] == 5
    # A fresh start (--resume none) in the folder sets every earlier checkpoint aside too.
    train(tiny(synthetic_shards, run, max_steps=2, ckpt_every=2, resume="none"))
    assert [p.name for p in ckpt.complete_checkpoints(run)] == ["step-000000002"]
    assert len(list((run / "checkpoints").glob("abandoned-*"))) == 2


LOCK_HOLDER = """
import sys, time
sys.path.insert(0, {repo!r})
from facegan.run_lock import RunLock
RunLock({run!r}).acquire()
print("held", flush=True)
time.sleep(300)
"""


def test_a_second_start_on_a_run_folder_is_refused(tmp_path, synthetic_shards):
    """The run folder is locked (flock on RUN/.lock) by the process that trains in it: a second
    start exits 1 in one line naming the holder; the kernel drops the lock of a killed holder."""
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER.format(repo=str(REPO), run=str(run))],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        res = _run([sys.executable, TRAIN_PY] + _flags(synthetic_shards, run))
        assert res.returncode == 1 and res.stderr.count("\n") == 1, res.stderr[-2000:]
        assert f"{run}: another facegan run is using this folder (pid {holder.pid} on host " in res.stderr
        assert not (run / "metrics.jsonl").exists() and not (run / "config.json").exists()
    finally:
        holder.kill()  # kill -9: no clean-up runs, the kernel releases the lock
        holder.wait()
    train(tiny(synthetic_shards, run, max_steps=2))
    assert ckpt.read_network_meta(run / "generator.safetensors")["step"] == 2


def test_d_frozen_and_untouched_during_g_step(tmp_path, synthetic_shards):
    """At G's optimizer step, D's gradients and weights are those its own step left."""
    models, step = nets(tiny(synthetic_shards, tmp_path / "run"))
    seen = {}
    d_step, g_step = models.opt_d.step, models.opt_g.step

    def after_d(*a, **k):
        d_step(*a, **k)
        seen["d"] = [(p.grad.clone(), p.detach().clone()) for p in models.d.parameters()]

    def at_g(*a, **k):
        seen["g"] = [(p.grad.clone(), p.detach().clone(), p.requires_grad) for p in models.d.parameters()]
        assert all(p.grad is not None for p in models.g.parameters())
        g_step(*a, **k)

    models.opt_d.step, models.opt_g.step = after_d, at_g
    step(iter([torch.rand(8, 3, 32, 32) * 2 - 1]), {"step": 0, "nimg": 0, "total_nimg": 64})
    assert all(torch.equal(g1, g2) and torch.equal(w1, w2) and not trainable
               for (g1, w1), (g2, w2, trainable) in zip(seen["d"], seen["g"]))
    assert all(p.requires_grad for p in models.d.parameters())


def _grads_at_optimizer_steps(models) -> dict:
    """Wrap both optimizers' step to record the gradients each one is given."""
    seen = {}
    for name, opt, net in (("d", models.opt_d, models.d), ("g", models.opt_g, models.g)):
        def step(*a, _name=name, _net=net, _step=opt.step, **k):
            seen.setdefault(_name, []).append([p.grad.clone() for p in _net.parameters()])
            return _step(*a, **k)
        opt.step = step
    return seen


def test_two_micro_batches_equal_one_batch(tmp_path, synthetic_shards):
    """--accumulate 2 with batches of B/2 gives D and G the gradients of one batch of B (fp32
    rounding aside). D without BatchNorm or spectral norm, G's BatchNorm in eval mode: otherwise a
    sample's output depends on the rest of its (micro-)batch, which is what accumulation changes."""
    real = torch.rand(8, 3, 32, 32) * 2 - 1
    grads = []
    for accumulate, batch in ((1, 8), (2, 4)):
        cfg = tiny(synthetic_shards, tmp_path / "run", accumulate=accumulate, batch_size=batch, d_batchnorm=False,
                   loss="nonsat", r1_gamma=1.0, reg_every=1)
        models, step = nets(cfg)
        models.g.eval()
        seen = _grads_at_optimizer_steps(models)
        torch.manual_seed(1)  # the same z: accumulation draws all micro-batches' latents at once
        step(iter(real.split(batch)), {"step": 0, "nimg": 0, "total_nimg": 8})
        grads.append(seen)
    for net in ("d", "g"):
        for one, two in zip(grads[0][net][0], grads[1][net][0]):
            torch.testing.assert_close(two, one, rtol=1e-4, atol=1e-6)


def test_non_finite_loss_stops_naming_the_step(tmp_path, synthetic_shards):
    run = tmp_path / "run"
    no_bn = dict(loss="hinge", d_batchnorm=False)  # without BatchNorm, huge D weights overflow
    train(tiny(synthetic_shards, run, max_steps=4, **no_bn))
    before = sha(run / "generator.safetensors")
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss at step \d+"):
        train(tiny(synthetic_shards, run, max_steps=40, lr_d=1e30, ckpt_every=20, **no_bn))
    assert [p.name for p in ckpt.complete_checkpoints(run)] == ["step-000000004"]  # the last good one
    assert sha(run / "generator.safetensors") == before


def test_warm_start(tmp_path, synthetic_shards):
    run = tmp_path / "run"
    train(tiny(synthetic_shards, run, max_steps=4))
    cfg = tiny(synthetic_shards, tmp_path / "warm", warm_start_g=str(run / "generator.safetensors"),
               warm_start_d=str(run / "discriminator.safetensors"))
    models = build_models(cfg, accelerator(cfg), 32)
    g, _ = ckpt.load_generator(run / "generator.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(g.state_dict().values(), models.g.state_dict().values()))
    wrong = tiny(synthetic_shards, tmp_path / "w2", ngf=16, warm_start_g=str(run / "generator.safetensors"))
    with pytest.raises(ValueError, match="cannot warm-start"):
        build_models(wrong, accelerator(wrong), 32)


def test_config_presets_and_errors(capsys):
    cfg, _ = config_from_args(["--data", "d", "--run-dir", "r", "--preset", "strong", "--lr-g", "1e-4",
                               "--ema", "false"])
    assert (cfg.loss, cfg.arch_options["d_spectral_norm"], cfg.lr_g, cfg.ema) == ("hinge", True, 1e-4, False)
    assert STRONG.ema and STRONG.loss == "hinge"
    for argv, needle in [(["--bogus"], "unrecognized arguments: --bogus"),
                         (["--loss", "wgan"], "argument --loss: invalid choice: 'wgan'"),
                         (["--batch-size", "x"], "argument --batch-size: invalid int value: 'x'")]:
        with pytest.raises(SystemExit) as e:
            config_from_args(["--data", "d", "--run-dir", "r", *argv])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1
    with pytest.raises(ValueError, match="batch_size=0: must be at least 1"):
        config_from_args(["--data", "d", "--run-dir", "r", "--batch-size", "0"])
    with pytest.raises(ValueError, match="diffaugment='blur': unknown 'blur'"):
        config_from_args(["--data", "d", "--run-dir", "r", "--diffaugment", "blur"])
    with pytest.raises(ValueError, match="ada=true and diffaugment='color': choose one augmentation scheme"):
        config_from_args(["--data", "d", "--run-dir", "r", "--ada", "--diffaugment", "color"])


def test_modern_preset_takes_its_settings_from_the_shards_resolution(synthetic_shards, tmp_path):
    from facegan.config import MODERN_BY_RESOLUTION, preset_config
    cfg, _ = config_from_args(["--data", str(synthetic_shards), "--run-dir", "r", "--preset", "modern",
                               "--r1-gamma", "0.3", "--g-blocks", "2"])  # 32 px shards
    want = MODERN_BY_RESOLUTION[32]
    assert (cfg.arch, cfg.loss, cfg.ada, cfg.ema, cfg.beta1) == ("r3gan", "rpgan", True, True, 0.0)
    assert (cfg.ngf, cfg.batch_size, cfg.r2_gamma, cfg.r1_gamma) == (want["ngf"], want["batch_size"],
                                                                    want["r2_gamma"], 0.3)
    assert cfg.arch_options == {**want.get("arch_options", {}), "g_blocks": 2}
    assert (cfg.lr_g, cfg.lr_d, cfg.reg_every) == (want["lr_g"], want["lr_d"], want["reg_every"])
    assert preset_config("modern", 64).ngf == MODERN_BY_RESOLUTION[64]["ngf"]
    assert preset_config("modern", 64).lr_g == 2e-4  # the paper's where no size-specific value is set
    with pytest.raises(ValueError, match=r"preset modern: no settings for 48 px; it has 32, 64, 128 px"):
        preset_config("modern", 48)
    with pytest.raises(ValueError, match="none: shard folder not found"):  # the shard set's one-line error
        config_from_args(["--data", str(tmp_path / "none"), "--run-dir", "r", "--preset", "modern"])


def read_tensorboard(folder: Path) -> list:
    """Every Event in the TensorBoard event files under `folder` (TFRecord framing: length,
    its CRC, the record, its CRC)."""
    from tensorboardX.proto.event_pb2 import Event

    events = []
    for path in sorted(folder.rglob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = Event()
            event.ParseFromString(data[at + 12:at + 12 + length])
            events.append(event)
            at += 12 + length + 4
    return events


def read_wandb(path: Path, kinds=("summary", "history")) -> tuple[dict, list[dict]]:
    """(summary, rows of the other `kinds`) of an offline W&B run file: LevelDB-log framing
    (32 KiB blocks of records with a 7-byte header: CRC, length, type) of wandb_internal_pb2.Record
    messages. History rows are {key: value}; metric rows {"name", "step_metric"}; artifact rows
    {"type", "aliases", "files"}."""
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
                history.append({"type": a.type, "aliases": list(a.aliases),
                                "files": [f.path for f in a.manifest.contents]})
    return summary, history


def test_trackers_wandb_and_tensorboard(tmp_path, small_shards, standin):
    """--tracker wandb,tensorboard in one run: W&B (offline) and TensorBoard hold the sample grids
    pixel for pixel, every metric, and W&B's summary the best values; no secret is written."""
    secret = "facegan-test-secret-0123456789abcdef0123"
    run = tmp_path / "run"
    code = (f"from facegan.training_loop import train; from tests.test_train import tiny; "
            f"from pathlib import Path; train(tiny(Path({str(small_shards)!r}), Path({str(run)!r}), "
            f"tracker='wandb,tensorboard', wandb_project='facegan-test', eval_every=4, eval_samples=8, "
            f"metrics='fid,kid', best_by='kid', inception_weights={str(standin)!r}, wandb_artifacts=True))")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env=env(WANDB_MODE="offline", WANDB_API_KEY=secret, WANDB_SILENT="true"))
    assert res.returncode == 0, res.stderr[-2000:]
    runs = list((run / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb")), "a run wandb sync can upload"
    for path in run.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in records if "loss/D" in r]) == 4  # written whatever the tracker
    evals = [r for r in records if "kid_nonstandard" in r]
    assert [r["step"] for r in evals] == [4, 8]
    # The grids W&B and TensorBoard stored are the sample PNGs, pixel for pixel (floats in [0,1]
    # were cast to black once).
    samples = sorted((run / "samples").glob("step-*.png"))
    logged = sorted(runs[0].glob("files/media/images/*.png"))
    events = read_tensorboard(run / "tensorboard")
    images = [(e.step, v.image.encoded_image_string) for e in events for v in e.summary.value if v.tag == "samples"]
    assert len(logged) == len(samples) == len(images) == 2
    for a, (step, png), b in zip(logged, images, samples):
        pixels = np.asarray(Image.open(b).convert("RGB"))
        assert np.array_equal(np.asarray(Image.open(a).convert("RGB")), pixels), (a, b)
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), pixels), (step, b)
        assert f"step-{step:09d}.png" == b.name and pixels.std() > 10  # varied faces, not one colour
    scalars = {(v.tag, e.step): v.simple_value for e in events for v in e.summary.value if v.HasField("simple_value")}
    for r in evals:
        assert scalars[("metrics/kid_nonstandard", r["step"])] == pytest.approx(r["kid_nonstandard"], rel=1e-6)
        assert scalars[("metrics/fid_nonstandard", r["step"])] == pytest.approx(r["fid_nonstandard"], rel=1e-6)
    assert ("loss/D", 2) in scalars and ("kimg", 4) in scalars
    summary, history = read_wandb(next(runs[0].glob("run-*.wandb")))
    logged_evals = [h for h in history if "metrics/kid_nonstandard" in h]
    assert [(h["step"], h["metrics/kid_nonstandard"], h["kimg"]) for h in logged_evals] == [
        (r["step"], pytest.approx(r["kid_nonstandard"]), r["kimg"]) for r in evals]
    # kimg is every chart's x-axis (define_metric("*", step_metric="kimg")).
    defined = read_wandb(next(runs[0].glob("run-*.wandb")), kinds=("metric",))[1]
    assert {"name": "*", "step_metric": "kimg"} in defined, defined
    # --wandb-artifacts: the exported generator at each checkpoint (steps 4 and 8) as a model artifact.
    artifacts = read_wandb(next(runs[0].glob("run-*.wandb")), kinds=("artifact",))[1]
    expected = [("model", ["latest", f"step-{k}"]) for k in (4, 8)]
    assert [(a["type"], sorted(a["aliases"])) for a in artifacts] == expected
    assert all(sorted(a["files"]) == ["generator.json", "generator.safetensors"] for a in artifacts)
    best = min(evals, key=lambda r: r["kid_nonstandard"])
    assert summary["best/kid_nonstandard"] == pytest.approx(best["kid_nonstandard"])
    assert summary["best/kid_nonstandard_step"] == best["step"]
    assert summary["best/fid_nonstandard"] == pytest.approx(min(r["fid_nonstandard"] for r in evals))


def test_unknown_tracker_is_one_line(tmp_path, synthetic_shards):
    with pytest.raises(ValueError, match=r"tracker='wandb,mlflow': unknown 'mlflow'; expected none, or a comma list"):
        config_from_args(_flags(synthetic_shards, tmp_path / "run", tracker="wandb,mlflow"))


def test_wandb_without_login_is_one_line(tmp_path, synthetic_shards):
    environment = {k: v for k, v in env(WANDB_MODE="online", HOME=str(tmp_path)).items()
                   if k not in ("WANDB_API_KEY", "NETRC")}
    res = subprocess.run([sys.executable, TRAIN_PY, *_flags(synthetic_shards, tmp_path / "run", tracker="wandb")],
                         cwd=REPO, capture_output=True, text=True, timeout=120, env=environment,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("facegan/train.py: error: --tracker wandb:"), res.stderr[-2000:]
    assert all(hint in last for hint in ("wandb login", "WANDB_API_KEY", "WANDB_MODE=offline"))
    assert "Traceback" not in res.stderr


def _run(cmd, timeout=300, environment=None, **kwargs):
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=environment or env(), **kwargs)


def _flags(data, run, **kw):
    flags = {"data": data, "run-dir": run, "preset": "demo", "z-dim": 16, "ngf": 8, "ndf": 8,
             "batch-size": 8, "max-steps": 6, "ckpt-every": 3, "log-every": 3, "sample-every": 3,
             "num-samples": 4, "num-workers": 1, **kw}
    return [x for k, v in flags.items() for x in (f"--{k}", str(v))]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["script", "module", "accelerate"])
def test_entry_points(tmp_path, synthetic_shards, launcher):
    prefix = {"script": [sys.executable, TRAIN_PY],
              "module": [sys.executable, "-m", "facegan.train"],
              "accelerate": [sys.executable, "-m", "accelerate.commands.launch", "--cpu",
                             "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
                             "--dynamo_backend", "no", TRAIN_PY]}[launcher]
    res = _run(prefix + _flags(synthetic_shards, tmp_path / "run"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "generator exported" in res.stderr
    assert (tmp_path / "run" / "generator.safetensors").exists()


def test_cli_one_line_errors(tmp_path, synthetic_shards):
    res = _run([sys.executable, TRAIN_PY, "--data", str(synthetic_shards), "--run-dir", str(tmp_path),
                "--max-stepz", "3"])
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "--max-stepz" in res.stderr
    res = _run([sys.executable, TRAIN_PY, "--data", str(tmp_path / "nowhere"), "--run-dir", str(tmp_path),
                "--max-steps", "3"])
    assert res.returncode == 1 and "nowhere: shard folder not found" in res.stderr.splitlines()[-1]


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["sigint-group", "torchrun-sigterm-group", "stop-file"])
def test_stop_request_saves_and_exits_zero(tmp_path, synthetic_shards, how):
    """SIGTERM or Ctrl-C sent to the whole process group, loader workers included (what scancel,
    Kubernetes, torchrun and a terminal do), or RUN_DIR/STOP (what launch/slurm_multinode.sbatch
    writes): every rank saves and exits; the workers ignore the signal instead of dying first."""
    run = tmp_path / "run"
    prefix = TORCHRUN if how.startswith("torchrun") else []
    proc = subprocess.Popen([*(prefix or [sys.executable]), TRAIN_PY] + _flags(
        synthetic_shards, run, **{"max-steps": 100000, "ckpt-every": 100000, "log-every": 10, "num-workers": 2}),
        cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    while not (run / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.2)
    if how == "stop-file":
        (run / STOP_FILE).touch()
    else:
        os.killpg(proc.pid, signal.SIGINT if how == "sigint-group" else signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert "killed by signal" not in err, err[-3000:]
    if not prefix:  # torchrun itself exits non-zero after a signal, once its workers have saved
        assert proc.returncode == 0, err[-3000:]
    assert "stop signal received" in err, err[-3000:]
    saved = ckpt.complete_checkpoints(run)
    assert len(saved) == 1
    state = json.loads((saved[0] / ckpt.STATE_FILE).read_text())
    step = state["step"]
    assert step > 0 and step % 10 == 0  # ranks agree at a signal check, every 10 steps
    assert len(state["rank_param_sha256"]) == (2 if prefix else 1)
    assert ckpt.read_network_meta(run / "generator.safetensors")["step"] == step
    # The restart (a requeued job) removes a stop file and trains on.
    train(tiny(synthetic_shards, run, max_steps=step + 4, num_samples=4))
    assert not (run / STOP_FILE).exists()
    assert json.loads((ckpt.complete_checkpoints(run)[-1] / ckpt.STATE_FILE).read_text())["step"] == step + 4


@pytest.mark.slow
def test_two_process_ddp_resumes_a_one_process_run(tmp_path, small_shards, standin, vgg_standin):
    """The modern preset (r3gan, rpgan + R1/R2, EMA, ADA), conditioned on two attributes, for 3
    steps on one process, then a resume on 2 (a SLURM requeue on more GPUs): the image count, the
    stop point, kimg and ADA's p carry over, DDP keeps the ranks' parameters identical, and every
    metric runs with every rank measuring its share and logging to metrics.jsonl, W&B and
    TensorBoard."""
    run = tmp_path / "run"
    modern = {"preset": "modern", "ada-interval": 1, "ada-kimg": 0.1, "ada-target": -1.0,  # p rises every step
              "condition": "Smiling,Eyeglasses"}  # a conditional G and projection D under DDP too
    train(config_from_args(_flags(small_shards, run, **modern, **{"max-steps": 3}))[0])
    evals = {"eval-every": 6, "eval-samples": 8, "eval-batch-size": 4, "metrics": "fid,kid,is,pr",
             "inception-weights": standin, "vgg16-weights": vgg_standin, "eval-cache": tmp_path / "cache",
             "tracker": "wandb,tensorboard"}
    res = _run(TORCHRUN + [TRAIN_PY] + _flags(small_shards, run, **modern, **evals), timeout=300,
               environment=env(WANDB_MODE="offline", WANDB_SILENT="true"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "saved by 1 process(es), resumed on 2" in res.stderr and "data order" in res.stderr
    first, last = (json.loads((p / ckpt.STATE_FILE).read_text()) for p in ckpt.complete_checkpoints(run))
    assert (first["step"], first["nimg"], first["world_size"], len(first["rank_param_sha256"])) == (3, 24, 1, 1)
    assert (last["step"], last["nimg"], last["world_size"]) == (6, 24 + 3 * 16, 2)  # 3 more steps x 8 x 2 ranks
    hashes = last["rank_param_sha256"]
    assert len(hashes) == 2 and hashes[0] == hashes[1]  # parameters bitwise identical
    assert sorted(p.name for p in ckpt.complete_checkpoints(run)[-1].glob("random_states_*")) == [
        "random_states_0.pkl", "random_states_1.pkl"]
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r for r in records if "loss/D" in r]
    assert [(r["step"], r["kimg"]) for r in losses] == [(3, 0.024), (6, 0.072)]  # rank 0 alone writes
    assert 0 < losses[0]["aug/p"] < losses[1]["aug/p"] and first["ada"]["p"] == losses[0]["aug/p"]
    measured = [r for r in records if "fid_nonstandard" in r]
    assert [(r["step"], r["num_real"], r["num_generated"]) for r in measured] == [(6, 24, 8)]
    values = ("fid_nonstandard", "kid_nonstandard", "kid_std_nonstandard", "is_nonstandard", "is_std_nonstandard",
              "precision_nonstandard", "recall_nonstandard", "pr_f_score_nonstandard")
    assert set(values) <= set(measured[0])
    # Every metric reached W&B (offline) and TensorBoard too, from rank 0 alone.
    _, history = read_wandb(next(run.glob("wandb/offline-run-*/run-*.wandb")))
    logged = [h for h in history if "metrics/kid_nonstandard" in h]
    assert len(logged) == 1 and all(logged[0][f"metrics/{k}"] == pytest.approx(measured[0][k]) for k in values)
    scalars = {(v.tag, e.step): v.simple_value for e in read_tensorboard(run / "tensorboard")
               for v in e.summary.value if v.HasField("simple_value")}
    assert all(scalars[(f"metrics/{k}", 6)] == pytest.approx(measured[0][k], rel=1e-6) for k in values)
    # ... and the run's report page has each of them in its table of bests.
    assert report.main([str(run)]) == 0
    shown = re.findall(r"<tr><td>(\w+)</td><td>([\d.e-]+)</td>", (run / "report" / "index.html").read_text())
    assert {k for k, _ in shown} >= {k for k in values if "_std" not in k}, shown
    assert res.stderr.count("generator exported") == 1
    assert sorted(p.name for p in run.iterdir()) == sorted([
        ".lock", "checkpoints", "config.json", "discriminator.json", "discriminator.safetensors",
        "generator-best.json", "generator-best.safetensors", "generator.json", "generator.safetensors",
        "metrics.jsonl", "report", "samples", "tensorboard", "wandb", "wandb_run_id.txt"])


# ---------------------------------------------------------------------------------------------
# Faults a user meets: damaged checkpoints, other data, torn logs, NaN, full disks, signals.


class _Poison:
    def __reduce__(self):
        return os.system, ("echo owned",)


def _replace_recorded(file: Path, data: bytes) -> None:
    """Replace a checkpoint file and its size and sha256 in the state file: damage that passes
    the hash check."""
    file.write_bytes(data)
    path = file.parent / ckpt.STATE_FILE
    state = json.loads(path.read_text())
    state["files"][file.name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    path.write_text(json.dumps(state))


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def eight_steps(tmp_path_factory, synthetic_shards) -> Path:
    """A finished 8-step run, checkpoints at steps 4 and 8, for tests to copy and damage."""
    run = tmp_path_factory.mktemp("eight") / "run"
    train(tiny(synthetic_shards, run, max_steps=8))
    return run


@pytest.mark.parametrize("victim,damage", [
    ("model.safetensors", 1000), ("random_states_0.pkl", 100), ("model_1.safetensors", "flip"),
    ("random_states_0.pkl", "garbage"), ("random_states_0.pkl", "no-rng"), ("optimizer.bin", "poison"),
    (ckpt.STATE_FILE, "no-files")])
def test_resume_skips_a_damaged_checkpoint(tmp_path, synthetic_shards, eight_steps, capsys, victim, damage):
    """A truncated, bit-flipped or unloadable file in the newest checkpoint (unloadable bytes with
    their record updated pass the hash check; Accelerate would skip an unloadable RNG state
    silently), or a state file without file records: --resume auto takes the one before and says
    why; an explicit --resume of it is a one-line error naming the file."""
    run = tmp_path / "run"
    shutil.copytree(eight_steps, run)
    unbroken = sha(run / "generator.safetensors")
    newest = ckpt.complete_checkpoints(run)[-1]
    file = newest / victim
    if damage == "flip":
        data = bytearray(file.read_bytes())
        data[-1] ^= 0xFF
        file.write_bytes(data)
        problem = f"{file}: sha256 differs from the one saved"
    elif damage == "garbage":
        _replace_recorded(file, b"these bytes are no pickle" * 10)
        problem = rf"{file}: cannot be loaded \(\w+: "  # the error type varies with the bytes
    elif damage == "no-rng":
        _replace_recorded(file, _torch_bytes({"step": 0}))
        problem = rf"{file}: cannot be loaded \(ValueError: no 'random_state'\)"
    elif damage == "poison":
        _replace_recorded(file, _torch_bytes(_Poison()))
        problem = rf"{file}: cannot be loaded \(UnpicklingError: Weights only load failed"
    elif damage == "no-files":
        state = json.loads(file.read_text())
        del state["files"]
        file.write_text(json.dumps(state))
        problem = f"{file}: records no files"
    else:
        os.truncate(file, damage)
        problem = rf"{file}: {damage} bytes, but \d+ were saved"
    with pytest.raises(ValueError, match=f"--resume {newest}: {problem}"):
        ckpt.resolve_resume(run, str(newest))
    from facegan.train import main

    capsys.readouterr()
    assert main(_flags(synthetic_shards, run, **{"resume": newest, "max-steps": 8})) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(file) in err and "owned" not in err
    path, notes = ckpt.resolve_resume(run, "auto")
    assert path.name == "step-000000004" and len(notes) == 1 and str(file) in notes[0]
    train(tiny(synthetic_shards, run, max_steps=8))  # resumes from step 4 and redoes steps 5-8
    assert f"skipping checkpoint step-000000008: {file}" in capsys.readouterr().err
    assert sha(run / "generator.safetensors") == unbroken  # exact, as if nothing had happened


def test_resume_refuses_data_of_another_resolution(tmp_path, synthetic_shards, capsys):
    from facegan.pack import pack
    from facegan.sources.synthetic import SyntheticSource
    from facegan.train import main

    run = tmp_path / "run"
    train(tiny(synthetic_shards, run, max_steps=4))
    shards64 = tmp_path / "synthetic-64"
    pack(SyntheticSource(8, seed=0, size=64), shards64, size=64, shard_size=4, progress=False)
    capsys.readouterr()
    assert main(_flags(shards64, run, **{"max-steps": 8})) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "step-000000004 was trained at 32 px, not 64 px" in err


def test_torn_metrics_line_is_dropped_with_a_warning(tmp_path, synthetic_shards, capsys):
    run = tmp_path / "run"
    train(tiny(synthetic_shards, run, max_steps=4))
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "kimg": 0.04, "loss/D"')  # what a power loss leaves
    train(tiny(synthetic_shards, run, max_steps=8))
    assert f"{run / 'metrics.jsonl'}: line 3 is torn" in capsys.readouterr().err
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6, 8]


def test_no_grid_after_a_non_finite_step(tmp_path, synthetic_shards):
    """Sampled every 2 steps but checked for NaN only every 10 when logging: no black grid of a
    step at or after the first non-finite loss is written."""
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss at step (\d+)") as e:
        train(tiny(synthetic_shards, run, max_steps=40, lr_d=1e30, log_every=10, sample_every=2,
                   ckpt_every=20, loss="hinge", d_batchnorm=False))
    bad = int(str(e.value).split("step ")[1].split(";")[0])
    assert bad < 10  # the case this test is about: NaN before the first log check
    steps = [int(p.stem.split("-")[1]) for p in (run / "samples").glob("step-*.png")]
    assert all(s < bad for s in steps), (bad, steps)


def test_divergence_with_finite_losses_stops_the_run(tmp_path, synthetic_shards, capsys):
    """--lr-g/--lr-d 1e6: loss/G ~1e12 from step 1, finite. The guard warns ("diverging" and the
    evidence), holds back grids and checkpoints, and after --divergence-steps (100) consecutive
    steps stops in one line, exit 1, with nothing saved past the last healthy step; a resume
    with sane learning rates starts over. Off, the same run writes its wrecked G."""
    run = tmp_path / "run"
    wild = dict(max_steps=120, lr_g=1e6, lr_d=1e6, log_every=10, ckpt_every=10, sample_every=10)
    from facegan.train import main

    capsys.readouterr()
    flags = {k.replace("_", "-"): v for k, v in wild.items()}
    assert main(_flags(synthetic_shards, run, **flags)) == 1
    err = capsys.readouterr().err
    warning = next(line for line in err.splitlines() if "warning: diverging" in line)
    assert "since step 1: loss/D" in warning and "within 100" in warning
    error = err.strip().splitlines()[-1]
    assert error.startswith("facegan/train.py: error: diverging for 100 consecutive steps since step 1") and \
        "last checkpoint: none" in error and "--divergence-guard false" in error
    assert ckpt.complete_checkpoints(run) == [] and not (run / "samples").exists()
    assert not (run / "generator.safetensors").exists()
    logged = [json.loads(x)["loss/G"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(logged) == 9 and all(np.isfinite(v) and v > 1e6 for v in logged)  # steps 10-90: finite, far out
    train(tiny(synthetic_shards, run, max_steps=4))  # resumable: sane learning rates start over
    assert [p.name for p in ckpt.complete_checkpoints(run)] == ["step-000000004"]
    train(tiny(synthetic_shards, tmp_path / "off", **wild, divergence_guard=False))
    assert len(ckpt.complete_checkpoints(tmp_path / "off")) == 3


def test_short_run_still_writes_a_final_grid(tmp_path, synthetic_shards):
    run = tmp_path / "run"
    train(tiny(synthetic_shards, run, max_steps=3, sample_every=500, ckpt_every=500))
    assert [p.name for p in (run / "samples").iterdir()] == ["step-000000003.png"]
    train(tiny(synthetic_shards, run, max_steps=3, sample_every=500, ckpt_every=500))  # nothing to do
    assert [p.name for p in (run / "samples").iterdir()] == ["step-000000003.png"]


def test_max_minutes_stops_cleanly_and_a_resume_goes_on(tmp_path, synthetic_shards, monkeypatch):
    """--max-minutes alone bounds the run: at the first stop check after the deadline it saves,
    exports and writes its last grid like a finished run; a new start runs its own minutes."""
    monkeypatch.setattr(upkeep, "SIGNAL_CHECK_EVERY", 5)
    run = tmp_path / "run"
    cfg = tiny(synthetic_shards, run, max_steps=0, max_minutes=1e-6, sample_every=500, ckpt_every=500)
    train(cfg)
    assert [p.name for p in ckpt.complete_checkpoints(run)] == ["step-000000005"]
    assert ckpt.load_generator(run / "generator.safetensors")[1]["step"] == 5
    assert [p.name for p in (run / "samples").iterdir()] == ["step-000000005.png"]
    train(cfg)
    assert [p.name for p in ckpt.complete_checkpoints(run)] == ["step-000000005", "step-000000010"]
    with pytest.raises(ValueError, match="lr_schedule=cosine decays over the training length: set --max-kimg"):
        dataclasses.replace(cfg, lr_schedule="cosine").validate()
    with pytest.raises(ValueError, match=r"^lr_final=1.5: must be in \[0, 1\]"):
        dataclasses.replace(cfg, lr_schedule="cosine", max_kimg=1.0, lr_final=1.5).validate()
    with pytest.raises(ValueError, match=r"^lr_decay_kimg=100, lr_final=0: they shape a linear or cosine"):
        dataclasses.replace(cfg, lr_decay_kimg=100.0).validate()


def test_full_disk_during_export_is_one_line_and_resumable(tmp_path, synthetic_shards, capsys, monkeypatch):
    """safetensors reports a full disk as SafetensorError naming no file; the run stops with one
    line naming the file, the checkpoint before it stays whole, and --resume auto goes on."""
    from safetensors import SafetensorError

    from facegan.train import main

    run = tmp_path / "run"
    real_save, calls = ckpt.save_file, []

    def full_disk(tensors, path, **kw):
        calls.append(path)
        if len(calls) == 3:  # step 4: G and D exports; step 8: G's export
            raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                                  'message: "No space left on device" })')
        return real_save(tensors, path, **kw)

    monkeypatch.setattr(ckpt, "save_file", full_disk)
    capsys.readouterr()
    assert main(_flags(synthetic_shards, run, **{"max-steps": 8, "ckpt-every": 4})) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"facegan/train.py: error: {run / 'generator.safetensors'}: cannot write ("), err
    assert "No space left on device" in err and "MiB free on its disk" in err
    assert ckpt.read_network_meta(run / "generator.safetensors")["step"] == 4  # the last whole export
    assert not list(run.glob("*.tmp")) and not list((run / "checkpoints").glob(".tmp-*"))
    monkeypatch.undo()
    assert ckpt.resolve_resume(run, "auto")[0].name == "step-000000008"
    assert main(_flags(synthetic_shards, run, **{"max-steps": 12, "ckpt-every": 4})) == 0
    assert ckpt.read_network_meta(run / "generator.safetensors")["step"] == 12


def test_full_disk_during_checkpoint_leaves_no_partial_folder(tmp_path, synthetic_shards, monkeypatch):
    """torch.save reports a full disk as RuntimeError('unexpected pos ...'): one OSError naming
    the checkpoint folder, which is removed, freeing its space."""
    run = tmp_path / "run"
    train(tiny(synthetic_shards, run, max_steps=4))
    real_save = torch.save

    def full_disk(obj, f, *args, **kw):
        if "optimizer" in str(f):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 2816 vs 2708")
        return real_save(obj, f, *args, **kw)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError) as e:
        train(tiny(synthetic_shards, run, max_steps=8))
    assert e.value.filename == str(run / "checkpoints" / ".tmp-step-000000008")
    assert e.value.strerror.startswith("cannot write ([enforce fail at inline_container.cc:672] . unexpected pos")
    monkeypatch.undo()
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-000000004"]


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_non_finite_numbers_are_refused(value):
    with pytest.raises(ValueError, match=f"max_kimg={value}: must be a finite number"):
        config_from_args(["--data", "d", "--run-dir", "r", f"--max-kimg={value}"])
    with pytest.raises(ValueError, match=f"r1_gamma={value}: must be a finite number"):
        config_from_args(["--data", "d", "--run-dir", "r", f"--r1-gamma={value}"])


def test_bool_flags_work_bare_like_evaluate_and_sample():
    cfg, _ = config_from_args(["--data", "d", "--run-dir", "r", "--cpu", "--hflip", "false"])
    assert cfg.cpu is True and cfg.hflip is False
    cfg, _ = config_from_args(["--data", "d", "--run-dir", "r", "--cpu", "false"])
    assert cfg.cpu is False


def test_auto_precision_is_bf16_on_a_gpu_under_plain_accelerate_launch(monkeypatch):
    """Plain `accelerate launch` exports ACCELERATE_MIXED_PRECISION=no: auto must not read that as
    a request for fp32. The start line says where the precision came from."""
    from facegan.runtime import resolve_precision

    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", cpu=False) == ("bf16", "auto: GPU with bf16")
    assert resolve_precision("auto", cpu=True) == ("no", "auto: CPU")
    assert resolve_precision("no", cpu=False) == ("no", "--mixed-precision")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    assert resolve_precision("auto", cpu=False) == ("fp16", "launcher: ACCELERATE_MIXED_PRECISION=fp16")


def test_launches_that_run_other_than_asked_are_warned(monkeypatch):
    from types import SimpleNamespace

    from facegan.runtime import process_warnings

    one_cpu_process = SimpleNamespace(num_processes=1, device=torch.device("cpu"))
    for name in ("LOCAL_WORLD_SIZE", "WORLD_SIZE", "MASTER_ADDR", "ACCELERATE_USE_CPU"):
        monkeypatch.delenv(name, raising=False)
    assert process_warnings(one_cpu_process) == []
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # accelerate_config.yaml's old num_processes: 8
    [warning] = process_warnings(SimpleNamespace(num_processes=8, device=torch.device("cpu")))
    assert "8 processes on this node but 2 CPU core(s)" in warning
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    # What `accelerate launch --cpu --num_processes 2` leaves: a rendezvous address, one process.
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    [warning] = process_warnings(one_cpu_process)
    assert "asked for several processes but started 1" in warning and "--multi_gpu --num_processes" in warning


def test_second_ctrl_c_aborts_at_once(tmp_path):
    from facegan.upkeep import StopSignal

    before = signal.getsignal(signal.SIGINT)
    stop = StopSignal(tmp_path, announce=False)
    try:
        os.kill(os.getpid(), signal.SIGINT)  # the first: remembered, the loop saves and exits
        time.sleep(0.01)
        assert stop.received == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGINT) is before


def test_second_ctrl_c_is_one_line_and_exit_130(tmp_path, synthetic_shards):
    """Ctrl-C at step 3 asks for a save at the next signal check (none comes: checks are patched
    away); a second at step 5 aborts: one line, exit 130, no traceback, nothing saved."""
    ctrl_c = ("upkeep.SIGNAL_CHECK_EVERY = 10**9\n"
              "def after_step(step):\n    if step in (3, 5):\n        os.kill(os.getpid(), signal.SIGINT)")
    run = tmp_path / "run"
    res = _run(wrapped_train(tmp_path, ctrl_c) + _flags(synthetic_shards, run, **{"max-steps": 100,
                                                                                   "ckpt-every": 100}))
    assert res.returncode == 130, res.stderr[-2000:]
    assert "Traceback" not in res.stderr and "KeyboardInterrupt" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == ("facegan/train.py: aborted by Ctrl-C without saving; "
                                                   "--resume auto continues from the newest checkpoint")
    assert ckpt.complete_checkpoints(run) == []


def test_it_learns(tmp_path, synthetic_shards, standin):
    """A tiny GAN on the 103 synthetic faces: after 150 steps (seconds) its stand-in FID against 16
    faces of the same distribution is well below the same G's at step 0 (an untrained G gives one
    grey smudge for every z). Few images keep Inception's CPU time short; the gap is wide."""
    from facegan import metrics
    from facegan.inception import Inception
    from facegan.pack import pack
    from facegan.shardset import load_shardset
    from facegan.sources.synthetic import SyntheticSource

    reference = pack(SyntheticSource(16, seed=0, size=32), tmp_path / "ref", size=32, shard_size=16, progress=False)
    cfg = tiny(synthetic_shards, tmp_path / "run", max_steps=150, batch_size=32, ngf=16, ndf=16, ckpt_every=150,
               log_every=50, sample_every=150, num_workers=1, deterministic=False)
    untrained, _ = nets(cfg)
    inception, shardset = Inception(standin), load_shardset(tmp_path / "ref")
    assert reference["count"] == shardset.count == 16

    def fid(g):
        record = metrics.score_generator(metrics.Extractors(inception), ["fid"], g.eval(), shardset, 16,
                                         batch_size=16, num_workers=0, cache_dir=tmp_path / "cache")
        return metrics.fid_value(record)

    before = fid(untrained.g)
    after = fid(ckpt.load_generator(train(cfg))[0])
    assert after < 0.5 * before, (before, after)  # 43.2 -> 7.8 when written
