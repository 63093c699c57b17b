"""Resume: bitwise exact wherever a run stopped, damaged checkpoints, other timelines, other data, DDP."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import signal
from pathlib import Path

import pytest
import torch

from facegan import report
from facegan.networks import exports
from facegan.train import config_from_args
from facegan.training import checkpoint as ckpt
from facegan.training import loop as training_loop
from facegan.training import stop
from facegan.training.loop import Hooks, train

from .runs import (
    TORCHRUN,
    TRAIN_PY,
    _flags,
    _run,
    env,
    read_wandb,
    sha,
    sigterm_at,
    tensorboard_runs,
    tiny,
    wrapped_train,
)

OPTS = {"default": {},  # channels_last + fused Adam
        "plain": {"channels_last": False, "fused_adam": False},
        "compile": {"compile": "default"},
        "cudagraphs": {"compile": "reduce-overhead"}}  # CUDA graphs on a GPU; plain inductor on CPU


@pytest.mark.parametrize("recipe,precision,opts", [
    ("dcgan", "no", "default"), ("strong", "no", "default"), ("dcgan", "fp16", "default"),
    ("strong", "bf16", "default"), ("dcgan", "no", "plain"), ("wgan", "no", "default"), ("modern", "no", "default"),
    ("stylegan2", "bf16", "default"),
    pytest.param("dcgan", "bf16", "compile", marks=pytest.mark.slow),
    # reduce-overhead is CUDA graphs on a GPU and plain inductor on a CPU, which the case above covers
    pytest.param("strong", "bf16", "cudagraphs", marks=[pytest.mark.slow, pytest.mark.skipif(
        not torch.cuda.is_available(), reason="CUDA graphs need a GPU; on a CPU it is the compile case again")])])
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
    if recipe == "stylegan2":  # style mixing at every forward, w_avg, per-pixel noise, lazy R1 and path length, EMA
        extra.update(arch="stylegan2", loss="nonsat", r1_gamma=1.0, reg_every=2, ema=True, g_mixing=1.0,
                     pl_weight=2.0, pl_every=3)
    one = tiny(synthetic_shards, tmp_path / "one", **extra)
    train(one)
    two = tiny(synthetic_shards, tmp_path / "two", **extra)
    def ask_to_stop(state):  # at step 4, as `touch RUN/STOP` would
        if state.step == 4:
            (tmp_path / "two" / stop.STOP_FILE).touch()

    with monkeypatch.context() as patch:  # it saves at step 4 and exits (the schedule keeps its length)
        patch.setattr(stop, "SIGNAL_CHECK_EVERY", 4)
        train(two, Hooks(after_step=ask_to_stop))
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
    if recipe == "stylegan2":  # the path-length penalty ran at G steps 0, 3 and 6 (logged with steps 2, 4, 8)
        assert ["reg/pl" in r for r in one_m] == [True, True, False, True]
        assert [r.get("reg/pl") for r in one_m] == [r.get("reg/pl") for r in two_m] and one_m[-1]["reg/pl"] > 0
    if recipe == "wgan":  # 8 steps x 5 D steps x 2 micro-batches x 4 images; lr read from Adam
        assert [r["kimg"] for r in one_m] == [0.08, 0.16, 0.24, 0.32] and "reg/gp" in one_m[0]
        lrs = [r["lr/G"] for r in one_m]
        assert lrs[0] < lrs[1] > lrs[2] > lrs[3] > 0  # warm-up to 0.1 kimg, then cosine decay


def test_the_result_does_not_depend_on_when_the_run_stopped(tmp_path, synthetic_shards, monkeypatch):
    """Stop anywhere, resume to the same bits: 30 steps saved only at the end, against the same
    command saving every 3 steps and stopped by SIGTERM at its first signal check (step 10), then
    resumed; and against one saving every 7 steps, killed with kill -9 at step 12 and resumed
    from step 7. Two loader workers sending 4 batches a message, and stream segments of 20
    batches, so the resumes start inside a message, with the workers' turns rotated, and cross a
    segment boundary."""
    monkeypatch.setattr(training_loop, "SEGMENT_IMAGES", 160)
    flags = {"max-steps": 30, "log-every": 5, "sample-every": 100, "num-workers": 2}

    def start(run, hooks=None, **kw):
        train(config_from_args(_flags(synthetic_shards, run, **flags, **kw))[0], hooks)

    start(tmp_path / "one", **{"ckpt-every": 1000})
    assert [p.name for p in ckpt.complete_checkpoints(tmp_path / "one")] == ["step-000000030"]
    start(tmp_path / "two", sigterm_at(1), **{"ckpt-every": 3})
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


class StepClock:
    """time.monotonic for budget.py that advances one second per training step: a run's clock
    that does not depend on the machine."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_time_budgeted_anneal_is_planned_once_and_resumes_exactly(tmp_path, synthetic_shards, monkeypatch):
    """--max-minutes 1 --lr-decay-minutes 0.5 on a clock of 1 s a step: base lr until 30 s, then
    the plan (at the step-30 check: 30 steps' images at the measured rate) decays the lr to
    --lr-final over the next 30 steps and ends the run by images at step 60. Stopped after the plan
    (step 40) or before it (step 20, its 20 s kept in the checkpoint), the resumed runs make the
    same plan and end with the same bits."""
    clock = StepClock()
    stop_at = {"step": None}

    def after_step(state):
        clock.now += 1.0
        if state.step == stop_at["step"]:
            os.kill(os.getpid(), signal.SIGTERM)

    hooks = Hooks(after_step=after_step, now=clock.monotonic)
    flags = {"max-steps": 0, "max-minutes": 1, "lr-decay-minutes": 0.5, "lr-schedule": "linear", "lr-final": 0.1,
             "log-every": 5, "sample-every": 100, "ckpt-every": 1000, "num-workers": 2}

    def start(run):
        train(config_from_args(_flags(synthetic_shards, run, **flags))[0], hooks)

    start(tmp_path / "one")
    state = ckpt.read_state(ckpt.complete_checkpoints(tmp_path / "one")[-1])
    assert state["step"] == 60 and state["anneal"] == {"step": 30, "start_nimg": 30 * 8, "end_nimg": 60 * 8}
    assert state["train_seconds"] == 60.0
    lrs = {r["step"]: r["lr/G"] for r in map(json.loads, (tmp_path / "one" / "metrics.jsonl").read_text().splitlines())}
    base = lrs[5]
    assert lrs[5] == lrs[30] == base and base > lrs[35] > lrs[45] > lrs[55] > lrs[60] - 1e-12
    assert lrs[60] == pytest.approx(base * (0.1 + 0.9 / 30), rel=1e-6)  # set before the last step
    for run, stop_step in (("after-plan", 31), ("before-plan", 11)):
        stop_at["step"] = stop_step
        start(tmp_path / run)
        saved = [p.name for p in ckpt.complete_checkpoints(tmp_path / run)]
        assert saved[-1] == f"step-0000000{stop_step + 9}", (run, saved)
        stop_at["step"] = None
        start(tmp_path / run)
        for net in ("generator", "discriminator"):
            assert sha(tmp_path / run / f"{net}.safetensors") == sha(tmp_path / "one" / f"{net}.safetensors"), run


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
    assert exports.read_network_meta(run / "generator.safetensors")["step"] == 5
    # A fresh start (--resume none) in the folder sets every earlier checkpoint aside too.
    train(tiny(synthetic_shards, run, max_steps=2, ckpt_every=2, resume="none"))
    assert [p.name for p in ckpt.complete_checkpoints(run)] == ["step-000000002"]
    assert len(list((run / "checkpoints").glob("abandoned-*"))) == 2


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
    from facegan.data.pack import pack
    from facegan.data.sources.synthetic import SyntheticSource
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


