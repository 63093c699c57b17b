"""Writes samples into numbered webdataset tar shards; a shard gets its final name only when whole."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
from pathlib import Path

from facegan.files import named_os_errors, sha256_file

PARTIAL = ".partial"


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    # Fixed owner, mode and mtime: packing the same images twice gives byte-identical shards.
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o444
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


class ShardWriter:
    def __init__(self, out: Path, split: str, shard_size: int):
        if shard_size < 1:
            raise ValueError(f"shard size must be at least 1, got {shard_size}")
        self.out, self.split, self.shard_size = Path(out), split, shard_size
        self.shards: list[dict] = []  # finished shards: name, count, sha256, bytes
        self._tar: tarfile.TarFile | None = None
        self._file = None
        self._count = 0

    def _final_path(self) -> Path:
        return self.out / f"{self.split}-{len(self.shards):06d}.tar"

    def _partial_path(self) -> Path:
        return self.out / f"{self.split}-{len(self.shards):06d}.tar{PARTIAL}"

    def write(self, key: str, ext: str, image: bytes, meta: dict) -> None:
        with named_os_errors(self._partial_path()):
            if self._tar is None:
                self._file = open(self._partial_path(), "wb")
                self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.USTAR_FORMAT)
            _add(self._tar, f"{key}.{ext}", image)
            _add(self._tar, f"{key}.json", json.dumps(meta, sort_keys=True).encode())
        self._count += 1
        if self._count == self.shard_size:
            self._finish()

    def _finish(self) -> None:
        partial, final = self._partial_path(), self._final_path()
        with named_os_errors(partial):  # a full disk may first show at close or fsync
            self._tar.close()
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        os.replace(partial, final)
        self.shards.append(
            {"name": final.name, "count": self._count, "sha256": sha256_file(final),
             "bytes": final.stat().st_size}
        )
        self._tar, self._file, self._count = None, None, 0

    def close(self) -> list[dict]:
        if self._tar is not None:
            self._finish()
        return self.shards

    def abort(self) -> None:
        """Remove the unfinished shard; finished ones stay but no manifest will vouch for them."""
        if self._file is not None:
            with contextlib.suppress(OSError):  # closing flushes, which fails again on a full disk
                self._file.close()
            # Also its final name: renamed, but not yet listed in self.shards when hashing it failed.
            for path in (self._partial_path(), self._final_path()):
                path.unlink(missing_ok=True)
            self._tar, self._file = None, None
