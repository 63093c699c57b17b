"""FID: stand-in Inception weights, equivalence with torch-fidelity, the statistics cache,
2-rank distributed FID, FID during training, and the evaluate / sample / report CLIs.

Inception runs at about 10 images/s on this CPU (torch-fidelity resizes every image to 299 px),
so the image sets here are small: a few dozen images a side.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
import torch
import torch_fidelity
from PIL import Image

import facegan
from facegan import evaluate, networks, report, sample
from facegan.data.shardset import load_shardset
from facegan.data.sources.synthetic import render_face
from facegan.data.stream import eval_loader
from facegan.distribution import Dist
from facegan.metrics import features, fid, registry, score
from facegan.metrics.inception import Inception
from facegan.networks import exports, sampling
from facegan.train import config_from_args
from facegan.training import checkpoint as ckpt
from facegan.training.loop import train
from tests.conftest import REPO, pack_small, read_only
from tests.runs import env, sha, tiny

CELEBA_SAMPLE = REPO.parent / "shared" / "data" / "celeba-sample"


@pytest.fixture(scope="session")
def inception(standin) -> Inception:
    return Inception(standin)


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
    exports.export_generator(networks.build("generator", g_spec), path)
    return path


def run_main(main, argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


def stats_of(inception: Inception, images: torch.Tensor) -> features.Stats:
    moments = features.Moments(features.FEATURE_DIM, inception.device)
    for batch in images.split(16):
        moments.add(inception(batch))
    return moments.stats()


def fid_record(fid_value: float, inception: Inception, **counts) -> dict:
    """One FID result with the weights that produced it, as score_generator records it."""
    key = "fid" if inception.standard else "fid" + registry.NONSTANDARD
    return score.make_record(["fid"], features.Extractors({"inception": inception}), {key: fid_value}, **counts)


# ---------------------------------------------------------------------------------------------
# The stand-in weights and the FID itself.


def test_standin_tells_faces_from_noise(inception):
    """With Kaiming init the stand-in separates sets: FID(x, x) ~ 0, FID(faces, other faces) is
    small, FID(faces, noise) far larger. With PyTorch's default init all three would be ~0."""
    if (CELEBA_SAMPLE / "img_align_celeba").is_dir():  # real faces when the sample is here
        files = sorted((CELEBA_SAMPLE / "img_align_celeba").glob("*.jpg"))[:24]
        faces = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB").resize((32, 32))))
                             .permute(2, 0, 1) for f in files])
    else:
        faces = torch.stack([torch.from_numpy(np.array(render_face(3, i, 32))).permute(2, 0, 1)
                             for i in range(24)])
    noise = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    a, b, n = stats_of(inception, faces[:12]), stats_of(inception, faces[12:]), stats_of(inception, noise)
    same, other_faces, to_noise = (fid.frechet_distance(a, a), fid.frechet_distance(a, b),
                                   fid.frechet_distance(a, n))
    assert abs(same) < 1e-3
    assert other_faces > 1e-3  # the stand-in is not a constant map
    assert to_noise > 10 * other_faces, (other_faces, to_noise)
    record = fid_record(other_faces, inception, num_real=24)
    assert "fid" not in record and record["standard_weights"] is False and "not comparable" in record["note"]
    assert "NON-STANDARD" in score.describe(record)
    # pytorch-fid's and clean-fid's warning: fewer images than feature dimensions, singular covariance
    assert record["warning"].startswith("fewer images than the 2048 feature dimensions (24 real)")
    assert "warning: fewer images" in score.describe(record)
    record = fid_record(other_faces, inception, num_real=2048, num_generated=100)
    assert "(100 generated)" in record["warning"] and "real" not in record["warning"].split(":")[0]
    assert "warning" not in fid_record(other_faces, inception, num_real=2048, num_generated=5000)


