"""A packed shard set: its manifest, the checks that refuse an incomplete one, and verification."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from facegan.data.tar_reader import TarReadError, tar_members
from facegan.files import sha256_file

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class ShardSetError(ValueError):
    """A shard set that must not be used; the message names the file and what is wrong."""


def content_hash(manifest: dict) -> str:
    """A hash of what defines the data: shard names and checksums, size, crop and format."""
    keys = {k: manifest[k] for k in ("size", "crop", "format")}
    keys["shards"] = [(s["name"], s["sha256"]) for s in manifest["shards"]]
    return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Shard:
    path: str
    count: int  # samples in this shard
    sha256: str
    bytes: int


@dataclass(frozen=True)
class ShardSet:
    root: Path
    manifest: dict
    shards: tuple[Shard, ...]

    @property
    def size(self) -> int:
        return self.manifest["size"]

    @property
    def count(self) -> int:
        return self.manifest["count"]

    @property
    def content_hash(self) -> str:
        return self.manifest["content_sha256"]


def _read_manifest(root: Path) -> dict:
    path = root / MANIFEST
    if not root.is_dir():
        raise ShardSetError(f"{root}: shard folder not found")
    if not path.exists():
        raise ShardSetError(
            f"{path}: no manifest, so this is not a complete shard set (packing did not finish?); "
            "pack it with python -m facegan.pack"
        )
    try:
        manifest = json.loads(path.read_text())
        for key in ("size", "count", "shards", "format", "content_sha256"):
            manifest[key]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ShardSetError(f"{path}: unreadable manifest ({type(e).__name__}: {e})") from None
    return manifest


def load_shardset(root: str | Path, expect_size: int | None = None) -> ShardSet:
    """Open a shard set, refusing a missing manifest, a missing or resized shard, a wrong size."""
    root = Path(root)
    manifest = _read_manifest(root)
    if expect_size is not None and manifest["size"] != expect_size:
        raise ShardSetError(
            f"{root}: shards are {manifest['size']} px but {expect_size} px was asked; "
            f"re-pack with --size {expect_size} or train at {manifest['size']} px"
        )
    shards = []
    for s in manifest["shards"]:
        path = root / s["name"]
        if not path.exists():
            raise ShardSetError(f"{path}: shard listed in the manifest is missing")
        actual = path.stat().st_size
        if actual != s["bytes"]:
            raise ShardSetError(
                f"{path}: {actual} bytes but the manifest says {s['bytes']} "
                "(truncated or changed since packing); re-pack"
            )
        shards.append(Shard(str(path), s["count"], s["sha256"], s["bytes"]))
    return ShardSet(root, manifest, tuple(shards))


def check_digest(shard: Shard, actual: str) -> None:
    if actual != shard.sha256:
        raise ShardSetError(
            f"{shard.path}: sha256 {actual[:12]}... disagrees with the manifest "
            f"({shard.sha256[:12]}...); the shard changed since packing, re-pack"
        )


# Shards whose sha256 this process has checked: hashing costs about 1 ms per MB here, so each
# shard is hashed on its first read by a process, not again on every epoch.
_VERIFIED: set[tuple[str, str]] = set()


def read_shard(shard: Shard) -> bytearray:
    """The whole shard, after checking its size (and, on first read, sha256) against the manifest."""
    try:
        with open(shard.path, "rb") as f:
            data = bytearray(os.fstat(f.fileno()).st_size)
            n = f.readinto(data)
    except OSError as e:  # removed or unreadable since the set was opened
        raise ShardSetError(f"{shard.path}: cannot read the shard ({e.strerror or e})") from None
    if n != shard.bytes:
        raise ShardSetError(f"{shard.path}: {n} bytes but the manifest says {shard.bytes} "
                            "(truncated or changed since packing); re-pack")
    if (shard.path, shard.sha256) not in _VERIFIED:
        check_digest(shard, hashlib.sha256(data).hexdigest())
        _VERIFIED.add((shard.path, shard.sha256))
    return data


def verify_checksums(shardset: ShardSet) -> None:
    """Re-hash every shard; raise ShardSetError naming the first that disagrees."""
    for shard in shardset.shards:
        check_digest(shard, sha256_file(shard.path))


def shared_shards_warning(shards: int, readers: int, count: int) -> str | None:
    """Each reader (a process's loader worker, across all nodes) streams shards of its own. With
    fewer shards than readers some share them and batches repeat images: the warning, else None."""
    if shards >= readers:
        return None
    return (f"warning: {shards} shard(s) for {readers} readers (processes x loader workers): readers "
            f"share shards, so batches hold repeated images; pack with --shard-size "
            f"{max(1, count // readers)} or less")


def iter_shard(shard: Shard) -> Iterator[dict]:
    """The samples of one shard, whose size and sha256 are checked before any sample comes out.
    The shard is read whole (a few MB); image bytes are zero-copy views into it."""
    import webdataset as wds  # here, not at the top: it loads torch, which pack and its workers never need

    buf = memoryview(read_shard(shard))
    files = ({"fname": name, "data": data, "__url__": shard.path}
             for name, data in tar_members(buf, check_headers=False))  # sha256 already checked
    count = 0
    try:
        for sample in wds.tariterators.group_by_keys(files):
            count += 1
            yield sample
    except (TarReadError, UnicodeDecodeError, ValueError) as e:
        raise ShardSetError(f"{shard.path}: corrupt shard ({e})") from None
    if count != shard.count:
        raise ShardSetError(f"{shard.path}: {count} samples but the manifest says {shard.count}")
