"""launch/: syntax, the resolved commands (a fake 2-node SLURM job), cpu_ddp.sh for real, and
the pack tool's shard-count warning. (The STOP file the SLURM script writes is tested with the
other stop requests in test_faults.py.)"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from facegan.pack import main as pack_main
from facegan.training import checkpoint as ckpt
from tests.conftest import REPO
from tests.runs import _flags, env

LAUNCH = REPO / "launch"
SCRIPTS = ["single_gpu.sh", "multi_gpu.sh", "cpu_ddp.sh", "slurm_multinode.sbatch", "common.sh"]


def bash(script: str, *args: str, extra_env: dict | None = None, timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(LAUNCH / script), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**env(), **(extra_env or {})})


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_parse(script):
    res = subprocess.run(["bash", "-n", str(LAUNCH / script)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_slurm_dry_run_resolves_two_nodes(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "scontrol").write_text('#!/bin/sh\n[ "$1 $2" = "show hostnames" ] && printf "gpu07\\ngpu08\\n"\n')
    (fake / "scontrol").chmod(0o755)
    slurm = {"SLURM_NNODES": "2", "SLURM_GPUS_PER_NODE": "h100:4", "SLURM_JOB_NODELIST": "gpu[07-08]",
             "SLURM_JOB_ID": "42", "SLURM_SUBMIT_DIR": str(REPO), "DRY_RUN": "1",
             "PATH": f"{fake}:{os.environ['PATH']}"}
    res = bash("slurm_multinode.sbatch", "shards/celeba-64", "runs/big", "--preset", "strong", extra_env=slurm)
    assert res.returncode == 0, res.stderr
    srun = shlex.split(res.stdout)
    assert srun[:4] == ["srun", "--ntasks=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    node = shlex.split(srun[-1])  # what each node's shell runs
    assert node[:3] == ["python3", "-m", "accelerate.commands.launch"]
    opts = dict(zip(node[3::1], node[4::1]))
    assert (opts["--num_machines"], opts["--num_processes"], opts["--main_process_ip"],
            opts["--main_process_port"], opts["--machine_rank"]) == ("2", "8", "gpu07", "29500", "$SLURM_NODEID")
    assert node[node.index(str(REPO / "facegan" / "train.py")) + 1:] == [
        "--data", "shards/celeba-64", "--run-dir", "runs/big", "--resume", "auto", "--preset", "strong"]
    assert "2 nodes x 4 GPUs, rendezvous gpu07:29500" in res.stderr
    text = (LAUNCH / "slurm_multinode.sbatch").read_text()
    assert "#SBATCH --signal=B:USR1@120" in text and "#SBATCH --requeue" in text


def test_single_and_multi_gpu_dry_run(tmp_path):
    res = bash("single_gpu.sh", "shards/a", "runs/b", "--max-kimg", "10", extra_env={"DRY_RUN": "1"})
    assert res.returncode == 0 and shlex.split(res.stdout) == [
        "python3", "-m", "accelerate.commands.launch", "--config_file", str(REPO / "accelerate_config.yaml"),
        "--num_processes", "1",
        str(REPO / "facegan" / "train.py"), "--data", "shards/a", "--run-dir", "runs/b", "--max-kimg", "10"]
    res = bash("multi_gpu.sh", extra_env={"DRY_RUN": "1", "NUM_GPUS": "4", "DATA": "shards/a", "RUN_DIR": "r"})
    assert res.returncode == 0 and "--multi_gpu --num_processes 4" in res.stdout and "--data shards/a" in res.stdout
    res = bash("cpu_ddp.sh")
    assert res.returncode != 0 and "pass the shard folder as the first argument" in res.stderr
    # Without nvidia-smi (and NUM_GPUS) it said nothing and exited 127.
    bare = tmp_path / "bin"  # a PATH with the tools the scripts use, and no nvidia-smi
    bare.mkdir()
    for tool in ("bash", "dirname", "wc"):
        (bare / tool).symlink_to(shutil.which(tool))
    res = bash("multi_gpu.sh", "shards/a", "r", extra_env={"DRY_RUN": "1", "PATH": str(bare)})
    assert res.returncode == 2 and "nvidia-smi not found" in res.stderr and "set NUM_GPUS=N" in res.stderr


@pytest.mark.slow
def test_cpu_ddp_script_trains_stops_on_sigterm_and_resumes_exactly(tmp_path, small_shards):
    """The documented CPU DDP launch: accelerate launch --multi_gpu --num_processes 2 on a machine
    without CUDA starts two gloo ranks (--cpu --num_processes 2 would start one). A SIGTERM to the
    script (what a scheduler sends) becomes RUN/STOP: both ranks save at a 10-step check and the
    script exits 0 without any launcher traceback; the same command then resumes, and ends with
    the bits of an unbroken 2-process run."""
    def launch(run, **kw):
        flags = _flags(small_shards, run, **{"num-workers": 3, "max-steps": 40, "log-every": 2,
                                                 "sample-every": 100, **kw})[4:]  # all but --data, --run-dir
        return subprocess.Popen(["bash", str(LAUNCH / "cpu_ddp.sh"), str(small_shards), str(run), *flags],
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**env(), "PYTHON": sys.executable})

    one = tmp_path / "one"
    _, err = launch(one, **{"ckpt-every": 1000}).communicate(timeout=300)
    # 2 processes x 3 workers read 4 shards of 24 images: training says so, once
    assert err.count("warning: 4 shard(s) for 6 readers") == 1 and "--shard-size 4 or less" in err
    state = json.loads((ckpt.complete_checkpoints(one)[-1] / ckpt.STATE_FILE).read_text())
    assert state["step"] == 40 and len(state["rank_param_sha256"]) == 2
    assert len(set(state["rank_param_sha256"])) == 1
    assert "2 process(es)" in err and "mixed precision no (auto: CPU)" in err
    two = tmp_path / "two"
    proc = launch(two, **{"ckpt-every": 4})
    deadline = time.time() + 120
    while not (two / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # to the script alone
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert "stop requested" in err and "stop signal received" in err
    assert "Traceback" not in err and "SignalException" not in err, err[-3000:]
    stopped = json.loads((ckpt.complete_checkpoints(two)[-1] / ckpt.STATE_FILE).read_text())["step"]
    assert stopped % 10 == 0 and stopped < 40 and (two / "STOP").exists()
    proc = launch(two, **{"ckpt-every": 4})
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and f"resuming from {ckpt.step_dir(two, stopped)}" in err, err[-3000:]
    assert not (two / "STOP").exists()  # the restart removed the request that ended the last start
    for net in ("generator", "discriminator"):
        assert (one / f"{net}.safetensors").read_bytes() == (two / f"{net}.safetensors").read_bytes(), net


ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(REPO / "accelerate_config.yaml")]


def test_accelerate_config_starts_one_process(tmp_path):
    """The shipped config must not name a GPU count (it said 8: 8 ranks on a 2-core laptop), nor a
    precision that a CPU would train in."""
    res = subprocess.run(ACCELERATE + [str(REPO / "facegan" / "train.py"), "--data", "d", "--run-dir", "r",
                                       "--dry-run"], cwd=REPO, capture_output=True, text=True, timeout=120, env=env())
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.count('"preset"') == 1  # one process printed its config
    # It said bf16 once, and a CPU run under it trained in bf16: now it leaves the choice to facegan.
    if not torch.cuda.is_available():
        assert "dry run: mixed precision no (auto: CPU)" in res.stderr, res.stderr[-2000:]


def test_pack_warns_when_shards_are_fewer_than_readers(tmp_path, capsys):
    argv = ["synthetic", "--num", "30", "--size", "32", "--shard-size", "10", "--no-progress", "--workers", "1"]
    assert pack_main(argv + ["--out", str(tmp_path / "a"), "--readers", "8"]) == 0
    err = capsys.readouterr().err
    assert "warning: 3 shard(s) for 8 readers" in err and "--shard-size 3 or less" in err
    assert pack_main(argv + ["--out", str(tmp_path / "b"), "--readers", "3"]) == 0
    assert "warning" not in capsys.readouterr().err
