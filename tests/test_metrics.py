"""FID: stand-in Inception weights, equivalence with torch-fidelity, the statistics cache,
2-rank distributed FID, FID during training, and the evaluate / sample / report CLIs.

Inception runs at about 10 images/s on this CPU (torch-fidelity resizes every image to 299 px),
so the image sets here are small: a few dozen images a side.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch_fidelity
from PIL import Image

from facegan import checkpoint as ckpt
from facegan import evaluate, metrics, networks, report, sample
from facegan.data import eval_loader
from facegan.inception import Inception
from facegan.pack import pack
from facegan.shardset import load_shardset
from facegan.sources.synthetic import SyntheticSource, render_face
from facegan.training_loop import train
from tests.conftest import REPO
from tests.test_train import env, sha, tiny

CELEBA_SAMPLE = REPO.parent / "shared" / "data" / "celeba-sample"


@pytest.fixture(scope="session")
def inception(standin) -> Inception:
    return Inception(standin)


def _pack_small(out: Path, seed: int, num: int = 24) -> Path:
    pack(SyntheticSource(num, seed=seed, size=32), out, size=32, shard_size=7, progress=False, overwrite=True)
    return out


@pytest.fixture(scope="session")
def small_shards(tmp_path_factory) -> Path:
    """24 synthetic faces at 32 px in 4 shards (7, 7, 7, 3)."""
    return _pack_small(tmp_path_factory.mktemp("fid") / "small", seed=1)


def shard_images(path: Path) -> torch.Tensor:
    return torch.cat([b["image"] for b in eval_loader(path, 100, uint8=True, num_workers=0)])


def write_pngs(images: torch.Tensor, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image.permute(1, 2, 0).contiguous().numpy()).save(folder / f"{i:04d}.png")
    return folder


def tiny_generator(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    g_spec, _ = networks.make_specs("dcgan", resolution=32, z_dim=16, ngf=8, ndf=8, options={})
    ckpt.export_generator(networks.build("generator", g_spec), path)
    return path


def run_main(main, argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


def stats_of(inception: Inception, images: torch.Tensor) -> metrics.Stats:
    return metrics.features_moments(inception, images.split(16)).stats()


# ---------------------------------------------------------------------------------------------
# The stand-in weights and the FID itself.


def test_standin_tells_faces_from_noise(inception):
    """With Kaiming init the stand-in separates sets: FID(x, x) ~ 0, FID(faces, other faces) is
    small, FID(faces, noise) far larger. With PyTorch's default init all three would be ~0."""
    if (CELEBA_SAMPLE / "img_align_celeba").is_dir():  # real faces when the sample is here
        files = sorted((CELEBA_SAMPLE / "img_align_celeba").glob("*.jpg"))[:48]
        faces = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB").resize((32, 32))))
                             .permute(2, 0, 1) for f in files])
    else:
        faces = torch.stack([torch.from_numpy(np.array(render_face(3, i, 32))).permute(2, 0, 1)
                             for i in range(48)])
    noise = torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    a, b, n = stats_of(inception, faces[:24]), stats_of(inception, faces[24:]), stats_of(inception, noise)
    same, other_faces, to_noise = (metrics.frechet_distance(a, a), metrics.frechet_distance(a, b),
                                   metrics.frechet_distance(a, n))
    assert abs(same) < 1e-3
    assert other_faces > 1e-3  # the stand-in is not a constant map
    assert to_noise > 10 * other_faces, (other_faces, to_noise)
    record = metrics.fid_record(other_faces, inception, num_real=24)
    assert "fid" not in record and record["standard_weights"] is False and "not comparable" in record["note"]
    assert "NON-STANDARD" in metrics.describe(record)
    # pytorch-fid's and clean-fid's warning: fewer images than feature dimensions, singular covariance
    assert record["warning"].startswith("fewer images than the 2048 feature dimensions (24 real)")
    assert "warning: fewer images" in metrics.describe(record)
    record = metrics.fid_record(other_faces, inception, num_real=2048, num_generated=100)
    assert "(100 generated)" in record["warning"] and "real" not in record["warning"].split(":")[0]
    assert "warning" not in metrics.fid_record(other_faces, inception, num_real=2048, num_generated=5000)


