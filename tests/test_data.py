"""Streaming: decode, exactly-once evaluation across ranks x workers, training streams, errors."""

from __future__ import annotations

import itertools
import json
import shutil

import pytest
import torch

from facegan.data.decode import to_float
from facegan.data.samples import TrainSpec
from facegan.data.shardset import MANIFEST, ShardSetError, load_shardset
from facegan.data.stream import eval_loader, train_loader
from facegan.distribution import Dist

ALL_KEYS = [f"{i:06d}" for i in range(103)]


def _take(loader, n):
    return list(itertools.islice(iter(loader), n))


def test_decode_shapes_and_ranges(synthetic_shards):
    batch = _take(train_loader(synthetic_shards, TrainSpec(8, with_meta=True), num_workers=0), 1)[0]
    x = batch["image"]
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32
    assert -1.0 <= x.min() < -0.5 and 0.5 < x.max() <= 1.0
    assert len(batch["key"]) == 8 and all(k in ALL_KEYS for k in batch["key"])
    assert [m["index"] for m in batch["meta"]] == [int(k) for k in batch["key"]]
    raw = _take(train_loader(synthetic_shards, TrainSpec(8), num_workers=0, uint8=True), 1)[0]["image"]
    assert raw.dtype == torch.uint8 and torch.equal(to_float(raw), x)
    assert (to_float(raw) - (raw.float() / 127.5 - 1)).abs().max() < 1e-6


@pytest.mark.parametrize("workers,batch", [(2, 7), (0, 16), (3, 5)])
def test_eval_exactly_once_over_two_ranks(synthetic_shards, workers, batch):
    keys = []
    per_rank = []
    for rank in range(2):
        loader = eval_loader(synthetic_shards, batch, num_workers=workers, dist=Dist(rank, 2))
        got = [k for b in loader for k in b["key"]]
        per_rank.append(len(got))
        keys += got
    assert len(keys) == 103 and sorted(keys) == ALL_KEYS  # none missed, none repeated
    assert sorted(per_rank) == [51, 52]  # balanced to one sample, though 11 shards split unevenly


def test_eval_images_match_pack(synthetic_shards):
    from facegan.data.sources.synthetic import render_face

    batch = next(iter(eval_loader(synthetic_shards, 4, num_workers=0)))
    assert batch["key"] == ["000000", "000001", "000002", "000003"]
    face = torch.from_numpy(__import__("numpy").array(render_face(0, 2, 32))).permute(2, 0, 1)
    assert torch.equal(((batch["image"][2] + 1) * 127.5).round().to(torch.uint8), face)


def test_train_streams_differ_per_rank_and_are_endless(synthetic_shards):
    # No shuffle buffer, so the first batches come from the first epoch's shards: 2 ranks x 2
    # workers take disjoint slices of its shard permutation (each at least 13 samples).
    for per_message, batches in ((1, 2), (3, 1)):  # 2 batches: one from each worker
        streams = [train_loader(synthetic_shards, TrainSpec(8, seed=3, shuffle_buffer=1),
                                dist=Dist(r, 2), num_workers=2, batches_per_message=per_message) for r in range(2)]
        first = [set(k for b in _take(s, batches) for k in b["key"]) for s in streams]
        assert len(first[0]) == len(first[1]) == 8 * batches and not first[0] & first[1]
    streams = [train_loader(synthetic_shards, TrainSpec(8, seed=3), dist=Dist(r, 2), num_workers=2) for r in range(2)]
    assert [b["key"] for b in _take(streams[0], 3)] != [b["key"] for b in _take(streams[1], 3)]
    batches = _take(streams[1], 40)  # 40 x 8 = 320 samples from 103: it never runs dry
    assert len(batches) == 40 and all(b["image"].shape[0] == 8 for b in batches)


def test_train_stream_is_deterministic(synthetic_shards):
    def run(seed, segment=0):
        loader = train_loader(synthetic_shards, TrainSpec(8, seed=seed, segment=segment),
                              dist=Dist(1, 2), num_workers=2)
        return _take(loader, 6)

    a, b, c, d = run(0), run(0), run(1), run(0, segment=1)
    assert [x["key"] for x in a] == [x["key"] for x in b]
    assert all(torch.equal(x["image"], y["image"]) for x, y in zip(a, b))
    assert [x["key"] for x in a] != [x["key"] for x in c]
    assert [x["key"] for x in a] != [x["key"] for x in d]