@pytest.mark.slow
def test_two_process_ddp_resumes_a_one_process_run(tmp_path, small_shards, standin, vgg_standin):
    """The modern preset (r3gan, rpgan + R1/R2, EMA, ADA), conditioned on two attributes, for 3
    steps on one process, then a resume on 2 (a SLURM requeue on more GPUs): the image count, the
    stop point, kimg and ADA's p carry over, DDP keeps the ranks' parameters identical, and every
    metric runs with every rank measuring its share and logging to metrics.jsonl, W&B and
    TensorBoard."""
    run = tmp_path / "run"
    modern = {"preset": "modern", "ada-interval": 1, "ada-kimg": 0.1, "ada-target": -1.0,  # p rises every step
              "condition": "Smiling,Eyeglasses",  # a conditional G and projection D under DDP too
              "balance": "Mouth_Slightly_Open"}  # and a balanced stream
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
    tb = tensorboard_runs(run / "tensorboard")["."]  # its step: images seen, 72 at step 6
    assert all([(e.step, e.value) for e in tb.Scalars(f"metrics/{k}")] ==
               [(72, pytest.approx(measured[0][k], rel=1e-6))] for k in values)
    # ... and the run's report page has each of them in its table of bests.
    assert report.main([str(run)]) == 0
    shown = re.findall(r"<tr><td>(\w+)</td><td>([\d.e-]+)</td>", (run / "report" / "index.html").read_text())
    assert {k for k, _ in shown} >= {k for k in values if "_std" not in k}, shown
    assert res.stderr.count("generator exported") == 1
    assert sorted(p.name for p in run.iterdir()) == sorted([
        ".lock", "balance.json", "checkpoints", "config.json", "discriminator.json", "discriminator.safetensors",
        "generator-best.json", "generator-best.safetensors", "generator.json", "generator.safetensors",
        "metrics.jsonl", "report", "samples", "tensorboard", "wandb", "wandb_run_id.txt"])

