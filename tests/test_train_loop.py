"""Training: what a run writes, the GAN/DDP traps of a step, warm starts, and that it learns."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from PIL import Image

from facegan.metrics import features, registry, score
from facegan.networks import exports
from facegan.training import checkpoint as ckpt
from facegan.training import stop
from facegan.training.loop import make_models, train
from facegan.training.state import RunState

from .runs import (
    accelerator,
    nets,
    tiny,
)


def test_run_folder_contents(tmp_path, synthetic_shards):
    run = tmp_path / "run"
    train(tiny(synthetic_shards, run))
    assert json.loads((run / "config.json").read_text())["max_steps"] == 8
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6, 8]
    assert [r["kimg"] for r in records] == [0.016, 0.032, 0.048, 0.064]  # steps x batch 8 x 1 rank
    for key in ("loss/D", "loss/G", "D(x)", "D(G(z))", "img/s", "lr/G", "lr/D", "sec/kimg", "elapsed_s", "time",
                "percent", "eta_s"):
        assert all(isinstance(r[key], float) for r in records), key
    assert [r["percent"] for r in records] == [25.0, 50.0, 75.0, 100.0] and records[-1]["eta_s"] == 0
    assert all(a["time"] <= b["time"] and a["elapsed_s"] <= b["elapsed_s"] for a, b in zip(records, records[1:]))
    assert all(r["sec/kimg"] == pytest.approx(1000 / r["img/s"]) for r in records)
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step-000000004.png", "step-000000008.png"]
    assert Image.open(run / "samples" / "step-000000008.png").size == (4 * 34 + 2, 4 * 34 + 2)  # 4x4 grid
    assert [p.name for p in ckpt.complete_checkpoints(run)] == ["step-000000004", "step-000000008"]
    g, meta = exports.load_generator(run / "generator.safetensors")
    assert meta["step"] == 8
    assert meta["spec"] == {"arch": "dcgan", "kwargs": {"resolution": 32, "z_dim": 16, "width": 8}}
    assert json.loads((run / "generator.json").read_text()) == meta
    assert g(torch.randn(3, 16)).shape == (3, 3, 32, 32)
    for path in (run / "checkpoints").rglob("*.bin"):  # optimizer state loads without pickle
        torch.load(path, weights_only=True)


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
    step(iter([torch.rand(8, 3, 32, 32) * 2 - 1]), RunState(total_nimg=64))
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
        step(iter(real.split(batch)), RunState(total_nimg=8))
        grads.append(seen)
    for net in ("d", "g"):
        for one, two in zip(grads[0][net][0], grads[1][net][0]):
            torch.testing.assert_close(two, one, rtol=1e-4, atol=1e-6)


def test_warm_start(tmp_path, synthetic_shards):
    run = tmp_path / "run"
    train(tiny(synthetic_shards, run, max_steps=4))
    cfg = tiny(synthetic_shards, tmp_path / "warm", warm_start_g=str(run / "generator.safetensors"),
               warm_start_d=str(run / "discriminator.safetensors"))
    models = make_models(cfg, accelerator(cfg), 32)
    g, _ = exports.load_generator(run / "generator.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(g.state_dict().values(), models.g.state_dict().values()))
    wrong = tiny(synthetic_shards, tmp_path / "w2", ngf=16, warm_start_g=str(run / "generator.safetensors"))
    with pytest.raises(ValueError, match="cannot warm-start"):
        make_models(wrong, accelerator(wrong), 32)


def test_short_run_still_writes_a_final_grid(tmp_path, synthetic_shards):
    run = tmp_path / "run"
    train(tiny(synthetic_shards, run, max_steps=3, sample_every=500, ckpt_every=500))
    assert [p.name for p in (run / "samples").iterdir()] == ["step-000000003.png"]
    train(tiny(synthetic_shards, run, max_steps=3, sample_every=500, ckpt_every=500))  # nothing to do
    assert [p.name for p in (run / "samples").iterdir()] == ["step-000000003.png"]


def test_max_minutes_stops_cleanly_and_a_resume_goes_on(tmp_path, synthetic_shards, monkeypatch):
    """--max-minutes alone bounds the run: at the first stop check after the deadline it saves,
    exports and writes its last grid like a finished run; a new start runs its own minutes."""
    monkeypatch.setattr(stop, "SIGNAL_CHECK_EVERY", 5)
    run = tmp_path / "run"
    cfg = tiny(synthetic_shards, run, max_steps=0, max_minutes=1e-6, sample_every=500, ckpt_every=500)
    train(cfg)
    assert [p.name for p in ckpt.complete_checkpoints(run)] == ["step-000000005"]
    assert exports.load_generator(run / "generator.safetensors")[1]["step"] == 5
    assert [p.name for p in (run / "samples").iterdir()] == ["step-000000005.png"]
    train(cfg)
    assert [p.name for p in ckpt.complete_checkpoints(run)] == ["step-000000005", "step-000000010"]
    with pytest.raises(ValueError, match="lr_schedule=cosine decays over the training length: set --max-kimg"):
        dataclasses.replace(cfg, lr_schedule="cosine").validate()
    with pytest.raises(ValueError, match=r"^lr_final=1.5: must be in \[0, 1\]"):
        dataclasses.replace(cfg, lr_schedule="cosine", max_kimg=1.0, lr_final=1.5).validate()
    with pytest.raises(ValueError, match=r"^lr_decay_kimg=100, lr_decay_minutes=0, lr_final=0: they shape a linear"):
        dataclasses.replace(cfg, lr_decay_kimg=100.0).validate()
    timed = dataclasses.replace(cfg, max_minutes=10, lr_schedule="linear", lr_decay_minutes=4)
    timed.validate()  # --lr-decay-minutes gives a decaying schedule its length
    with pytest.raises(ValueError, match=r"^lr_decay_minutes=10: the anneal takes the last minutes of --max-minutes"):
        dataclasses.replace(timed, lr_decay_minutes=10).validate()
    with pytest.raises(ValueError, match=r"^lr_decay_minutes=4 and max_kimg=5: a time-budgeted anneal"):
        dataclasses.replace(timed, max_kimg=5.0).validate()
    with pytest.raises(ValueError, match=r"lr_decay_minutes=4, lr_final=0: they shape a linear or cosine"):
        dataclasses.replace(timed, lr_schedule="constant").validate()


def test_it_learns(tmp_path, synthetic_shards, standin):
    """A tiny GAN on the 103 synthetic faces: after 150 steps (seconds) its stand-in FID against 16
    faces of the same distribution is well below the same G's at step 0 (an untrained G gives one
    grey smudge for every z). Few images keep Inception's CPU time short; the gap is wide."""
    from facegan.data.pack import pack
    from facegan.data.shardset import load_shardset
    from facegan.data.sources.synthetic import SyntheticSource
    from facegan.metrics.inception import Inception

    reference = pack(SyntheticSource(16, seed=0, size=32), tmp_path / "ref", size=32, shard_size=16, progress=False)
    cfg = tiny(synthetic_shards, tmp_path / "run", max_steps=150, batch_size=32, ngf=16, ndf=16, ckpt_every=150,
               log_every=50, sample_every=150, num_workers=1, deterministic=False)
    untrained, _ = nets(cfg)
    inception, shardset = Inception(standin), load_shardset(tmp_path / "ref")
    assert reference["count"] == shardset.count == 16

    def fid(g):
        record = score.score_generator(features.Extractors({"inception": inception}), ["fid"], g.eval(), shardset, 16,
                                         batch_size=16, num_workers=0, cache_dir=tmp_path / "cache")
        return registry.value(record, "fid")

    before = fid(untrained.g)
    after = fid(exports.load_generator(train(cfg))[0])
    assert after < 0.5 * before, (before, after)  # 43.2 -> 7.8 when written


def test_path_length_needs_a_style_generator(tmp_path, synthetic_shards):
    """--pl-weight is refused in one line where G has no W (checked where the step is built), and
    with --compile (a double backward) by the config."""
    with pytest.raises(ValueError, match=r"pl_weight=2: path-length regularisation needs a style generator "
                                         r"\(--arch stylegan2\), not arch=dcgan"):
        nets(tiny(synthetic_shards, tmp_path / "run", pl_weight=2.0))
    with pytest.raises(ValueError, match=r"compile=default cannot be combined with pl_weight > 0"):
        tiny(synthetic_shards, tmp_path / "run", arch="stylegan2", pl_weight=2.0, compile="default").validate()