@pytest.mark.filterwarnings("ignore:This DataLoader will create 3 worker processes")
@pytest.mark.parametrize("workers,per_message", [(0, 1), (2, 3), (3, 2)])
def test_a_skipped_stream_goes_on_where_the_unbroken_one_is(synthetic_shards, workers, per_message):
    """train_loader(skip=k) gives batches k, k+1, ... of the same segment, bitwise, flips included:
    whole messages and a message taken in part, each worker's turn rotated (what a resume
    mid-segment needs). Past an epoch too: 103 faces are 20 batches of 5."""
    def run(skip, n):
        loader = train_loader(synthetic_shards, TrainSpec(5, seed=4, segment=2, skip=skip, shuffle_buffer=20),
                              num_workers=workers, batches_per_message=per_message)
        return [(b["key"], b["image"]) for b in _take(loader, n)]

    unbroken = run(0, 30)
    for skip in (3, 7, 22):
        resumed = run(skip, 30 - skip)
        assert [k for k, _ in resumed] == [k for k, _ in unbroken[skip:]], skip
        assert all(torch.equal(a, b) for (_, a), (_, b) in zip(resumed, unbroken[skip:])), skip


def test_batches_per_message_only_regroups_each_workers_batches(synthetic_shards):
    """Workers send 3 batches per message: the same batches as one per message, bitwise, in each
    worker's order; with 2 workers they alternate 3 at a time instead of 1 at a time."""
    def run(workers, per_message, n):
        loader = train_loader(synthetic_shards, TrainSpec(5, seed=2, with_meta=True),
                              num_workers=workers, batches_per_message=per_message)
        return _take(loader, n)

    def same(xs, ys):
        return (len(xs) == len(ys) and [x["key"] for x in xs] == [y["key"] for y in ys]
                and [x["meta"] for x in xs] == [y["meta"] for y in ys]
                and all(torch.equal(x["image"], y["image"]) for x, y in zip(xs, ys)))

    assert same(run(1, 3, 8), run(1, 1, 8))
    single, grouped = run(2, 1, 12), run(2, 3, 12)
    w0, w1 = single[0::2], single[1::2]
    assert same(grouped, w0[0:3] + w1[0:3] + w0[3:6] + w1[3:6])
    assert not same(grouped, single)
    assert all(b["image"].shape == (5, 3, 32, 32) and len(b["key"]) == 5 for b in grouped)
    for workers in (0, 2):  # also refused where there are no workers to group for
        with pytest.raises(ValueError, match="batches_per_message must be at least 1, got 0"):
            train_loader(synthetic_shards, TrainSpec(5), num_workers=workers, batches_per_message=0)


def test_hflip(synthetic_shards):
    reference = {k: img for b in eval_loader(synthetic_shards, 50, num_workers=0)
                 for k, img in zip(b["key"], b["image"])}

    def flips(hflip):
        n = 0
        for b in _take(train_loader(synthetic_shards, TrainSpec(10, hflip=hflip), num_workers=0), 5):
            for k, img in zip(b["key"], b["image"]):
                if torch.equal(img, reference[k]):
                    continue
                assert torch.equal(img, reference[k].flip(-1))
                n += 1
        return n

    assert flips(False) == 0
    assert 10 <= flips(True) <= 40  # about half of 50


def test_missing_manifest_and_resolution(tmp_path, synthetic_shards):
    copy = tmp_path / "copy"
    shutil.copytree(synthetic_shards, copy)
    with pytest.raises(ShardSetError, match="shards are 32 px but 64 px was asked"):
        train_loader(copy, TrainSpec(8), expect_size=64)
    (copy / MANIFEST).unlink()
    with pytest.raises(ShardSetError, match=r"manifest\.json: no manifest"):
        train_loader(copy, TrainSpec(8))


