"""Trackers: W&B (offline) and TensorBoard as their readers see them, and their one-line errors."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from facegan.train import config_from_args

from .conftest import REPO
from .runs import (
    TRAIN_PY,
    _flags,
    env,
    read_tensorboard,
    read_wandb,
)


def test_trackers_wandb_and_tensorboard(tmp_path, small_shards, standin):
    """--tracker wandb,tensorboard in one run: W&B (offline) and TensorBoard hold the sample grids
    pixel for pixel, every metric, and W&B's summary the best values; no secret is written."""
    secret = "facegan-test-secret-0123456789abcdef0123"
    run = tmp_path / "run"
    code = (f"from facegan.training.loop import train; from tests.runs import tiny; "
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


def test_unknown_tracker_is_one_line(tmp_path, synthetic_shards, capsys):
    with pytest.raises(SystemExit) as e:
        config_from_args(_flags(synthetic_shards, tmp_path / "run", tracker="wandb,mlflow"))
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert "argument --tracker: unknown 'mlflow'; expected none, or a comma list of wandb, tensorboard" in err


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
