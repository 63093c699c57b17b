"""Faults a run meets: a busy run folder, NaN and divergence, full disks, stop signals, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from facegan.networks import exports
from facegan.training import checkpoint as ckpt
from facegan.training.loop import NonFiniteLoss, train

from .conftest import REPO
from .runs import (
    TORCHRUN,
    TRAIN_PY,
    _flags,
    _run,
    env,
    sha,
    tiny,
    wrapped_train,
)

LOCK_HOLDER = """
import sys, time
sys.path.insert(0, {repo!r})
from facegan.training.lock import RunLock
from facegan.metrics import features
from facegan.metrics import registry
from facegan.metrics import score
from facegan.networks import exports
RunLock({run!r}).acquire()
print("held", flush=True)
time.sleep(300)
"""


def test_a_second_start_on_a_run_folder_is_refused(tmp_path, synthetic_shards, capsys):
    """The run folder is locked (flock on RUN/.lock) by the process that trains in it: a second
    start exits 1 in one line naming the holder; the kernel drops the lock of a killed holder."""
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER.format(repo=str(REPO), run=str(run))],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        from facegan.train import main

        capsys.readouterr()
        assert main(_flags(synthetic_shards, run)) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{run}: another facegan run is using this folder (pid {holder.pid} on host " \
            in err, err
        assert not (run / "metrics.jsonl").exists() and not (run / "config.json").exists()
    finally:
        holder.kill()  # kill -9: no clean-up runs, the kernel releases the lock
        holder.wait()
    train(tiny(synthetic_shards, run, max_steps=2))
    assert exports.read_network_meta(run / "generator.safetensors")["step"] == 2


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "directory"])
def test_a_lock_that_is_not_a_plain_file_is_refused_and_what_it_names_is_untouched(tmp_path, synthetic_shards,
                                                                                   capsys, kind):
    """A shared run folder's `.lock` made a symlink (or hard link) to another file: training would
    have truncated and overwritten that file. It now refuses in one line saying what to do (not
    the full-disk advice), before writing anything, and the file keeps its bytes."""
    from facegan.train import main

    run, precious = tmp_path / "run", tmp_path / "precious.txt"
    run.mkdir()
    precious.write_text("years of notes\n")
    lock = run / ".lock"
    {"symlink": lambda: lock.symlink_to(precious), "hardlink": lambda: os.link(precious, lock),
     "directory": lock.mkdir}[kind]()
    capsys.readouterr()
    assert main(_flags(synthetic_shards, run)) == 1
    err = capsys.readouterr().err
    what = {"symlink": "is a symbolic link", "hardlink": "has other hard links", "directory": "is a directory"}[kind]
    assert err.count("\n") == 1 and f"{lock}: the run folder's lock file {what}" in err, err
    assert f"rm {lock}" in err and "once there is room" not in err, err
    assert precious.read_text() == "years of notes\n"
    assert not (run / "config.json").exists() and not (run / "metrics.jsonl").exists()


def test_os_errors_give_the_full_disk_advice_only_for_a_full_disk():
    import errno

    from facegan.train import describe_os_error

    full = describe_os_error(OSError(errno.ENOSPC, "No space left on device", "RUN/x"))
    assert full.startswith("RUN/x: No space left on device; once there is room, --resume auto"), full
    quota = describe_os_error(OSError(errno.EDQUOT, "Disk quota exceeded", "RUN/x"))
    assert "once there is room" in quota
    for code, text in ((errno.EROFS, "Read-only file system"), (errno.ENOTDIR, "Not a directory"),
                       (errno.EACCES, "Permission denied")):
        line = describe_os_error(OSError(code, text, "RUN/x"))
        assert line.startswith(f"RUN/x: {text}; fix that path") and "room" not in line, line


def test_non_finite_loss_stops_naming_the_step(tmp_path, synthetic_shards):
    run = tmp_path / "run"
    no_bn = dict(loss="hinge", d_batchnorm=False)  # without BatchNorm, huge D weights overflow
    train(tiny(synthetic_shards, run, max_steps=4, **no_bn))
    before = sha(run / "generator.safetensors")
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss at step \d+"):
        train(tiny(synthetic_shards, run, max_steps=40, lr_d=1e30, ckpt_every=20, **no_bn))
    assert [p.name for p in ckpt.complete_checkpoints(run)] == ["step-000000004"]  # the last good one
    assert sha(run / "generator.safetensors") == before


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
    evidence), holds back grids and checkpoints, and after --divergence-steps (30 here; 100 by
    default) consecutive steps stops in one line, exit 1, with nothing saved past the last healthy
    step; a resume with sane learning rates starts over. Off, the same run writes its wrecked G."""
    run = tmp_path / "run"
    wild = dict(max_steps=50, lr_g=1e6, lr_d=1e6, log_every=5, ckpt_every=5, sample_every=5, divergence_steps=30)
    from facegan.train import main

    capsys.readouterr()
    flags = {k.replace("_", "-"): v for k, v in wild.items()}
    assert main(_flags(synthetic_shards, run, **flags)) == 1
    err = capsys.readouterr().err
    warning = next(line for line in err.splitlines() if "warning: diverging" in line)
    assert "since step 1: loss/D" in warning and "within 100" in warning
    error = err.strip().splitlines()[-1]
    assert error.startswith("facegan/train.py: error: diverging for 30 consecutive steps since step 1") and \
        "last checkpoint: none" in error and "--divergence-guard false" in error
    assert ckpt.complete_checkpoints(run) == [] and not (run / "samples").exists()
    assert not (run / "generator.safetensors").exists()
    logged = [json.loads(x)["loss/G"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(logged) == 5 and all(np.isfinite(v) and v > 1e6 for v in logged)  # steps 5-25: finite, far out
    train(tiny(synthetic_shards, run, max_steps=4))  # resumable: sane learning rates start over
    assert [p.name for p in ckpt.complete_checkpoints(run)] == ["step-000000004"]
    train(tiny(synthetic_shards, tmp_path / "off", **wild, divergence_guard=False))
    assert len(ckpt.complete_checkpoints(tmp_path / "off")) == 3  # (--keep 3 of 10)


def test_full_disk_during_export_is_one_line_and_resumable(tmp_path, synthetic_shards, capsys, monkeypatch):
    """safetensors reports a full disk as SafetensorError naming no file; the run stops with one
    line naming the file, the checkpoint before it stays whole, and --resume auto goes on."""
    from safetensors import SafetensorError

    from facegan.train import main

    run = tmp_path / "run"
    real_save, calls = exports.save_file, []

    def full_disk(tensors, path, **kw):
        calls.append(path)
        if len(calls) == 3:  # step 4: G and D exports; step 8: G's export
            raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                                  'message: "No space left on device" })')
        return real_save(tensors, path, **kw)

    monkeypatch.setattr(exports, "save_file", full_disk)
    capsys.readouterr()
    assert main(_flags(synthetic_shards, run, **{"max-steps": 8, "ckpt-every": 4})) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"facegan/train.py: error: {run / 'generator.safetensors'}: cannot write ("), err
    assert "No space left on device" in err and "MiB free on its disk" in err
    assert exports.read_network_meta(run / "generator.safetensors")["step"] == 4  # the last whole export
    assert not list(run.glob("*.tmp")) and not list((run / "checkpoints").glob(".tmp-*"))
    monkeypatch.undo()
    assert ckpt.resolve_resume(run, "auto")[0].name == "step-000000008"
    assert main(_flags(synthetic_shards, run, **{"max-steps": 12, "ckpt-every": 4})) == 0
    assert exports.read_network_meta(run / "generator.safetensors")["step"] == 12


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