def test_truncated_shard_is_refused(tmp_path, synthetic_shards):
    copy = tmp_path / "copy"
    shutil.copytree(synthetic_shards, copy)
    shard = copy / "train-000004.tar"
    shard.write_bytes(shard.read_bytes()[:3000])
    with pytest.raises(ShardSetError, match=r"train-000004\.tar: 3000 bytes but the manifest says"):
        eval_loader(copy, 8)
    # Even a manifest edited to match cannot hide it: streaming re-checks count and sha256.
    m = json.loads((copy / MANIFEST).read_text())
    m["shards"][4]["bytes"] = 3000
    (copy / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(ShardSetError, match=r"train-000004\.tar: sha256 .* disagrees"):
        [b for b in eval_loader(copy, 8, num_workers=0)]


def test_changed_shard_is_refused_while_streaming(tmp_path, synthetic_shards):
    copy = tmp_path / "copy"
    shutil.copytree(synthetic_shards, copy)
    shard = copy / "train-000002.tar"
    data = bytearray(shard.read_bytes())
    data[700] ^= 0x01
    shard.write_bytes(bytes(data))
    assert load_shardset(copy).count == 103  # same size: only the checksum can tell
    with pytest.raises(ShardSetError, match=r"train-000002\.tar: .*(the shard changed|corrupt png)"):
        [b for b in eval_loader(copy, 8, num_workers=0)]


def _flip_a_byte(shardset, tmp_path, shard="train-000000.tar"):
    copy = tmp_path / "copy"
    shutil.copytree(shardset, copy)
    data = bytearray((copy / shard).read_bytes())
    data[700] ^= 0x01  # same size: only the sha256 can tell
    (copy / shard).write_bytes(bytes(data))
    return copy, copy / shard


@pytest.mark.parametrize("loader", ["train", "eval"])
def test_changed_shard_in_a_worker_is_one_line(tmp_path, synthetic_shards, loader):
    """torch re-raises a loader worker's exception with its traceback inside the message (29
    lines): the error that reaches train.py / evaluate.py must be the one line naming the shard."""
    copy, shard = _flip_a_byte(synthetic_shards, tmp_path)
    if loader == "train":
        batches = train_loader(copy, TrainSpec(8, shuffle_buffer=10), num_workers=2, batches_per_message=1)
    else:
        batches = eval_loader(copy, 8, num_workers=2)
    with pytest.raises(ShardSetError) as caught:
        _take(batches, 60)  # 480 samples: every shard is read, several times over in training
    assert str(caught.value).startswith(f"{shard}: sha256 ") and "\n" not in str(caught.value)
    assert "disagrees with the manifest" in str(caught.value)


def test_evaluate_changed_shard_is_one_line(tmp_path, synthetic_shards, standin, capsys):
    from facegan import evaluate

    copy, shard = _flip_a_byte(synthetic_shards, tmp_path)
    code = evaluate.main(["--data", str(copy), "--data", str(synthetic_shards), "--inception-weights",
                          str(standin), "--num-workers", "2", "--no-cache", "--cpu"])
    err = capsys.readouterr().err
    # One line, on a line of its own: the progress bar is closed (and cleared) before it.
    error, rest = err.split("\r")[-1].split("\n", 1)
    assert code == 2 and "Traceback" not in err and rest.strip() == ""
    assert error.startswith(f"facegan.evaluate: error: {shard}: sha256 ") and error.endswith("re-pack")


def test_shard_removed_after_opening_is_one_line(tmp_path, synthetic_shards):
    copy = tmp_path / "copy"
    shutil.copytree(synthetic_shards, copy)
    loader = eval_loader(copy, 8, num_workers=2)  # opening checks that every shard is there
    (copy / "train-000003.tar").unlink()
    with pytest.raises(ShardSetError, match=r"^\S+train-000003\.tar: cannot read the shard \(No such file"):
        _take(loader, 20)


def test_process_holding_a_live_loader_exits(tmp_path, synthetic_shards):
    """Loader workers ignore SIGTERM (stop signals are the training process's), so
    multiprocessing's exit hook, which SIGTERMs daemonic children and then joins them without a
    time limit, would wait for ever on a process that exits with a live iterator; and torch skips
    its own worker shutdown for an iterator collected at exit. Two ways to leave: a script's
    global iterator, and pytest's end-of-session collection of a failed loader held by a caught
    exception (the case that once kept CI's finished test run from exiting)."""
    import subprocess
    import sys

    from .conftest import REPO

    code = ("import sys; from facegan.data.stream import TrainSpec, train_loader; "
            f"IT = iter(train_loader({str(synthetic_shards)!r}, TrainSpec(8), num_workers=2)); next(IT); print('held')")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout == "held\n", res.stderr[-2000:]
    node = "tests/test_data.py::test_changed_shard_in_a_worker_is_one_line[eval]"
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", node], cwd=REPO,
                         capture_output=True, text=True, timeout=90)
    assert res.returncode == 0 and "1 passed" in res.stdout, res.stdout[-2000:]
