"""Packing: both CelebA layouts (folder, zip, Kaggle), planted bad inputs, manifest, errors."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facegan.data.imaging import BadImage, open_rgb
from facegan.data.pack import PackError, pack
from facegan.data.shardset import MANIFEST, ShardSetError, iter_shard, load_shardset
from facegan.data.sources.base import NOT_IMAGE
from facegan.data.sources.celeba import CelebAError, CelebASource, detect_layout
from facegan.data.sources.folder import FolderSource
from facegan.data.sources.synthetic import SyntheticSource
from facegan.files import sha256_file
from facegan.pack import main

from .conftest import ATTRS, CELEBA_SAMPLE, LANDMARKS


def _png(data) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(bytes(data))))


def _samples(out: Path) -> dict[str, dict]:
    shardset = load_shardset(out)
    return {s["__key__"]: s for shard in shardset.shards for s in iter_shard(shard)}


@pytest.mark.parametrize("layout", ["official-folder", "official-zip", "kaggle"])
def test_pack_celeba_layouts(tmp_path, celeba_tree, layout):
    root = tmp_path / "celeba"
    if layout == "kaggle":
        celeba_tree.write_kaggle(root)
    else:
        celeba_tree.write_official(root, zipped=layout == "official-zip")
    source = CelebASource(root, "train")
    assert source.layout == layout == detect_layout(root)

    out = tmp_path / "out"
    m = pack(source, out, size=32, crop=140, fmt="png", shard_size=3, workers=2, progress=False)

    assert m["count"] == 8  # 12 train ids - empty - truncated - not-an-image - missing
    assert [s["count"] for s in m["shards"]] == [3, 3, 2]
    assert [s["name"] for s in m["shards"]] == [f"train-{i:06d}.tar" for i in range(3)]
    reasons = {s["file"]: s["reason"] for s in m["skipped"]}
    assert set(reasons) == set(celeba_tree.bad)
    for name, why in celeba_tree.bad.items():
        assert why in reasons[name], (name, reasons[name])
    assert m["ignored"] == {"count": 1, "files": [celeba_tree.unlisted],
                            "reasons": {"not in list_eval_partition": 1}}
    assert m["source"]["layout"] == layout and m["split"] == "train"
    assert (m["size"], m["crop"], m["format"]) == (32, 140, "png")
    for s in m["shards"]:
        assert sha256_file(out / s["name"]) == s["sha256"]

    samples = _samples(out)
    expected = [f"{i:06d}" for i in (1, 2, 7, 8, 9, 10, 11, 12)]
    assert sorted(samples) == expected
    for key, sample in samples.items():
        img = Image.open(io.BytesIO(bytes(sample["png"])))
        assert img.mode == "RGB" and img.size == (32, 32)  # grayscale/CMYK/RGBA converted
        meta = json.loads(bytes(sample["json"]))
        name = key + ".jpg"
        assert meta["file"] == name and meta["partition"] == "train"
        assert meta["attributes"] == {a: v == 1 for a, v in zip(ATTRS, celeba_tree.attrs(name))}
        assert meta["landmarks"] == dict(zip(LANDMARKS, celeba_tree.landmarks(name)))
        if layout != "kaggle":  # the Kaggle release has no identity file
            assert meta["identity"] == celeba_tree.identity(name)


def test_formats_decode_to_the_same_pixels(tmp_path, celeba_tree):
    from facegan.data.stream import eval_loader

    root = celeba_tree.write_official(tmp_path / "celeba")
    images = {}
    for fmt in ("npy", "png", "jpg"):
        pack(CelebASource(root), tmp_path / fmt, size=32, fmt=fmt, progress=False)
        images[fmt] = next(iter(eval_loader(tmp_path / fmt, 8, num_workers=0, uint8=True)))
    assert torch.equal(images["npy"]["image"], images["png"]["image"])  # both lossless
    assert images["npy"]["key"] == images["jpg"]["key"]
    err = (images["npy"]["image"].float() - images["jpg"]["image"].float()).abs().mean()
    assert 0 < err < 8  # jpg q95 is close, not exact


def test_pack_split_val_and_all(tmp_path, celeba_tree):
    root = celeba_tree.write_official(tmp_path / "celeba")
    m = pack(CelebASource(root, "val"), tmp_path / "val", size=32, progress=False, split="val")
    assert m["count"] == 3 and m["shards"][0]["name"] == "val-000000.tar"
    m = pack(CelebASource(root, "all"), tmp_path / "all", size=32, progress=False, split="all")
    assert m["count"] == 18 - 4


def test_pack_is_deterministic(tmp_path, celeba_tree):
    root = celeba_tree.write_official(tmp_path / "celeba")
    a = pack(CelebASource(root), tmp_path / "a", size=32, workers=2, progress=False)
    b = pack(CelebASource(root), tmp_path / "b", size=32, workers=1, progress=False)
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
    assert a["content_sha256"] == b["content_sha256"]


def test_strict_turns_skips_into_errors(tmp_path, celeba_tree):
    root = celeba_tree.write_official(tmp_path / "celeba")
    with pytest.raises(PackError, match=r"000006\.jpg: listed in list_eval_partition .*--strict"):
        pack(CelebASource(root), tmp_path / "out", size=32, strict=True, progress=False)
    assert not (tmp_path / "out" / MANIFEST).exists()


def test_strict_decode_error_leaves_no_shards(tmp_path, celeba_tree):
    root = celeba_tree.write_official(tmp_path / "celeba")
    (root / "list_eval_partition.txt").write_text(
        "".join(f"{n} 0\n" for n in ["000001.jpg", "000002.jpg", "000004.jpg"]))
    out = tmp_path / "out"
    with pytest.raises(PackError, match=r"000004\.jpg: cannot decode"):
        pack(CelebASource(root), out, size=32, shard_size=1, strict=True, progress=False)
    assert list(out.iterdir()) == []  # the finished shard before the failure was removed too


def test_folder_source(tmp_path):
    root = tmp_path / "faces"
    (root / "a" / "b").mkdir(parents=True)
    Image.new("RGB", (50, 40), (200, 10, 10)).save(root / "a" / "one.png")
    Image.new("L", (30, 30), 128).save(root / "a" / "b" / "two.v2.jpg")
    Image.new("RGB", (30, 30)).save(root / "a" / "one.jpg")  # same key as one.png
    (root / "notes.txt").write_text("not an image")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n")
    m = pack(FolderSource(root), tmp_path / "out", size=32, progress=False)
    assert m["count"] == 2
    assert sorted(_samples(tmp_path / "out")) == ["a/b/two_v2", "a/one"]
    assert {s["file"]: s["reason"].split(" ")[0] for s in m["skipped"]} == {
        "a/one.png": "duplicate", "broken.png": "not"}
    assert m["ignored"]["files"] == ["notes.txt"]


def test_crop_and_resize_geometry(tmp_path):
    """A 178x218 image with a red centre square of side 140: crop 140 gives an all-red output."""
    root = tmp_path / "faces"
    root.mkdir()
    arr = np.zeros((218, 178, 3), np.uint8)
    arr[39:179, 19:159] = (255, 0, 0)
    Image.fromarray(arr).save(root / "x.png")
    pack(FolderSource(root), tmp_path / "c140", size=32, crop=140, fmt="png", progress=False)
    pack(FolderSource(root), tmp_path / "full", size=32, crop=None, fmt="png", progress=False)
    c140 = _png(_samples(tmp_path / "c140")["x"]["png"])
    full = _png(_samples(tmp_path / "full")["x"]["png"])
    assert c140[..., 0].min() >= 250 and c140[..., 1:].max() <= 5
    assert full[16, 0, 0] < 10 and full[16, 16, 0] > 250  # the whole width keeps black borders


def test_errors_name_the_path(tmp_path, celeba_tree):
    root = celeba_tree.write_official(tmp_path / "celeba")
    (root / "list_eval_partition.txt").unlink()
    with pytest.raises(CelebAError, match=r"list_eval_partition\.txt: partition file not found"):
        CelebASource(root).list()
    with pytest.raises(CelebAError, match="root folder not found"):
        CelebASource(tmp_path / "nope")

    zroot = tmp_path / "zipped"
    zroot.mkdir()
    (zroot / "img_align_celeba.zip").write_bytes(b"PK not really a zip")
    (zroot / "list_eval_partition.txt").write_text("000001.jpg 0\n")
    with pytest.raises(CelebAError, match=r"img_align_celeba\.zip: not a readable zip"):
        CelebASource(zroot).list()

    bad = celeba_tree.write_official(tmp_path / "bad")
    (bad / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg\n")
    with pytest.raises(CelebAError, match=r"list_eval_partition\.txt:2: expected 2 fields"):
        CelebASource(bad).list()


def test_empty_result_and_existing_output(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "bad.png").write_bytes(b"")
    with pytest.raises(PackError, match="no images to pack"):
        pack(FolderSource(empty), tmp_path / "out", size=32, progress=False)
    assert not (tmp_path / "out" / MANIFEST).exists()

    good = tmp_path / "good"
    good.mkdir()
    Image.new("RGB", (40, 40)).save(good / "a.png")
    out = tmp_path / "existing"
    out.mkdir()
    (out / "something").write_text("x")
    with pytest.raises(PackError, match=r"existing: output folder is not empty; pass --overwrite"):
        pack(FolderSource(good), out, size=32, progress=False)
    pack(FolderSource(good), out, size=32, progress=False, overwrite=True)
    assert load_shardset(out).count == 1


def test_cli_exit_codes_and_summary(tmp_path, celeba_tree, capsys):
    root = celeba_tree.write_official(tmp_path / "celeba")
    out = tmp_path / "out"
    assert main(["celeba", str(root), "--size", "32", "--out", str(out), "--no-progress",
                 "--workers", "1"]) == 0
    captured = capsys.readouterr()
    assert "official-folder layout" in captured.err
    assert f"packed 8 images into 1 shards at {out} (32 px, crop 140, npy)" in captured.out
    assert "skipped 4 (" in captured.out and "ignored 1 files (1 not in list_eval_partition)" in captured.out
    assert main(["celeba", str(root), "--size", "32", "--out", str(out), "--no-progress"]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert main(["inspect", str(out), "--verify"]) == 0
    assert "verified: 1 shards match their sha256, 8 samples decode" in capsys.readouterr().out
    assert main(["folder", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "missing: image folder not found" in capsys.readouterr().err
    assert main(["celeba", str(root), "--crop", "big", "--out", str(tmp_path / "o2")]) == 2
    assert "--crop 'big'" in capsys.readouterr().err
    for flag in ("--shard-size", "--workers", "--readers"):
        with pytest.raises(SystemExit) as e:
            main(["synthetic", "--num", "4", "--out", str(tmp_path / "o3"), flag, "0"])
        assert e.value.code == 2 and f"argument {flag}: must be at least 1, got 0" in capsys.readouterr().err


def test_module_entry_point_runs(tmp_path):
    out = tmp_path / "syn"
    cmd = [sys.executable, "-m", "facegan.pack", "synthetic", "--num", "12", "--size", "32",
           "--out", str(out), "--shard-size", "5", "--no-progress"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "packed 12 images into 3 shards" in res.stdout
    with tarfile.open(out / "train-000000.tar") as tar:  # readable by any tar tool
        assert tar.getnames()[:2] == ["000000.npy", "000000.json"]
        assert np.load(io.BytesIO(tar.extractfile("000000.npy").read())).shape == (32, 32, 3)


def test_inspect_refuses_changed_shard(tmp_path, synthetic_shards):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(synthetic_shards, copy)
    shard = copy / "train-000001.tar"
    data = bytearray(shard.read_bytes())
    data[600] ^= 0xFF  # same size, different content: only the checksum can tell
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardSetError, match=r"train-000001\.tar: sha256 .* disagrees"):
        from facegan.pack import inspect

        inspect(copy, verify=True)


class _DyingSource(SyntheticSource):
    """Synthetic faces whose loader process dies (as if killed for memory) on one item."""

    def load(self, item):
        if item.ref == 5:
            os._exit(9)
        return super().load(item)


def test_dead_worker_is_an_error_not_a_hang(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(PackError, match="a pack worker process died"):
        pack(_DyingSource(num=40, size=32), out, size=32, shard_size=10, workers=2, progress=False)
    assert not list(out.glob("*.tar")) and not (out / MANIFEST).exists()  # nothing half-written kept


@pytest.mark.slow
def test_pack_real_celeba_sample(tmp_path):
    if not (CELEBA_SAMPLE / "img_align_celeba").is_dir():
        pytest.skip(f"real CelebA sample not found at {CELEBA_SAMPLE}")
    from facegan.data.stream import eval_loader

    out = tmp_path / "celeba-64"
    m = pack(CelebASource(CELEBA_SAMPLE, "train"), out, size=64, workers=2, progress=False)
    assert m["source"]["layout"] == "official-folder"
    assert m["count"] == 4006 and m["skipped"] == [] and m["ignored"]["count"] == 0
    assert "attributes" not in json.loads(bytes(next(iter_shard(load_shardset(out).shards[0]))["json"]))
    keys = [k for b in eval_loader(out, 256, num_workers=2) for k in b["key"]]
    assert len(keys) == len(set(keys)) == 4006  # streaming also re-checks every shard's sha256


# ---------------------------------------------------------------------------------------------
# Faults that used to end in a traceback: a huge image header, an unwritable or full output.


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height: a decompression bomb without the bytes."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (90, 60, 30)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)  # IHDR data starts at byte 16
    data[29:33] = struct.pack(">I", zlib.crc32(data[12:29]))  # the CRC of "IHDR" + its 13 bytes
    return bytes(data)


def test_image_too_large_is_skipped(tmp_path):
    """Pillow raises DecompressionBombError (not OSError) above 2 x MAX_IMAGE_PIXELS: it aborted
    the whole pack with a traceback. Default settings, real CLI and its worker processes."""
    root = tmp_path / "faces"
    root.mkdir()
    Image.new("RGB", (40, 40), (10, 200, 10)).save(root / "good.png")
    (root / "bomb.png").write_bytes(png_claiming(30000, 30000))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "facegan.pack", "folder", str(root), "--size", "32", "--out", str(out),
           "--no-progress", "--workers", "2", "--readers", "1"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert "packed 1 images" in res.stdout and "skipped 1 (1 image too large)" in res.stdout
    m = json.loads((out / MANIFEST).read_text())
    assert [s["file"] for s in m["skipped"]] == ["bomb.png"]
    assert m["skipped"][0]["reason"].startswith("image too large: 30000x30000 (900000000 pixels, over the limit")


def test_image_over_the_warning_limit_is_skipped(monkeypatch):
    """Between MAX_IMAGE_PIXELS and twice that, Pillow only warns; that is refused the same way."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    buf = io.BytesIO()
    Image.new("RGB", (12, 12)).save(buf, format="JPEG")  # 144 pixels: over 100, under 200
    with pytest.raises(BadImage, match=r"^image too large: 12x12 \(144 pixels, over the limit of 100 "):
        open_rgb(buf.getvalue())


