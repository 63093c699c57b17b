"""Attribute conditioning: the synthetic faces' attributes, the attribute stream, the conditional
networks (projection D), training and exact resume, sampling on request, the attr metric."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from facegan import networks, report, sample
from facegan.data import attributes as conditioning
from facegan.data.pack import pack
from facegan.data.samples import TrainSpec
from facegan.data.shardset import load_shardset
from facegan.data.sources.synthetic import SMILE_MIN, SyntheticSource, face_attributes, face_factors
from facegan.data.stream import eval_loader, train_loader
from facegan.networks import exports, sampling
from facegan.training.loop import train

from .conftest import pack_small
from .runs import sha, tiny

PAIR = "Smiling,Eyeglasses"


def test_synthetic_faces_carry_celeba_named_attributes(tmp_path):
    """Every face's json has CelebA-named booleans that follow its drawn factors; Smiling has a
    gap around its threshold (never a close call); the manifest counts each attribute."""
    for i in range(40):
        f = face_factors(0, i)
        a = face_attributes(f)
        assert a["Eyeglasses"] == (f["glasses"] != "none") and a["Mouth_Slightly_Open"] == f["mouth_open"]
        assert a["Smiling"] == (f["smile"] >= SMILE_MIN) and not 0.2 < f["smile"] < SMILE_MIN
        assert sum(a[k] for k in ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair", "Bald")) <= 1
    manifest = pack(SyntheticSource(30, seed=0, size=32), tmp_path / "s", size=32, shard_size=10, progress=False)
    expected = {n: sum(face_attributes(face_factors(0, i))[n] for i in range(30)) for n in manifest["attributes"]}
    assert manifest["attributes"] == expected and 0 < expected["Smiling"] < 30 and 0 < expected["Eyeglasses"] < 30


def test_attribute_stream_matches_the_json(tmp_path):
    """Train and eval streams yield each image's attributes, in the order asked, as its json has them."""
    shards = pack_small(tmp_path / "s", seed=3, num=20)
    names = ["Eyeglasses", "Smiling", "Blond_Hair"]
    seen = {}
    for batch in eval_loader(shards, 6, num_workers=2, with_meta=True, attributes=names):
        for key, meta, row in zip(batch["key"], batch["meta"], batch["attrs"]):
            seen[key] = row.tolist()
            assert row.tolist() == [float(meta["attributes"][n]) for n in names]
    assert len(seen) == 20
    stream = iter(train_loader(shards, TrainSpec(8, with_meta=True, attributes=tuple(names), shuffle_buffer=10),
                               num_workers=2))
    for _ in range(4):  # more than an epoch, mirrored images included
        batch = next(stream)
        assert batch["attrs"].shape == (8, 3) and batch["attrs"].dtype == torch.float32
        assert all(row.tolist() == seen[k] for k, row in zip(batch["key"], batch["attrs"]))


def test_unknown_attribute_is_one_line_listing_the_known(tmp_path, small_shards):
    with pytest.raises(ValueError, match=r"^--condition Wings: not an attribute of the shards at .*; they have: "
                                         r"Bald, Bangs, Black_Hair, .*Smiling$"):
        train(tiny(small_shards, tmp_path / "run", condition="Smiling,Wings"))
    from facegan.data.sources.folder import FolderSource

    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (40, 40), (i * 60, 90, 120)).save(folder / f"{i}.png")
    plain = pack(FolderSource(folder), tmp_path / "plain", size=32, progress=False)
    assert plain["attributes"] == {}
    with pytest.raises(ValueError, match="they have: none"):
        conditioning.check_names(["Smiling"], load_shardset(tmp_path / "plain"))
    with pytest.raises(ValueError, match="Smiling named twice"):
        conditioning.parse_condition("Smiling,Smiling")


