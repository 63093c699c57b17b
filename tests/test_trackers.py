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
    read_wandb,
    tensorboard_runs,
)


def test_trackers_wandb_and_tensorboard(tmp_path, small_shards, standin):
    """--tracker wandb,tensorboard in one run, read back by W&B's offline run file and by
    TensorBoard's own reader: the sample grids pixel for pixel, every metric, tags as written,
    images seen as TensorBoard's step, hparams with their metrics in the same run, W&B's summary
    of the ranked bests, captions, the latest and best generators as artifact versions, no file
    path in any history and no secret anywhere."""
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
    nimg = {4: 32, 8: 64}  # batch 8, one process

    # TensorBoard, as TensorBoard reads it: one run (no sub-run for the hparams), its step the images seen.
    tb = tensorboard_runs(run / "tensorboard")
    assert list(tb) == ["."], list(tb)
    tb = tb["."]
    tags = tb.Tags()
    assert {"loss/D", "loss/G", "D(x)", "D(G(z))", "img/s", "sec/kimg", "kimg"} <= set(tags["scalars"]), tags
    assert {e.step: e.value for e in tb.Scalars("kimg")} == pytest.approx({16: 0.016, 32: 0.032, 48: 0.048, 64: 0.064})
    d_x = [r["D(x)"] for r in records if "D(x)" in r]
    assert [e.value for e in tb.Scalars("D(x)")] == pytest.approx(d_x, rel=1e-6)
    for r in evals:
        for key in ("kid_nonstandard", "fid_nonstandard", "kid_std_nonstandard"):
            assert (nimg[r["step"]], pytest.approx(r[key], rel=1e-6)) in [
                (e.step, e.value) for e in tb.Scalars(f"metrics/{key}")]
    best_kid = [e.value for e in tb.Scalars("best/kid_nonstandard")]
    assert best_kid[-1] == pytest.approx(min(r["kid_nonstandard"] for r in evals), rel=1e-6)
    assert "best/kid_std_nonstandard" not in tags["scalars"]  # a spread has no best
    from tensorboard.plugins.hparams import metadata as hp

    content = tb.PluginTagToContent(hp.PLUGIN_NAME)
    experiment = hp.parse_experiment_plugin_data(content[hp.EXPERIMENT_TAG])
    metric_tags = {m.name.tag for m in experiment.metric_infos}
    assert {"metrics/fid_nonstandard", "metrics/kid_nonstandard", "best/fid_nonstandard",
            "best/kid_nonstandard"} <= metric_tags and "best/kid_std_nonstandard" not in metric_tags
    assert metric_tags <= set(tags["scalars"])  # the HPARAMS tab finds each metric in this run
    start = hp.parse_session_start_info_plugin_data(content[hp.SESSION_START_INFO_TAG])
    assert start.hparams["arch"].string_value == "dcgan" and start.hparams["batch_size"].number_value == 8
    assert hp.SESSION_END_INFO_TAG in content  # the run reached its end

    # The grids W&B and TensorBoard stored are the sample PNGs, pixel for pixel (floats in [0,1]
    # were cast to black once).
    samples = sorted((run / "samples").glob("step-*.png"))
    logged = sorted(runs[0].glob("files/media/images/*.png"))
    images = [(e.step, e.encoded_image_string) for e in tb.Images("samples")]
    assert len(logged) == len(samples) == len(images) == 2
    for a, (step, png), b in zip(logged, images, samples):
        pixels = np.asarray(Image.open(b).convert("RGB"))
        assert np.array_equal(np.asarray(Image.open(a).convert("RGB")), pixels), (a, b)
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), pixels), (step, b)
        assert step == nimg[int(b.stem.split("-")[1])] and pixels.std() > 10  # varied faces, not one colour

    # W&B.
    summary, history = read_wandb(next(runs[0].glob("run-*.wandb")))
    logged_evals = [h for h in history if "metrics/kid_nonstandard" in h]
    assert [(h["_step"], h["metrics/kid_nonstandard"], h["kimg"]) for h in logged_evals] == [
        (r["step"], pytest.approx(r["kid_nonstandard"]), r["kimg"]) for r in evals]
    captions = sorted({(h["_step"], h["samples/caption"]) for h in history if "samples/caption" in h and "_step" in h})
    assert captions == [(4, "step 4, 0.032 kimg"), (8, "step 8, 0.064 kimg")]
    strings = [(k, v) for h in history for k, v in h.items() if isinstance(v, str) and not k.startswith("samples/")]
    assert not strings, strings  # no file paths (nor other text) in the history; the grids are W&B's images
    # kimg is every chart's x-axis (define_metric("*", step_metric="kimg")).
    defined = read_wandb(next(runs[0].glob("run-*.wandb")), kinds=("metric",))[1]
    assert {"name": "*", "step_metric": "kimg"} in defined, defined
    best = min(evals, key=lambda r: r["kid_nonstandard"])
    assert summary["best/kid_nonstandard"] == pytest.approx(best["kid_nonstandard"])
    assert summary["best/kid_nonstandard_step"] == best["step"]
    assert summary["best/fid_nonstandard"] == pytest.approx(min(r["fid_nonstandard"] for r in evals))
    assert not [k for k in summary if k.startswith("best/") and "_std" in k], summary  # no best of a spread
    # --wandb-artifacts: one model artifact of versions: each new best (by KID) under `best` with its
    # metrics, then each checkpoint's export under `latest` (W&B moves both aliases to the newest).
    artifacts = read_wandb(next(runs[0].glob("run-*.wandb")), kinds=("artifact",))[1]
    assert len({a["name"] for a in artifacts}) == 1 and all(a["type"] == "model" for a in artifacts)
    assert all(sorted(a["files"]) == ["generator.json", "generator.safetensors"] for a in artifacts)
    bests = {r["step"]: r for i, r in enumerate(evals)
             if r["kid_nonstandard"] <= min(e["kid_nonstandard"] for e in evals[:i + 1])}
    expected = [(kind, step) for step in (4, 8) for kind in ("best", "export") if kind == "export" or step in bests]
    assert [("best" if "best" in a["aliases"] else "export", a["metadata"]["step"]) for a in artifacts] == expected
    for a, (kind, step) in zip(artifacts, expected):
        assert {"latest", f"step-{step}"} <= set(a["aliases"]) and a["metadata"]["kimg"] == nimg[step] / 1000
        if kind == "best":
            assert a["metadata"]["metrics"]["kid_nonstandard"] == pytest.approx(bests[step]["kid_nonstandard"])
            assert a["metadata"]["metrics"]["num_generated"] == 8
        else:
            assert "metrics" not in a["metadata"]


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