def test_output_under_a_file_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "afile").write_text("a regular file")
    out = tmp_path / "afile" / "sub"
    assert main(["synthetic", "--num", "4", "--size", "32", "--out", str(out), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.splitlines() == [f"error: {out}: Not a directory"]


class _FullDisk:
    """A disk with `room` bytes left. Writing past it raises ENOSPC with no file name, as a real
    full disk does (from a write, or from the flush in close); reading is left alone."""

    def __init__(self, room: int):
        self.room = room

    def open(self, path, mode="r", *args, **kwargs):
        if "w" not in mode:
            return open(path, mode, *args, **kwargs)
        disk = self

        class File(io.FileIO):
            def write(self, data):
                if len(data) > disk.room:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                disk.room -= len(data)
                return super().write(data)

        buffered = io.BufferedWriter(File(path, "w"))
        return buffered if "b" in mode else io.TextIOWrapper(buffered, encoding="utf-8")


@pytest.mark.parametrize("fills_at", ["second shard", "manifest"])
def test_full_disk_is_a_one_line_error_and_leaves_nothing(tmp_path, capsys, monkeypatch, fills_at):
    argv = ["synthetic", "--num", "6", "--size", "32", "--shard-size", "3", "--no-progress", "--workers", "1",
            "--readers", "1"]
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0  # the same set, on a disk with room
    shard_bytes = [s["bytes"] for s in json.loads((tmp_path / "whole" / MANIFEST).read_text())["shards"]]
    capsys.readouterr()

    room, name = {"second shard": (shard_bytes[0] + 1000, "train-000001.tar.partial"),
                  "manifest": (sum(shard_bytes) + 100, "manifest.json.tmp")}[fills_at]
    disk = _FullDisk(room)
    monkeypatch.setattr("facegan.data.shard_writer.open", disk.open, raising=False)
    monkeypatch.setattr("facegan.files.open", disk.open, raising=False)
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [f"error: {out / name}: {os.strerror(errno.ENOSPC)}"]
    assert list(out.iterdir()) == []  # no shard, no .partial, no manifest, no .tmp


# ---------------------------------------------------------------------------------------------
# The manifest: non-image files are ignored and counted; the sample layout is described.


def test_folder_counts_every_non_image_file(tmp_path, capsys):
    root = tmp_path / "faces"
    (root / ".thumbs").mkdir(parents=True)
    Image.new("RGB", (40, 40)).save(root / "a.png")
    for name in ("notes.txt", ".DS_Store", ".thumbs/Thumbs.db"):
        (root / name).write_bytes(b"x")
    out = tmp_path / "out"
    assert main(["folder", str(root), "--size", "32", "--out", str(out), "--no-progress", "--workers", "1",
                 "--readers", "1"]) == 0
    assert f"; ignored 3 files (3 {NOT_IMAGE})" in capsys.readouterr().out
    m = json.loads((out / MANIFEST).read_text())
    assert m["ignored"] == {"count": 3, "files": [".DS_Store", ".thumbs/Thumbs.db", "notes.txt"],
                            "reasons": {NOT_IMAGE: 3}}


@pytest.mark.parametrize("layout", ["official-folder", "official-zip", "kaggle"])
def test_celeba_counts_every_non_image_file(tmp_path, celeba_tree, layout):
    """Non-images beside the CelebA jpgs (notes, .DS_Store) were dropped without a count."""
    root = tmp_path / "celeba"
    extras = ["notes.txt", ".DS_Store"]
    if layout == "kaggle":
        celeba_tree.write_kaggle(root)
    else:
        celeba_tree.write_official(root, zipped=layout == "official-zip")
    if layout == "official-zip":
        with zipfile.ZipFile(root / "img_align_celeba.zip", "a") as z:
            z.writestr("img_align_celeba/", b"")  # a folder entry, as the official zip has: not a file
            for name in extras:
                z.writestr(f"img_align_celeba/{name}", b"x")
    else:
        image_dir = root / "img_align_celeba" / ("img_align_celeba" if layout == "kaggle" else "")
        for name in extras:
            (image_dir / name).write_bytes(b"x")
    listing = CelebASource(root).list()
    assert listing.ignored == [{"file": ".DS_Store", "reason": NOT_IMAGE},
                               {"file": celeba_tree.unlisted, "reason": "not in list_eval_partition"},
                               {"file": "notes.txt", "reason": NOT_IMAGE}]
    assert len(listing.items) == 11  # 12 train ids, one missing on disk


def test_manifest_describes_the_sample_layout(tmp_path, capsys):
    for fmt, image in (("npy", "uint8 HWC RGB array, shape [32,32,3] (numpy .npy)"),
                       ("png", "8-bit RGB PNG, 32x32")):
        out = tmp_path / fmt
        m = pack(SyntheticSource(3, size=32), out, size=32, fmt=fmt, progress=False)
        assert list(m["sample"]) == [fmt, "json"] and m["sample"][fmt] == image
        assert json.loads((out / MANIFEST).read_text())["sample"] == m["sample"]
        assert main(["inspect", str(out)]) == 0
        assert f"sample: .{fmt} {image}; .json source metadata" in capsys.readouterr().out
    # The hash covers only what defines the data, so adding the field changed no shard set's hash.
    keys = {"size": 32, "crop": None, "format": "png", "shards": [(s["name"], s["sha256"]) for s in m["shards"]]}
    assert m["content_sha256"] == hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()
