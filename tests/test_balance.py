"""Balanced streams (--balance, --balance-to): the plan's counts and weights, the stream's shares,
exact resume, every arch, the attr metric's report, pack inspect, and one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from facegan import pack as pack_cli
from facegan import report
from facegan.data import balance as balancing
from facegan.data.pack import pack
from facegan.data.samples import TrainSpec
from facegan.data.shardset import load_shardset
from facegan.data.sources.folder import FolderSource
from facegan.data.sources.synthetic import SyntheticSource
from facegan.data.stream import train_loader
from facegan.distribution import Dist
from facegan.metrics import classifier, score
from facegan.metrics.features import Extractors
from facegan.networks import exports, sampling
from facegan.train import config_from_args
from facegan.train import main as train_main
from facegan.training import loop as training_loop
from facegan.training.loop import train

from .runs import _flags, sha, sigterm_at, tiny


def skewed(folder: Path, share: float, num: int = 60) -> Path:
    """`num` synthetic faces at 32 px, exactly `share` of them with Eyeglasses, in shards of 10."""
    pack(SyntheticSource(num, seed=0, size=32, share=("Eyeglasses", share)), folder, size=32, shard_size=10,
         progress=False)
    return folder


@pytest.fixture(scope="module")
def glasses10(tmp_path_factory) -> Path:
    return skewed(tmp_path_factory.mktemp("balance") / "glasses10", 0.1)


def shares(loader, batches: int) -> tuple[float, list[str]]:
    it, seen, keys = iter(loader), [], []
    for _ in range(batches):
        batch = next(it)
        seen += [m["attributes"]["Eyeglasses"] for m in batch["meta"]]
        keys += batch["key"]
    return sum(seen) / len(seen), keys


def test_plan_weights_and_the_stream_shows_the_targets(glasses10):
    """6 of 60 faces wear glasses: each is shown 5x per epoch and each other face 0.56x, so the
    stream (two loader workers, stochastic rounding) shows glasses in half of its images, and every
    face still appears; with --balance-to Eyeglasses=0.3, in 30%. A pure function of the seed."""
    shardset = load_shardset(glasses10)
    plan = balancing.plan(shardset, ("Eyeglasses",))
    assert plan.counts == {(0,): 54, (1,): 6} and plan.check() == []
    assert plan.weights() == pytest.approx({(0,): 0.5 * 60 / 54, (1,): 5.0})
    assert plan.data_shares() == {"Eyeglasses": 0.1} and plan.stream_shares() == pytest.approx({"Eyeglasses": 0.5})
    assert plan.describe() == ("balanced stream (2 cells): Eyeglasses 10.0% -> 50.0%; the rarest cell "
                               "(Eyeglasses=1, 6 images) is shown 5.00x per epoch")

    def loader(balance):
        return train_loader(shardset, TrainSpec(8, seed=3, shuffle_buffer=100, with_meta=True, balance=balance),
                            dist=Dist(0, 1), num_workers=2)

    plain, _ = shares(loader(None), 100)
    balanced, keys = shares(loader(plan), 200)  # 1,600 images: the share's sd is 1.25 points
    assert 0.07 <= plain <= 0.13 and 0.45 <= balanced <= 0.55, (plain, balanced)
    assert len(set(keys)) == 60  # nothing is dropped for good
    assert shares(loader(plan), 200)[1] == keys  # the same draws every time
    third = balancing.plan(shardset, ("Eyeglasses",), balancing.parse_targets("Eyeglasses=0.3", ("Eyeglasses",)))
    assert third.weights()[(1,)] == pytest.approx(3.0) and 0.25 <= shares(loader(third), 200)[0] <= 0.35


def test_rare_cells_are_warned_and_empty_ones_refused(tmp_path, glasses10):
    one = balancing.plan(load_shardset(skewed(tmp_path / "one", 1 / 60)), ("Eyeglasses",))
    assert one.check() == ["--balance: the 1 images of Eyeglasses=1 (1.7% of the data) are shown 30.0 times per "
                           "epoch each (over 10): expect the generator to memorise them"]
    none = balancing.plan(load_shardset(skewed(tmp_path / "none", 0.0)), ("Eyeglasses",))
    with pytest.raises(ValueError, match=r"^--balance Eyeglasses: no sample has Eyeglasses=1 \(of 60\); a cell "):
        none.check()
    zero = balancing.parse_targets("Eyeglasses=0", ("Eyeglasses",))  # a target of 0 asks nothing of that cell
    assert balancing.plan(load_shardset(tmp_path / "none"), ("Eyeglasses",), zero).check() == []
    for text, expected in [("Eyeglasses", "'Eyeglasses' is not NAME=SHARE"), ("Male=0.5", "Male is not named in"),
                           ("Eyeglasses=1.5", "Eyeglasses=1.5 must lie in [0, 1]"),
                           ("Eyeglasses=x", "Eyeglasses=x is not a number")]:
        with pytest.raises(ValueError, match=expected.replace("[", r"\[").replace("]", r"\]")):
            balancing.parse_targets(text, ("Eyeglasses",))


def test_bad_input_is_one_line(tmp_path, glasses10, capsys):
    """Unknown attribute, empty cell, shards without attributes, a --balance-to name not balanced."""
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (32, 32), (60 * i, 0, 0)).save(folder / f"{i}.png")
    plain = tmp_path / "plain"
    pack(FolderSource(folder), plain, size=32, progress=False)
    cases = [(glasses10, ["--balance", "Male"], "--balance Male: not an attribute of the shards at"),
             (skewed(tmp_path / "none", 0.0), ["--balance", "Eyeglasses"], "no sample has Eyeglasses=1 (of 60)"),
             (plain, ["--balance", "Eyeglasses"], "they have: none (their source records no attributes;"),
             (glasses10, ["--balance", "Eyeglasses", "--balance-to", "Smiling=0.5"], "Smiling is not named in")]
    for data, extra, expected in cases:
        code = train_main(_flags(data, tmp_path / "run", **{"max-steps": 1}) + extra)
        err = capsys.readouterr().err.strip().splitlines()
        assert code in (1, 2) and err[-1].startswith("facegan/train.py: error:") and expected in err[-1], err[-3:]
        assert not list((tmp_path / "run").glob("checkpoints/step-*"))


def test_balanced_run_resumes_exactly_and_exports_its_stream(tmp_path, glasses10, monkeypatch, capsys):
    """A balanced run stopped by SIGTERM (two loader workers, segments of 20 batches) resumes to
    the same bits as the unbroken run; its start line, RUN/balance.json and the export say what
    the stream shows."""
    monkeypatch.setattr(training_loop, "SEGMENT_IMAGES", 160)
    flags = {"max-steps": 24, "log-every": 4, "sample-every": 100, "num-workers": 2, "balance": "Eyeglasses"}

    def start(run, hooks=None, **kw):
        train(config_from_args(_flags(glasses10, run, **flags, **kw))[0], hooks)

    start(tmp_path / "one", **{"ckpt-every": 1000})
    assert "facegan: balanced stream (2 cells): Eyeglasses 10.0% -> 50.0%" in capsys.readouterr().err
    start(tmp_path / "two", sigterm_at(1), **{"ckpt-every": 3})
    start(tmp_path / "two", **{"ckpt-every": 3})
    for net in ("generator", "discriminator"):
        assert sha(tmp_path / "two" / f"{net}.safetensors") == sha(tmp_path / "one" / f"{net}.safetensors")
    unbalanced = tmp_path / "plain"
    train(config_from_args(_flags(glasses10, unbalanced, **{**flags, "balance": ""}))[0])
    assert sha(unbalanced / "generator.safetensors") != sha(tmp_path / "one" / "generator.safetensors")
    planned = json.loads((tmp_path / "one" / "balance.json").read_text())
    assert planned["data"] == {"Eyeglasses": 0.1} and [c["samples"] for c in planned["cells"]] == [54, 6]
    meta = exports.read_network_meta(tmp_path / "one" / "generator.safetensors")
    assert meta["data"]["balance"]["targets"] == {"Eyeglasses": 0.5}
    assert report.main([str(tmp_path / "one")]) == 0  # the report's run table says what the stream showed
    assert ("Eyeglasses 10.0% in the data, 50.0% shown; the rarest cell (Eyeglasses=1, 6 images) shown 5.00x per "
            "epoch") in (tmp_path / "one" / "report" / "index.html").read_text()


@pytest.mark.parametrize("arch,loss", [("resnet", "hinge"), ("r3gan", "rpgan"), ("stylegan2", "nonsat"),
                                       ("dcgan", "lsgan")])
def test_every_arch_and_loss_trains_balanced(tmp_path, glasses10, arch, loss):
    """The stream is below the networks: each arch and loss takes it (the default dcgan/bce in the
    resume test above)."""
    cfg = tiny(glasses10, tmp_path / "run", arch=arch, loss=loss, max_steps=2, ckpt_every=2, balance=("Eyeglasses",),
               balance_to="Eyeglasses=0.4")
    assert train(cfg).is_file()
    assert json.loads((tmp_path / "run" / "balance.json").read_text())["stream"] == {"Eyeglasses": pytest.approx(0.4)}


def test_attr_metric_reports_generated_data_and_target_shares(tmp_path, glasses10):
    """An unconditional G trained on a balanced stream: attr reports each balanced attribute's
    generated share (the classifier's verdicts on its images) beside the data's and the target."""
    gen = train(tiny(glasses10, tmp_path / "run", max_steps=2, balance=("Eyeglasses",)))
    g, meta = exports.load_generator(gen)
    torch.manual_seed(0)
    model = classifier.Classifier(32, ["Smiling", "Eyeglasses"], width=8).eval()
    extractors = Extractors({"attributes": classifier.AttributeReader(model, {"attributes": model.attributes,
                                                                            "accuracy": {}})})
    record = score.score_generator(extractors, ["attr"], g, load_shardset(glasses10), 16, seed=2, num_workers=0,
                                   balance=balancing.Shares.from_json(meta["data"]["balance"], str(gen)))
    images = torch.cat(list(sampling.generate_uint8(g, sampling.latents(16, g.z_dim, 2), 16)))
    generated = float(classifier.predict(model, images)[:, 1].mean())
    assert record["attr_generated/Eyeglasses"] == pytest.approx(generated)
    assert (record["attr_data/Eyeglasses"], record["attr_target/Eyeglasses"]) == (0.1, 0.5)
    assert record["attr"] == record["attr/Eyeglasses"] == pytest.approx(1 - abs(generated - 0.5))
    assert "Eyeglasses" in score.describe(record) and "(data 10.0%, target 50.0%)" in score.describe(record)


def test_pack_inspect_prints_shares_and_joint_counts(glasses10, capsys):
    assert pack_cli.main(["inspect", str(glasses10), "--joint", "Eyeglasses,Smiling"]) == 0
    out = capsys.readouterr().out
    assert "attributes (11, share of 60 samples):" in out and re.search(r"  Eyeglasses +10\.0%", out)
    counts = {line.split()[0]: int(line.split()[1]) for line in out.splitlines() if line.startswith("  Eyeglasses=")}
    assert sum(counts.values()) == 60 and counts["Eyeglasses=1,Smiling=0"] + counts["Eyeglasses=1,Smiling=1"] == 6