@pytest.mark.parametrize("arch", ["dcgan", "resnet", "r3gan"])
def test_conditional_networks(arch):
    """G(z, attrs) at 32/64/128 px; the projection D on known inputs: head(phi(x)) plus
    sum_k s_k <v_k, phi(x)>, s = +1 where the attribute is true and -1 where false."""
    torch.manual_seed(0)
    for resolution in (32, 64, 128):
        g_spec, d_spec = networks.make_specs(arch, resolution, 16, 8, 8, {}, {"Smiling": 0.4, "Eyeglasses": 0.1})
        g, d = networks.build("generator", g_spec), networks.build("discriminator", d_spec).eval()
        attrs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        images = g(torch.randn(3, 16), attrs)
        assert images.shape == (3, 3, resolution, resolution) and g.z_dim == 16
        assert networks.attributes(g) == networks.attributes(d) == ["Smiling", "Eyeglasses"]
        with torch.no_grad():
            d.embed.copy_(torch.randn_like(d.embed))
            phi = d.net.features(images)
            expected = d.net.head(phi) + (phi * d.embed[0]).sum(1) * (2 * attrs[:, 0] - 1) \
                + (phi * d.embed[1]).sum(1) * (2 * attrs[:, 1] - 1)
            assert torch.allclose(d(images, attrs), expected, atol=1e-5)
            assert torch.allclose(d.net(images), d.net.head(phi))  # forward is head(features)
            flipped = d(images, 1 - attrs)  # the projection term changes sign
            assert torch.allclose(flipped - d.net.head(phi), -(expected - d.net.head(phi)), atol=1e-5)
    with pytest.raises(ValueError, match=r"attrs of shape \(3, 1\): expected \[3, 2\]"):
        g(torch.randn(3, 16), attrs[:, :1])