def test_moments_match_numpy_cov():
    feats = torch.randn(50, 2048, generator=torch.Generator().manual_seed(0)) * 0.3 + 1.0
    m = metrics.Moments(2048, torch.device("cpu"))
    for part in feats.split(7):
        m.add(part)
    stats = m.stats()
    assert stats.count == 50
    np.testing.assert_allclose(stats.mu, feats.double().mean(0).numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(stats.sigma, np.cov(feats.double().numpy(), rowvar=False), rtol=0, atol=1e-10)


def test_equals_torch_fidelity(tmp_path, standin, small_shards):
    """facegan's evaluate (folder vs shards) equals torch_fidelity.calculate_metrics on the same
    images as PNG folders and the same weights file."""
    generated = write_pngs(shard_images(_pack_small(tmp_path / "other", seed=7, num=20)), tmp_path / "generated")
    reference = write_pngs(shard_images(small_shards), tmp_path / "reference")
    expected = torch_fidelity.calculate_metrics(
        input1=str(generated), input2=str(reference), fid=True, cuda=False, cache=False, verbose=False,
        feature_extractor_weights_path=str(standin), batch_size=16)["frechet_inception_distance"]
    code, out = run_main(evaluate.main, ["--images", str(generated), "--data", str(small_shards),
                                         "--inception-weights", str(standin), "--no-cache", "--batch-size", "16",
                                         "--num-workers", "0"])
    assert code == 0
    record = json.loads(out)
    assert abs(record["fid_nonstandard"] - expected) < 1e-3, (record, expected)
    assert expected > 0.01  # the sets differ: the comparison is not between two zeros
    assert record["num_real"] == 24 and record["num_other"] == 20
    assert record["weights_sha256"] == sha(standin) and record["standard_weights"] is False


# ---------------------------------------------------------------------------------------------
# The reference statistics cache.


def test_cache_hit_then_miss_when_shards_change(tmp_path, inception):
    shards, cache = _pack_small(tmp_path / "shards", seed=1, num=12), tmp_path / "cache"
    first, hit1 = metrics.shard_stats(inception, load_shardset(shards), cache_dir=cache, num_workers=0)
    second, hit2 = metrics.shard_stats(inception, load_shardset(shards), cache_dir=cache, num_workers=0)
    assert (hit1, hit2) == (False, True) and len(list(cache.glob("real-*.npz"))) == 1
    assert np.array_equal(first.sigma, second.sigma) and second.count == 12
    _pack_small(shards, seed=2, num=12)  # same folder, same count, other pixels
    third, hit3 = metrics.shard_stats(inception, load_shardset(shards), cache_dir=cache, num_workers=0)
    assert hit3 is False and not np.array_equal(first.mu, third.mu)
    assert len(list(cache.glob("real-*.npz"))) == 2
    # The key also changes with the weights file and the resolution.
    ss = load_shardset(shards)
    other_weights = SimpleNamespace(sha256="0" * 64)
    assert metrics.stats_key(ss, inception) != metrics.stats_key(ss, other_weights)


# ---------------------------------------------------------------------------------------------
# Distributed.


@pytest.mark.slow
def test_two_rank_fid_equals_single_process(tmp_path, standin, small_shards):
    gen = tiny_generator(tmp_path / "g.safetensors")
    argv = ["--generator", str(gen), "--data", str(small_shards), "--num-samples", "18", "--seed", "3",
            "--inception-weights", str(standin), "--no-cache", "--batch-size", "5", "--num-workers", "1"]
    code, out = run_main(evaluate.main, argv)
    assert code == 0
    single = json.loads(out)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    res = subprocess.run(torchrun + ["-m", "facegan.evaluate", *argv], cwd=REPO, capture_output=True, text=True,
                         timeout=300, env=env())
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [x for x in res.stdout.splitlines() if x.startswith("{")]
    assert len(lines) == 1  # rank 0 alone prints
    double = json.loads(lines[0])
    assert (double["num_real"], double["num_generated"]) == (24, 18)
    assert double["fid_nonstandard"] == pytest.approx(single["fid_nonstandard"], rel=1e-6, abs=1e-9)


# ---------------------------------------------------------------------------------------------
# During training.


def test_fid_during_training(tmp_path, standin, small_shards):
    run = tmp_path / "run"
    cfg = tiny(small_shards, run, max_steps=8, fid_every=4, fid_samples=10, fid_batch_size=5,
               inception_weights=str(standin), fid_cache=str(tmp_path / "cache"))
    train(cfg)
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    fids = [r for r in records if "fid_nonstandard" in r]
    assert [r["step"] for r in fids] == [4, 8] and all(r["num_generated"] == 10 for r in fids)
    assert [r["real_stats_cached"] for r in fids] == [False, True]  # computed once, then cached
    assert all(r["weights_sha256"] == sha(standin) and "fid" not in r for r in fids)
    state = json.loads((ckpt.complete_checkpoints(run)[-1] / ckpt.STATE_FILE).read_text())
    assert state["fid"] == {"step": 8, "value": fids[1]["fid_nonstandard"], "standard_weights": False}
    best = min(fids, key=lambda r: r["fid_nonstandard"])
    assert state["best_fid"]["step"] == best["step"]
    meta = ckpt.read_network_meta(run / "generator-best.safetensors")
    assert meta["step"] == best["step"] and meta["fid"]["fid_nonstandard"] == best["fid_nonstandard"]
    # Measuring FID leaves training untouched: the same run without FID ends bitwise equal.
    plain = tmp_path / "plain"
    train(tiny(small_shards, plain, max_steps=8))
    assert sha(plain / "generator.safetensors") == sha(run / "generator.safetensors")


def test_training_refuses_bad_weights_at_start(tmp_path, small_shards):
    cfg = tiny(small_shards, tmp_path / "run", fid_every=4, inception_weights=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match=r"--inception-weights .*missing\.pth: no such file"):
        train(cfg)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


# ---------------------------------------------------------------------------------------------
# CLIs and their files.


@pytest.mark.parametrize("problem", ["missing", "not-torch", "wrong-model"])
def test_evaluate_bad_weights_one_line(tmp_path, small_shards, problem, capsys):
    path = tmp_path / "weights.pth"
    if problem == "not-torch":
        path.write_text("not weights")
    elif problem == "wrong-model":
        torch.save({"conv.weight": torch.zeros(3)}, path)
    code = evaluate.main(["--images", str(tmp_path), "--data", str(small_shards), "--inception-weights", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and str(path) in err
    assert {"missing": "no such file", "not-torch": "not a PyTorch weights file",
            "wrong-model": "not torch-fidelity InceptionV3 weights"}[problem] in err


def test_evaluate_argument_errors(tmp_path, small_shards, standin, capsys):
    assert evaluate.main(["--data", str(small_shards)]) == 2
    assert "give --generator, --images, or a second --data" in capsys.readouterr().err
    code = evaluate.main(["--images", str(tmp_path / "none"), "--data", str(small_shards),
                          "--inception-weights", str(standin)])
    assert code == 2 and "none: no such folder" in capsys.readouterr().err


def test_evaluate_help_states_each_default_once(capsys):
    """--inception-weights and --cache-dir said their default and then "(default: None)" too."""
    with pytest.raises(SystemExit):
        evaluate.main(["--help"])
    text = capsys.readouterr().out.split("options:")[1]
    options = ["  -" + block for block in text.split("\n  -")[1:]]  # one block per option, wrapped lines too
    assert len(options) == 12
    for block in options:
        assert block.count("(default") <= 1, block
    weights = next(b for b in options if b.startswith("  --inception-weights"))
    assert "standard weights" in weights and "None" not in weights


def test_evaluate_two_shard_sets(tmp_path, standin, small_shards):
    cache = tmp_path / "cache"
    argv = ["--data", str(small_shards), "--data", str(small_shards), "--inception-weights", str(standin),
            "--cache-dir", str(cache), "--num-workers", "0"]
    code, out = run_main(evaluate.main, argv)
    record = json.loads(out)
    assert code == 0 and abs(record["fid_nonstandard"]) < 1e-3  # a set against itself
    assert (record["real_stats_cached"], record["data2_stats_cached"]) == (False, True)
    assert {"data", "data2", "num_real", "num_other", "weights", "weights_sha256", "extractor"} <= set(record)


def test_sample_cli_files(tmp_path):
    gen = tiny_generator(tmp_path / "g.safetensors")
    assert sample.main(["--generator", str(gen), "--out", str(tmp_path / "grid.png"), "--num", "16"]) == 0
    assert Image.open(tmp_path / "grid.png").size == (4 * 34 + 2, 4 * 34 + 2)  # 4x4 of 32 px, 2 px borders
    assert sample.main(["--generator", str(gen), "--out", str(tmp_path / "walk.gif"), "--interpolate",
                        "--num", "4", "--steps", "6", "--truncation", "1.5"]) == 0
    gif = Image.open(tmp_path / "walk.gif")
    assert gif.n_frames == 6 + 4 and gif.size == (2 * 34 + 2, 2 * 34 + 2)  # there and back
    assert sample.main(["--generator", str(gen), "--out", str(tmp_path / "walk.png"), "--interpolate",
                        "--num", "3", "--steps", "5"]) == 0
    assert Image.open(tmp_path / "walk.png").size == (5 * 34 + 2, 3 * 34 + 2)  # a row per walk
    assert sample.main(["--generator", str(gen), "--images-dir", str(tmp_path / "pngs"), "--num", "7"]) == 0
    pngs = sorted((tmp_path / "pngs").iterdir())
    assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(7)]
    assert all(Image.open(p).size == (32, 32) and Image.open(p).mode == "RGB" for p in pngs)
    # The PNGs hold exactly the pixels FID sees for the same seed.
    g, _ = ckpt.load_generator(gen)
    expected = next(metrics.generate_uint8(g, metrics.latents(7, 16, 0), 7))
    assert torch.equal(torch.stack([torch.from_numpy(np.array(Image.open(p))).permute(2, 0, 1) for p in pngs]),
                       expected)


def test_sample_cli_errors(tmp_path, capsys):
    assert sample.main(["--generator", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path / "x.png")]) == 2
    assert "nope.safetensors: exported network not found" in capsys.readouterr().err
    gen = tiny_generator(tmp_path / "g.safetensors")
    assert sample.main(["--generator", str(gen), "--out", str(tmp_path / "x.gif")]) == 2
    assert "expected a .png" in capsys.readouterr().err


def test_report_cli(tmp_path, synthetic_shards, standin):
    run = tmp_path / "run"
    train(tiny(synthetic_shards, run, max_steps=8, sample_every=2))
    with open(run / "metrics.jsonl", "a") as f:  # FID lines as a run with --fid-every writes them
        for step, value in ((4, 3.0), (8, 2.0)):
            f.write(json.dumps({"step": step, "kimg": step * 8 / 1000, "fid_nonstandard": value}) + "\n")
    assert report.main([str(run)]) == 0
    assert Image.open(run / "report" / "losses.png").size == (960, 540)
    gif = Image.open(run / "report" / "progress.gif")
    assert gif.n_frames == 4 and gif.size == Image.open(run / "samples" / "step-000000008.png").size
    assert report.main([str(tmp_path / "nowhere")]) == 2