@pytest.mark.slow
@pytest.mark.parametrize("how", ["sigint-group", "torchrun-sigterm-group"])
def test_stop_request_saves_and_exits_zero(tmp_path, synthetic_shards, how):
    """SIGTERM or Ctrl-C sent to the whole process group, loader workers included (what scancel,
    Kubernetes, torchrun and a terminal do): every rank saves and exits; the workers ignore the
    signal instead of dying first. (RUN_DIR/STOP, what the launch scripts write, is
    test_launch.py's: 2 ranks stop on it, and the restart removes it and resumes exactly.)"""
    run = tmp_path / "run"
    prefix = TORCHRUN if how.startswith("torchrun") else []
    # Under torchrun: stylegan2 with lazy path-length regularisation every 2nd step, whose phase
    # all-reduces its gradients like the others (the ranks stay identical) and pl_mean over ranks.
    style = {"arch": "stylegan2", "loss": "nonsat", "pl_weight": 2.0, "pl_every": 2} if prefix else {}
    proc = subprocess.Popen([*(prefix or [sys.executable]), TRAIN_PY] + _flags(
        synthetic_shards, run, **{"max-steps": 100000, "ckpt-every": 100000, "log-every": 10, "num-workers": 2},
        **{k.replace("_", "-"): v for k, v in style.items()}),
        cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    while not (run / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.2)
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
    assert len(state["rank_param_sha256"]) == (2 if prefix else 1) and len(set(state["rank_param_sha256"])) == 1
    assert exports.read_network_meta(run / "generator.safetensors")["step"] == step
    if prefix:
        assert exports.load_generator(run / "generator.safetensors")[0].pl_mean > 0
        assert any(json.loads(line).get("reg/pl", 0) > 0 for line in (run / "metrics.jsonl").read_text().splitlines())
    # The restart (a requeued job) trains on.
    train(tiny(synthetic_shards, run, max_steps=step + 4, num_samples=4, **style))
    assert json.loads((ckpt.complete_checkpoints(run)[-1] / ckpt.STATE_FILE).read_text())["step"] == step + 4


def test_second_ctrl_c_aborts_at_once(tmp_path):
    from facegan.training.stop import StopSignal

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
    ctrl_c = ("stop.SIGNAL_CHECK_EVERY = 10**9\n"
              "def after_step(step):\n    if step in (3, 5):\n        os.kill(os.getpid(), signal.SIGINT)")
    run = tmp_path / "run"
    res = _run(wrapped_train(tmp_path, ctrl_c) + _flags(synthetic_shards, run, **{"max-steps": 100,
                                                                                   "ckpt-every": 100}))
    assert res.returncode == 130, res.stderr[-2000:]
    assert "Traceback" not in res.stderr and "KeyboardInterrupt" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == ("facegan/train.py: aborted by Ctrl-C without saving; "
                                                   "--resume auto continues from the newest checkpoint")
    assert ckpt.complete_checkpoints(run) == []