def test_conditional_training_resumes_bitwise_and_exports_its_attributes(tmp_path, small_shards):
    """8 steps at once, and 4 + a resume for 4 more: the same G, bit for bit. The export records
    the attributes in order with their training frequencies; the fixed grids' rows show settings."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(tiny(small_shards, straight, condition=PAIR, max_steps=8))
    train(tiny(small_shards, resumed, condition=PAIR, max_steps=4))
    train(tiny(small_shards, resumed, condition=PAIR, max_steps=8))
    assert sha(straight / "generator.safetensors") == sha(resumed / "generator.safetensors")
    meta = json.loads((straight / "generator.json").read_text())
    manifest = load_shardset(small_shards).manifest
    assert meta["spec"]["condition"] == {"attributes": ["Smiling", "Eyeglasses"],
                                         "frequencies": [manifest["attributes"]["Smiling"] / 24,
                                                         manifest["attributes"]["Eyeglasses"] / 24]}
    g, _ = exports.load_generator(straight / "generator.safetensors")
    assert networks.attributes(g) == ["Smiling", "Eyeglasses"]
    settings = sampling.grid_settings(2, 16, 4)  # 16 samples, 4 a row: none, Smiling, Eyeglasses, both
    assert settings[::4].tolist() == [[0, 0], [1, 0], [0, 1], [1, 1]] and (settings[:4] == 0).all()
    with pytest.raises(ValueError, match="condition=Smiling,Eyeglasses, not condition=none"):
        train(tiny(small_shards, resumed, max_steps=12))


def test_sampling_on_request_and_the_sweep_grid(tmp_path, small_shards, capsys):
    """--attributes fixes the named ones; --sweep puts each latent on a row, its columns each
    swept attribute off then on: every cell is G(that row's z, that column's attributes)."""
    run = tmp_path / "run"
    gen = train(tiny(small_shards, run, condition=PAIR, max_steps=2))
    out = tmp_path / "sweep.png"
    assert sample.main(["--generator", str(gen), "--out", str(out), "--sweep", "Eyeglasses,Smiling", "--num", "3",
                        "--seed", "5", "--cpu"]) == 0
    assert "columns: Eyeglasses=0, Eyeglasses=1, Smiling=0, Smiling=1" in capsys.readouterr().err
    grid = torch.from_numpy(np.array(Image.open(out))).permute(2, 0, 1)
    assert grid.shape == (3, 2 + 3 * 34, 2 + 4 * 34)  # 3 rows, 4 columns of 32 px with 2 px borders
    g, _ = exports.load_generator(gen)
    z = sample.latents(3, g.z_dim, 5, None)
    base = sampling.draw(g.frequencies, 3, torch.Generator().manual_seed(6))
    for row in range(3):
        for col, (k, value) in enumerate([(1, 0.0), (1, 1.0), (0, 0.0), (0, 1.0)]):
            attrs = base[row:row + 1].clone()
            attrs[0, k] = value
            expected = next(sample.generate_uint8(g, z[row:row + 1], 1, attrs))[0]
            cell = grid[:, 2 + row * 34:34 + row * 34, 2 + col * 34:34 + col * 34]
            assert torch.equal(cell, expected), (row, col)
    assert sample.main(["--generator", str(gen), "--out", str(out), "--attributes", "Smiling=1,Wings=0"]) == 2
    assert "--attributes 'Wings': the generator is conditioned on Smiling, Eyeglasses" in capsys.readouterr().err
    fixed = sampling.draw([0.5, 0.5], 200, torch.Generator().manual_seed(0), {0: 1.0})
    assert (fixed[:, 0] == 1).all() and 60 < fixed[:, 1].sum() < 140


def test_attr_metric_scores_what_was_asked(tmp_path, small_shards, capsys):
    """A classifier trained on the shards; evaluate --metrics attr reports, per attribute, the
    share of generated images whose classified attribute equals the one asked, without loading
    Inception (whose standard weights this machine cannot download); a classifier under 85%
    held-out accuracy is named in the warning."""
    from facegan import attributes, evaluate
    from facegan.metrics import classifier
    from facegan.networks.sampling import latent_attributes

    clf = tmp_path / "clf.safetensors"
    (tmp_path / "file").write_text("")  # an --out under a regular file: one line, before any training
    assert attributes.main(["train", str(small_shards), "--out", str(tmp_path / "file" / "c.safetensors")]) == 2
    assert capsys.readouterr().err == f"facegan.attributes: error: --out {tmp_path / 'file'}: is a file, not a folder\n"
    assert attributes.main(["train", str(small_shards), "--out", str(clf), "--attributes", PAIR,
                            "--epochs", "2", "--width", "8"]) == 0
    printed = capsys.readouterr().out
    assert "held-out accuracy" in printed and "accuracy/Smiling" in printed
    model, meta = classifier.load_classifier(clf)
    assert meta["attributes"] == ["Smiling", "Eyeglasses"] and meta["heldout_images"] == 3  # indices 0, 10, 20
    run = tmp_path / "run"  # measured during training too: in metrics.jsonl and the report
    gen = train(tiny(small_shards, run, condition="Eyeglasses,Smiling", max_steps=2, metrics="attr", eval_every=2,
                     eval_samples=8, attr_classifier=str(clf)))
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    measured = [r for r in logged if "attr/Eyeglasses" in r]
    assert [r["step"] for r in measured] == [2] and 0 <= measured[0]["attr"] <= 1
    assert report.main([str(run)]) == 0 and "attr/Smiling" in (run / "report" / "index.html").read_text()
    code = evaluate.main(["--generator", str(gen), "--data", str(small_shards), "--metrics", "attr",
                          "--attr-classifier", str(clf), "--num-samples", "12",  # no Inception needed
                          "--seed", "4", "--num-workers", "0"])
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0
    g, _ = exports.load_generator(gen)
    asked = latent_attributes(g, 12, 4)  # [12, 2]: Eyeglasses, Smiling
    images = torch.cat(list(sample.generate_uint8(g, sample.latents(12, g.z_dim, 4, None), 12, asked)))
    shown = classifier.predict(model, images)[:, [1, 0]]  # the classifier's order is Smiling, Eyeglasses
    hits = (shown == asked).float().mean(0)
    assert record["attr/Eyeglasses"] == pytest.approx(float(hits[0]))
    assert record["attr/Smiling"] == pytest.approx(float(hits[1]))
    assert record["attr"] == pytest.approx(float(hits.mean()))
    if classifier.weak(meta):
        assert "with under 85% held-out accuracy" in record["warning"]
    assert math.isfinite(record["attr"])