def test_moments_match_numpy_cov():
    feats = torch.randn(50, 2048, generator=torch.Generator().manual_seed(0)) * 0.3 + 1.0
    m = features.Moments(2048, torch.device("cpu"))
    for part in feats.split(7):
        m.add(part)
    stats = m.stats()
    assert stats.count == 50
    np.testing.assert_allclose(stats.mu, feats.double().mean(0).numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(stats.sigma, np.cov(feats.double().numpy(), rowvar=False), rtol=0, atol=1e-10)


def _metric_sets(tmp_path: Path, small_shards: Path) -> tuple[Path, Path]:
    """20 faces as a 'generated' PNG folder and the 24 of small_shards as a reference folder."""
    generated = write_pngs(shard_images(pack_small(tmp_path / "other", seed=7, num=20)), tmp_path / "generated")
    return generated, write_pngs(shard_images(small_shards), tmp_path / "reference")


def _close(ours: float, theirs: float) -> bool:
    return abs(ours - theirs) < 1e-3 and abs(ours - theirs) <= 1e-3 * abs(theirs) + 1e-7


def test_fid_kid_is_equal_torch_fidelity(tmp_path, standin, small_shards):
    """evaluate --metrics fid,kid,is (a folder against the packed shards) equals
    torch_fidelity.calculate_metrics on the same images as PNG folders and the same weights,
    from one feature pass; the shards' features are cached."""
    generated, reference = _metric_sets(tmp_path, small_shards)
    theirs = torch_fidelity.calculate_metrics(
        input1=str(generated), input2=str(reference), fid=True, kid=True, isc=True, kid_subset_size=20,
        cuda=False, cache=False, verbose=False, feature_extractor_weights_path=str(standin), batch_size=16)
    cache = tmp_path / "cache"
    argv = ["--images", str(generated), "--data", str(small_shards), "--metrics", "fid,kid,is",
            "--inception-weights", str(standin), "--cache-dir", str(cache), "--batch-size", "16", "--num-workers", "0"]
    code, out = run_main(evaluate.main, argv)
    ours = json.loads(out)
    assert code == 0 and ours["metrics"] == ["fid", "kid", "is"]
    pairs = {"fid_nonstandard": "frechet_inception_distance", "kid_nonstandard": "kernel_inception_distance_mean",
             "kid_std_nonstandard": "kernel_inception_distance_std", "is_nonstandard": "inception_score_mean",
             "is_std_nonstandard": "inception_score_std"}
    for key, their_key in pairs.items():
        assert _close(ours[key], theirs[their_key]), (key, ours[key], theirs[their_key])
    assert theirs["kernel_inception_distance_mean"] > 1e-4 and theirs["inception_score_mean"] > 1.05  # not zeros
    assert (ours["num_real"], ours["num_other"], ours["real_stats_cached"]) == (24, 20, False)
    assert "KID subsets of 20 images" in ours["warning"] and "not comparable" in ours["note"]
    assert ours["weights_sha256"] == sha(standin) and ours["standard_weights"] is False
    # The reference's moments and rows are cached (read back in test_two_ranks_equal_one_for_every_metric).
    assert len(list(cache.glob("real-*.npz"))) == 1 and len(list(cache.glob("real-*.npy"))) == 1


def test_precision_recall_equal_torch_fidelity(tmp_path, standin, vgg_standin, small_shards):
    """evaluate --metrics pr with a plain image folder as the reference (VGG16 at 224 px is slow
    here: 8 images a side)."""
    generated = write_pngs(shard_images(pack_small(tmp_path / "other", seed=7, num=8)), tmp_path / "generated")
    reference = write_pngs(shard_images(small_shards)[:8], tmp_path / "reference")
    theirs = torch_fidelity.calculate_metrics(
        input1=str(generated), input2=str(reference), prc=True, feature_extractor="vgg16", cuda=False,
        cache=False, verbose=False, feature_extractor_weights_path=str(vgg_standin), batch_size=16)
    argv = ["--images", str(generated), "--data", str(reference), "--metrics", "pr", "--cache-dir", str(tmp_path / "c"),
            "--inception-weights", str(standin), "--vgg16-weights", str(vgg_standin), "--batch-size", "16"]
    code, out = run_main(evaluate.main, argv)
    ours = json.loads(out)
    assert code == 0
    assert _close(ours["precision_nonstandard"], theirs["precision"])
    assert _close(ours["recall_nonstandard"], theirs["recall"])
    assert ours["vgg16_weights_sha256"] == sha(vgg_standin) and ours["vgg16_standard_weights"] is False
    assert "precision and recall here are not comparable" in ours["note"]
    # Noise lies outside the faces' manifold: its precision is lower (the stand-in separates them).
    noise = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    argv[1] = str(write_pngs(noise, tmp_path / "noise"))
    code, out = run_main(evaluate.main, argv)
    noisy = json.loads(out)
    assert code == 0 and noisy["real_stats_cached"] is True  # the folder reference was cached
    assert noisy["precision_nonstandard"] < theirs["precision"]


def _torch_hub_dinov2(weights: Path):
    """torch.hub.load as torch-fidelity calls it for DINOv2, answered offline: facegan's ViT (the
    same outputs as Meta's code: bench/dinov2_parity.py) holding `weights`."""
    from facegan.metrics import dinov2

    def load(repo, name, *args, **kwargs):
        assert repo == "facebookresearch/dinov2", repo
        arch = next(a for a in dinov2.MODELS.values() if a.hub == name)
        module = dinov2.ViT(arch)
        module.load_state_dict(torch.load(weights, weights_only=True))
        return module

    return mock.patch.object(torch.hub, "load", load)


def test_fd_dinov2_equal_torch_fidelity(tmp_path, dinov2_standin, small_shards):
    """evaluate --metrics fd_dinov2,pr_dinov2 (a folder against the packed shards) equals
    torch_fidelity.calculate_metrics(feature_extractor="dinov2-vit-s-14") on the same images and
    weights: its resize, normalisation and maths. The record states its protocol."""
    generated, reference = _metric_sets(tmp_path, small_shards)
    with _torch_hub_dinov2(dinov2_standin):
        theirs = torch_fidelity.calculate_metrics(
            input1=str(generated), input2=str(reference), fid=True, prc=True, feature_extractor="dinov2-vit-s-14",
            cuda=False, cache=False, verbose=False, batch_size=16)
    argv = ["--images", str(generated), "--data", str(small_shards), "--metrics", "fd_dinov2,pr_dinov2",
            "--dinov2-model", "dinov2-vit-s-14", "--dinov2-weights", str(dinov2_standin),
            "--cache-dir", str(tmp_path / "cache"), "--batch-size", "16", "--num-workers", "0"]
    code, out = run_main(evaluate.main, argv)
    ours = json.loads(out)
    assert code == 0
    assert _close(ours["fd_dinov2_nonstandard"], theirs["frechet_inception_distance"])
    assert _close(ours["precision_dinov2_nonstandard"], theirs["precision"])
    assert _close(ours["recall_dinov2_nonstandard"], theirs["recall"])
    assert theirs["frechet_inception_distance"] > 1  # the stand-in tells the two sets apart
    # The protocol: extractor, weights and hash, resize, counts, reference and its content hash, versions.
    assert (ours["dinov2_model"], ours["dinov2_weights_sha256"], ours["dinov2_standard_weights"]) == (
        "dinov2-vit-s-14", sha(dinov2_standin), False)
    assert "not comparable to published" in ours["note"] and "fd_dinov2" not in ours
    assert (ours["num_real"], ours["num_other"], ours["torch_fidelity"]) == (24, 20, torch_fidelity.__version__)
    assert ours["resize"] == "torch-fidelity's TF1-compatible bilinear, uint8 in, to dinov2-vit-s-14 224 px"
    assert ours["reference"] == {"content_sha256": load_shardset(small_shards).content_hash, "size": 32, "count": 24}
    assert ours["other"]["count"] == 20 and len(ours["other"]["files_sha256"]) == 64
    # A set against itself: 0, from the cache.
    argv[1] = str(reference)
    code, out = run_main(evaluate.main, argv)
    same = json.loads(out)
    assert code == 0 and same["real_stats_cached"] is True and abs(same["fd_dinov2_nonstandard"]) < 1e-3


def test_dinov2_weights_errors_are_one_line(tmp_path, standin, dinov2_standin, small_shards, capsys, monkeypatch):
    """A missing file, another network's weights, another DINOv2 size, ViT-g: one line each."""
    Image.new("RGB", (32, 32)).save(tmp_path / "one.png")
    base = ["--images", str(tmp_path), "--data", str(small_shards), "--metrics", "fd_dinov2"]
    for extra, expected in [
            (["--dinov2-weights", str(tmp_path / "no.pth")], f"--dinov2-weights {tmp_path / 'no.pth'}: no such file"),
            (["--dinov2-weights", str(standin)], "not DINOv2 dinov2-vit-l-14 weights"),
            (["--dinov2-weights", str(dinov2_standin), "--dinov2-model", "dinov2-vit-b-14"],
             "cls_token has shape (1, 1, 384), dinov2-vit-b-14 needs (1, 1, 768)")]:
        code = evaluate.main(base + extra)
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and expected in err, err
    with pytest.raises(SystemExit):
        evaluate.main(base + ["--dinov2-model", "dinov2-vit-g-14"])
    assert "invalid choice: 'dinov2-vit-g-14'" in capsys.readouterr().err
    # The standard rule is the content, as Inception's and VGG16's: a random file saved under
    # Meta's name (or linked there) stays non-standard; a file whose sha256 is pinned counts.
    from facegan.metrics import dinov2

    link = tmp_path / "links" / dinov2.standard_file("dinov2-vit-s-14")
    link.parent.mkdir()
    link.symlink_to(dinov2_standin)
    named = tmp_path / dinov2.standard_file("dinov2-vit-s-14")
    shutil.copy(dinov2_standin, named)
    for path in (link, named):
        extractor = dinov2.DINOv2(path, model="dinov2-vit-s-14")
        assert extractor.standard is False and extractor.describe()["dinov2_weights_sha256"] == sha(dinov2_standin)
    monkeypatch.setitem(dinov2.PINNED_SHA256, "dinov2-vit-s-14", sha(dinov2_standin))
    assert dinov2.DINOv2(dinov2_standin, model="dinov2-vit-s-14").standard is True
    assert dinov2.DINOv2(dinov2_standin, model="dinov2-vit-s-14").describe()["dinov2_standard_weights"] is True


def test_a_weights_file_with_a_list_where_a_tensor_belongs_is_one_line(tmp_path, dinov2_standin, small_shards,
                                                                      capsys):
    """Inception, VGG16 and DINOv2 share one reader: the right keys with a list (or a number) in
    place of a tensor is named in one line, not an AttributeError."""
    from facegan.metrics.inception import read_weights

    torch.save({"a": torch.zeros(2), "b": [1.0, 2.0]}, tmp_path / "tiny.pth")
    with pytest.raises(ValueError, match=r"^--w .*tiny.pth: b holds a list, not a tensor; not X weights$"):
        read_weights(tmp_path / "tiny.pth", "--w", {"a": (2,), "b": (2,)}, "X", ValueError)
    state = torch.load(dinov2_standin, weights_only=True)
    state["cls_token"] = state["cls_token"].tolist()
    torch.save(state, tmp_path / "listed.pth")
    Image.new("RGB", (32, 32)).save(tmp_path / "one.png")
    code = evaluate.main(["--images", str(tmp_path), "--data", str(small_shards), "--metrics", "fd_dinov2",
                          "--dinov2-model", "dinov2-vit-s-14", "--dinov2-weights", str(tmp_path / "listed.pth")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "listed.pth: cls_token holds a list, not a tensor" in err, err


TOY_EXTRACTOR = '''
"""A toy extractor: each image's mean colour (the protocol of facegan.metrics.extractors)."""
import torch


class MeanColour:
    kinds = ("colour",)
    standard = False

    def __init__(self, weights, device):
        self.sha256, self.device = "0" * 64, torch.device(device)

    def dims(self):
        return {"colour": 3}

    def extract(self, images):
        return {"colour": images.float().mean((2, 3)) / 255}

    def describe(self):
        return {"colour_weights": "none"}

    def resize(self):
        return "colour 1"

    def rows_source(self, kind):
        return "colour-rows"

    def note(self):
        return "a toy extractor: compare its values with nothing published"
'''

TOY_METRIC = '''
from facegan.metrics.features import Needs

NEEDS = Needs(rows=frozenset({"colour"}))
REAL_NEEDS = Needs(rows=frozenset({"colour"}))


def compute(fake, real):
    return {"colour_gap": float((fake.rows["colour"].mean(0) - real.rows["colour"].mean(0)).abs().sum())}
'''


def test_an_extractor_is_one_module_and_one_table_line(tmp_path, monkeypatch, small_shards):
    """A toy extractor (one module) and its metric (one module), each registered by one line: the
    feature pass, the cache, the record's note, protocol and _nonstandard key all follow."""
    from facegan.metrics import extractors

    (tmp_path / "toy_colour.py").write_text(TOY_EXTRACTOR)
    (tmp_path / "toy_colour_metric.py").write_text(TOY_METRIC)
    monkeypatch.syspath_prepend(str(tmp_path))
    import toy_colour

    monkeypatch.setitem(extractors.TABLE, "colour", lambda s: toy_colour.MeanColour(s.weights.get("colour"), s.device))
    monkeypatch.setitem(registry.METRICS, "colour", registry.Metric("toy_colour_metric", "colour",
                                                                    {"colour_gap": True}, "colour_gap"))
    built = score.build_extractors(["colour"], None, None, "cpu")
    assert list(built.by_name) == ["colour"]  # only what the metric reads: no Inception loaded
    g, _ = exports.load_generator(tiny_generator(tmp_path / "g.safetensors"))
    real = load_shardset(small_shards)
    record = score.score_generator(built, ["colour"], g, real, 8, batch_size=4, num_workers=0,
                                   cache_dir=tmp_path / "cache")
    fake = torch.cat(list(sampling.generate_uint8(g, sampling.latents(8, g.z_dim, 0), 4))).float().mean((0, 2, 3))
    reals = torch.cat([b["image"] for b in eval_loader(small_shards, 8, num_workers=0, uint8=True)])
    expected = float((fake / 255 - reals.float().mean((0, 2, 3)) / 255).abs().sum())
    assert record["colour_gap_nonstandard"] == pytest.approx(expected, rel=1e-5)
    assert record["note"] == "a toy extractor: compare its values with nothing published"
    assert "colour 1 px" in record["resize"] and record["colour_weights"] == "none"
    assert len(list((tmp_path / "cache").glob("real-*.npy"))) == 1  # its rows, cached under its own name
    again = score.score_generator(built, ["colour"], g, real, 8, batch_size=4, num_workers=0,
                                  cache_dir=tmp_path / "cache")
    assert again["real_stats_cached"] is True and again["colour_gap_nonstandard"] == record["colour_gap_nonstandard"]


def test_missing_vgg_weights_name_the_flag(tmp_path, standin, small_shards, capsys):
    Image.new("RGB", (32, 32)).save(tmp_path / "one.png")  # (the inputs are checked before the weights)
    code = evaluate.main(["--images", str(tmp_path), "--data", str(small_shards), "--metrics", "fid,pr",
                          "--inception-weights", str(standin), "--vgg16-weights", str(tmp_path / "vgg.pth")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"--vgg16-weights {tmp_path / 'vgg.pth'}: no such file" in err
    code = evaluate.main(["--images", str(tmp_path), "--data", str(small_shards), "--metrics", "fid,ppl"])
    assert code == 2 and "unknown metric 'ppl'; choose from fid, kid, is, pr" in capsys.readouterr().err


def test_shard_indices_are_manifest_order_for_any_split(small_shards):
    """The evaluation pass tags each sample with its place in the manifest, whatever the ranks and
    workers: rows gathered at those places are in one order for any world size."""
    shardset = load_shardset(small_shards)
    single = torch.cat([images for images, _ in features.shard_batches(shardset, num_workers=0)])
    seen = {}
    for rank in range(2):
        for images, index in features.shard_batches(shardset, batch_size=5, num_workers=2, dist=Dist(rank, 2)):
            for image, i in zip(images, index.tolist()):
                assert i not in seen
                seen[i] = image
    assert sorted(seen) == list(range(24)) and all(torch.equal(seen[i], single[i]) for i in range(24))


# ---------------------------------------------------------------------------------------------
# The reference statistics cache.


def test_cache_hit_then_miss_when_shards_change(tmp_path, inception):
    shards, cache = pack_small(tmp_path / "shards", seed=1, num=12), tmp_path / "cache"
    first, hit1 = features.shard_stats(inception, load_shardset(shards), cache_dir=cache, num_workers=0)
    second, hit2 = features.shard_stats(inception, load_shardset(shards), cache_dir=cache, num_workers=0)
    assert (hit1, hit2) == (False, True) and len(list(cache.glob("real-*.npz"))) == 1
    assert np.array_equal(first.sigma, second.sigma) and second.count == 12
    pack_small(shards, seed=2, num=12)  # same folder, same count, other pixels
    third, hit3 = features.shard_stats(inception, load_shardset(shards), cache_dir=cache, num_workers=0)
    assert hit3 is False and not np.array_equal(first.mu, third.mu)
    assert len(list(cache.glob("real-*.npz"))) == 2
    # The key also changes with the weights file and the resolution.
    ss = load_shardset(shards)
    other_weights = SimpleNamespace(sha256="0" * 64)
    assert features.stats_key(ss, inception) != features.stats_key(ss, other_weights)


# ---------------------------------------------------------------------------------------------
# Distributed.


@pytest.mark.slow
def test_two_ranks_equal_one_for_every_metric(tmp_path, standin, vgg_standin, dinov2_standin):
    """Every metric of a generator on 2 processes (torchrun; each rank extracts its share of
    both sides and caches the reference's features) and on 1 (reading that cache): the same.
    11 real images in shards of 7 (ranks get unequal shares), 8 generated (VGG16 is slow here)."""
    gen, reference = tiny_generator(tmp_path / "g.safetensors"), pack_small(tmp_path / "ref", seed=4, num=11)
    argv = ["--generator", str(gen), "--data", str(reference), "--num-samples", "8", "--seed", "3",
            "--metrics", "fid,kid,is,pr,fd_dinov2,pr_dinov2", "--inception-weights", str(standin),
            "--vgg16-weights", str(vgg_standin), "--dinov2-weights", str(dinov2_standin),
            "--dinov2-model", "dinov2-vit-s-14", "--batch-size", "6", "--num-workers", "1",
            "--cache-dir", str(tmp_path / "cache")]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    res = subprocess.run(torchrun + ["-m", "facegan.evaluate", *argv], cwd=REPO, capture_output=True, text=True,
                         timeout=300, env=env())
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [x for x in res.stdout.splitlines() if x.startswith("{")]
    assert len(lines) == 1  # rank 0 alone prints
    double = json.loads(lines[0])
    assert (double["num_real"], double["num_generated"], double["real_stats_cached"]) == (11, 8, False)
    code, out = run_main(evaluate.main, argv)
    single = json.loads(out)
    assert code == 0 and single["real_stats_cached"] is True
    # fid, kid, kid_std, is, is_std, precision, recall, pr_f_score, and fd, precision, recall, F in DINOv2 space
    assert len(registry.value_keys(single)) == 12
    assert single["fd_dinov2_nonstandard"] > 0 and single["seed"] == 3
    for key in registry.value_keys(single):
        assert double[key] == pytest.approx(single[key], rel=1e-5, abs=1e-7), key


# ---------------------------------------------------------------------------------------------
# During training.


def test_metrics_during_training(tmp_path, standin, dinov2_standin, small_shards):
    run = tmp_path / "run"
    cfg = tiny(small_shards, run, max_steps=8, eval_every=4, eval_samples=10, eval_batch_size=5,
               metrics="fid,kid,is,fd_dinov2", best_by="kid", inception_weights=str(standin),
               dinov2_weights=str(dinov2_standin), dinov2_model="dinov2-vit-s-14",
               eval_cache=str(tmp_path / "cache"), live_report=True)
    train(cfg)
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "kid_nonstandard" in r]
    assert [r["step"] for r in evals] == [4, 8] and all(r["num_generated"] == 10 for r in evals)
    assert all({"fid_nonstandard", "kid_std_nonstandard", "is_nonstandard", "is_std_nonstandard",
                "fd_dinov2_nonstandard"} <= set(r) for r in evals)
    assert all(r["dinov2_weights_sha256"] == sha(dinov2_standin) and r["reference"]["count"] == 24 for r in evals)
    assert [r["real_stats_cached"] for r in evals] == [False, True]  # computed once, then cached
    assert all(r["weights_sha256"] == sha(standin) and not {"fid", "kid", "is"} & set(r) for r in evals)
    state = json.loads((ckpt.complete_checkpoints(run)[-1] / ckpt.STATE_FILE).read_text())
    assert state["eval"]["step"] == 8 and state["eval"]["kid_nonstandard"] == evals[1]["kid_nonstandard"]
    best = min(evals, key=lambda r: r["kid_nonstandard"])  # --best-by kid: lower is better
    assert state["best"] == {"by": "kid", "key": "kid_nonstandard", "step": best["step"],
                             "value": best["kid_nonstandard"]}
    meta = exports.read_network_meta(run / "generator-best.safetensors")
    assert meta["step"] == best["step"] and meta["metrics"]["kid_nonstandard"] == best["kid_nonstandard"]
    # Training wrote its report: at each measurement, and at the end with the progress GIF.
    page = (run / "report" / "index.html").read_text()
    grids = sorted(p.name for p in (run / "report" / "grids").iterdir())
    assert (run / "report" / "progress.gif").is_file() and grids == ["step-000000004.png", "step-000000008.png"]
    for fact in ("training time", f"facegan</th><td>{facegan.__version__}", f"{small_shards}: 24 images at 32 px",
                 "Protocol of the latest measurement", sha(standin), "num_generated</th><td>10"):
        assert fact in page, fact
    # Measuring (and reporting) leaves training untouched: the same run without metrics ends bitwise equal.
    plain = tmp_path / "plain"
    train(tiny(small_shards, plain, max_steps=8))
    assert sha(plain / "generator.safetensors") == sha(run / "generator.safetensors")
    assert not (plain / "report").exists()  # --live-report false: the report is left to the command


def test_best_by_directions():
    """FID and KID improve downwards; IS, precision and recall upwards."""
    names = ["fid", "kid", "is", "pr"]
    assert registry.improves(names, "fid", 1.0, 2.0) and not registry.improves(names, "fid", 2.0, 1.0)
    assert registry.improves(names, "kid", 0.01, 0.02) and registry.improves(names, "fid", 5.0, None)
    for higher in ("is", "precision", "recall"):
        assert registry.improves(names, higher, 2.0, 1.0) and not registry.improves(names, higher, 1.0, 2.0)


def test_training_refuses_bad_weights_at_start(tmp_path, small_shards):
    cfg = tiny(small_shards, tmp_path / "run", eval_every=4, inception_weights=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match=r"--inception-weights .*missing\.pth: no such file"):
        train(cfg)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_metric_flags_checked(tmp_path, small_shards, capsys):
    """Unknown metrics and --best-by values are one-line errors; the --fid-* flags that --eval-*
    replaced are gone (CHANGELOG, 0.2.0)."""
    base = ["--data", str(small_shards), "--run-dir", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as e:
        config_from_args(base + ["--metrics", "fid,bogus"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert "argument --metrics: unknown metric 'bogus'; choose from fid, kid, is, pr" in err
    with pytest.raises(ValueError, match=r"best_by='precision': not a value of metrics=fid,kid"):
        config_from_args(base + ["--metrics", "fid,kid", "--best-by", "precision"])[0].validate()
    with pytest.raises(SystemExit):
        config_from_args(base + ["--fid-every", "100"])
    assert "unrecognized arguments: --fid-every" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# CLIs and their files.


@pytest.mark.parametrize("problem", ["missing", "not-torch", "wrong-model"])
def test_evaluate_bad_weights_one_line(tmp_path, small_shards, problem, capsys):
    path = tmp_path / "weights.pth"
    if problem == "not-torch":
        path.write_text("not weights")
    elif problem == "wrong-model":
        torch.save({"conv.weight": torch.zeros(3)}, path)
    Image.new("RGB", (32, 32)).save(tmp_path / "one.png")  # (the inputs are checked before the weights)
    code = evaluate.main(["--images", str(tmp_path), "--data", str(small_shards), "--inception-weights", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and str(path) in err
    assert {"missing": "no such file", "not-torch": "not a PyTorch weights file",
            "wrong-model": "not torch-fidelity InceptionV3 weights"}[problem] in err


def test_evaluate_argument_errors(tmp_path, small_shards, standin, capsys, monkeypatch):
    assert evaluate.main(["--data", str(small_shards)]) == 2
    assert "give --generator, --images, or a second --data" in capsys.readouterr().err
    code = evaluate.main(["--images", str(tmp_path / "none"), "--data", str(small_shards),
                          "--inception-weights", str(standin)])
    assert code == 2 and "none: no such folder" in capsys.readouterr().err
    # The inputs are checked before any weights are loaded or downloaded (it took minutes, then said the path).
    monkeypatch.setattr(evaluate.score, "build_extractors", lambda *a, **k: pytest.fail("loaded weights first"))
    for argv, message in [(["--data", str(tmp_path / "gone"), "--data", str(small_shards)], "--data " +
                           str(tmp_path / "gone") + ": no such folder"),
                          (["--data", str(small_shards), "--generator", str(tmp_path / "g.safetensors")],
                           "g.safetensors: exported network not found")]:
        assert evaluate.main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_evaluate_help_states_each_default_once(capsys):
    """--inception-weights and --cache-dir said their default and then "(default: None)" too."""
    with pytest.raises(SystemExit):
        evaluate.main(["--help"])
    text = capsys.readouterr().out.split("options:")[1]
    options = ["  -" + block for block in text.split("\n  -")[1:]]  # one block per option, wrapped lines too
    assert len(options) == 18  # (--version included)
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
    g, _ = exports.load_generator(gen)
    expected = next(sampling.generate_uint8(g, sampling.latents(7, 16, 0), 7))
    assert torch.equal(torch.stack([torch.from_numpy(np.array(Image.open(p))).permute(2, 0, 1) for p in pngs]),
                       expected)


def test_sample_cli_errors(tmp_path, capsys):
    assert sample.main(["--generator", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path / "x.png")]) == 2
    assert "nope.safetensors: exported network not found" in capsys.readouterr().err
    gen = tiny_generator(tmp_path / "g.safetensors")
    assert sample.main(["--generator", str(gen), "--out", str(tmp_path / "x.gif")]) == 2
    assert "expected a .png" in capsys.readouterr().err
    base = ["--generator", str(gen)]
    for args, message in [
        (["--out", str(tmp_path / "x.png"), "--interpolate", "--sweep", "A"],
         "one of --interpolate, --sweep, --style-mix, --psi-sweep (--interpolate and --sweep given)"),
        (["--images-dir", str(tmp_path / "d"), "--psi-sweep", "1,0.5"],
         "--psi-sweep writes to --out, not --images-dir"),
        (["--export-program", str(tmp_path / "g.pt2"), "--style-mix", "2x2"],
         "--export-program writes the generator itself; --style-mix makes a picture with --out"),
        (["--out", str(tmp_path / "x.png"), "--num", "0"], "--num and --batch-size must be at least 1"),
        (["--out", str(tmp_path / "x.png"), "--truncation", "nan"], "--truncation nan: must be a positive finite"),
        (["--out", str(tmp_path / "x.png"), "--truncation", "-1"], "--truncation -1.0: must be a positive finite"),
        (["--out", str(tmp_path / "g.safetensors" / "x.png")], f"--out {tmp_path / 'g.safetensors'}: is a file"),
        (["--export-program", str(tmp_path / "g.safetensors" / "sub" / "g.pt2")],
         f"--export-program {tmp_path / 'g.safetensors' / 'sub'}: cannot write there ("),
        (["--images-dir", str(tmp_path / "g.safetensors")], f"--images-dir {tmp_path / 'g.safetensors'}: is a file"),
    ]:
        assert sample.main([*base, *args]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith(f"facegan.sample: error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "d").exists() and not (tmp_path / "g.pt2").exists()


def test_report_cli(tmp_path, report_run, capsys):
    run = report_run
    assert report.main([str(run)]) == 0
    assert Image.open(run / "report" / "losses.png").size == (960, 540)
    gif = Image.open(run / "report" / "progress.gif")
    assert gif.n_frames == 4 and gif.size == Image.open(run / "samples" / "step-000000008.png").size
    assert report.main([str(tmp_path / "nowhere")]) == 2
    for bad in ("-5", "0"):  # a negative frame time was an OverflowError from PIL
        with pytest.raises(SystemExit):
            report.main([str(run), "--frame-ms", bad])
        assert f"--frame-ms {bad}: must be in [10, 60000]" in capsys.readouterr().err


def test_report_of_a_hand_made_or_damaged_metrics_file_is_one_line(tmp_path, capsys):
    """Lines that are not objects, or hold text where a figure needs a number: one line naming the
    file and line. A null (a value that was not finite) is left out, and the page is written."""
    run = tmp_path / "run"
    run.mkdir()
    good = {"step": 1, "kimg": 0.1, "loss/D": 1.0, "loss/G": 1.0}
    for lines, message in [([1, good], "metrics.jsonl:1: a JSON int, not an object"),
                           ([{**good, "loss/D": "x"}], "metrics.jsonl:1: loss/D is 'x', not a number"),
                           ([good, {"step": 2, "loss/D": 1.0}], "metrics.jsonl:2: kimg is None, not a number"),
                           ([good, {"step": 2, "kimg": 0.2, "fid_nonstandard": [1]}],
                            "metrics.jsonl:2: fid_nonstandard is [1], not a number")]:
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
        assert report.main([str(run)]) == 2
        err = capsys.readouterr().err
        assert f"facegan.report: error: {run}/{message}" in err and err.count("\n") == 1, err
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {**good, "sec/kimg": None}, {"step": 2, "kimg": 0.2, "fid_nonstandard": None},
        {"step": 3, "kimg": 0.3, "fid_nonstandard": 4.0, "loss/D": 0.9, "loss/G": 1.1}]))
    assert report.main([str(run)]) == 0
    assert "fid_nonstandard" in (run / "report" / "index.html").read_text()


def test_metrics_lines_are_strict_json():
    """An infinite sec/kimg (no image yet) or a NaN value is written null, never Infinity or NaN."""
    from facegan.files import strict_json

    line = strict_json({"sec/kimg": float("inf"), "eta_s": float("-inf"), "fid": float("nan"), "step": 3,
                        "nested": {"a": [1.5, float("nan")]}, "ok": True})
    assert json.loads(line, parse_constant=lambda name: pytest.fail(name)) == {
        "sec/kimg": None, "eta_s": None, "fid": None, "step": 3, "nested": {"a": [1.5, None]}, "ok": True}


def test_report_into_a_file_or_a_read_only_folder_is_one_line(tmp_path, report_run, capsys):
    """RUN/report a regular file, or a folder nobody may write in: one line naming it, no traceback."""
    run = tmp_path / "run"
    shutil.copytree(report_run, run, ignore=shutil.ignore_patterns("report", "checkpoints"))
    (run / "report").write_text("not a folder")
    capsys.readouterr()
    assert report.main([str(run)]) == 2
    err = capsys.readouterr().err
    assert err == f"facegan.report: error: {run / 'report'}: is a file, not a folder\n", err
    (run / "report").unlink()
    (run / "report").mkdir()
    with read_only(run / "report"):
        assert report.main([str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"facegan.report: error: {run / 'report'}: cannot write there (") and err.count("\n") == 1


@pytest.fixture(scope="module")
def report_run(tmp_path_factory, synthetic_shards) -> Path:
    """A tiny run with 4 grids and two measurements, as a run with --eval-every writes them
    (shared: each test writes the same report/ from it)."""
    run = tmp_path_factory.mktemp("report") / "run"
    train(tiny(synthetic_shards, run, max_steps=8, sample_every=2, live_report=True))  # (the default)
    assert (run / "report" / "index.html").is_file()  # every run ends with its report, measured or not
    trained = (run / "report" / "index.html").read_text()
    assert "grids/step-000000008.png" in trained and "curves.png" in trained
    assert (run / "report" / "progress.gif").is_file()
    for line in (run / "metrics.jsonl").read_text().splitlines():  # strict JSON: no Infinity or NaN
        json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} in metrics.jsonl"))
    with open(run / "metrics.jsonl", "a") as f:
        for step, fid, kid in ((4, 3.0, 0.2), (8, 2.0, 0.3)):
            f.write(json.dumps({"step": step, "kimg": step * 8 / 1000, "fid_nonstandard": fid,
                                "kid_nonstandard": kid, "kid_std_nonstandard": 0.01}) + "\n")
    return run


def test_report_page(report_run):
    """report/index.html: self-contained (every file it shows sits in report/, nothing remote),
    with the config, the curves, each metric's best, the grids on a slider, the GIF, the final grid."""
    run = report_run
    assert report.main([str(run)]) == 0
    out = run / "report"
    page = (out / "index.html").read_text()
    sources = re.findall(r"src='([^']+)'", page)
    assert sources and all((out / s).is_file() for s in sources), sources
    assert "http://" not in page and "https://" not in page  # opens offline
    assert {"curves.png", "metrics.png", "throughput.png", "progress.gif", "grids/step-000000008.png"} <= set(sources)
    assert sorted(p.name for p in (out / "grids").iterdir()) == [f"step-00000000{s}.png" for s in (2, 4, 6, 8)]
    slider = json.loads(re.search(r"const grids = (\[.*?\]);", page).group(1))
    assert [g["step"] for g in slider] == [2, 4, 6, 8] and slider[-1]["kimg"] == "0.064"
    # Each metric's best, in its direction: FID lowest at step 8, KID lowest at step 4.
    table = re.findall(r"<tr><td>(\w+)</td><td>([\d.]+)</td><td>(\w+)</td><td>(\d+)</td>", page)
    assert ("fid_nonstandard", "2", "lower", "8") in table and ("kid_nonstandard", "0.2", "lower", "4") in table
    assert "stand-in feature extractors" in page and "<code>preset</code> demo" in page
    assert Image.open(out / "metrics.png").size[0] == 1000 and Image.open(out / "curves.png").size[0] == 1000


def test_report_renders_in_chromium(report_run):
    """A headless Chromium screenshot of the page: the dark header on top, figures and grids
    below (many colours), no blank page. The screenshot is kept beside the page for a look.
    CI installs Chromium (.ci/run), so there a missing browser fails instead of skipping."""
    if shutil.which("chromium") is None:
        if os.environ.get("CI"):
            pytest.fail("CI=true but Debian's chromium is not installed: .ci/run installs it")
        pytest.skip("Debian's chromium package is not installed (apt-get install chromium)")
    run = report_run
    assert report.main([str(run)]) == 0
    shot = run / "report" / "screenshot.png"
    res = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                          f"--screenshot={shot}", "--window-size=1280,1800", (run / "report" / "index.html").as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(np.int32)
    assert pixels.shape == (1800, 1280, 3)
    assert pixels[:40].mean() < 80  # the header band (#1d2430)
    body = pixels[200:]
    assert body.std() > 30 and len(np.unique(body.reshape(-1, 3), axis=0)) > 500  # figures and grids drawn
