"""Files written safely: one OSError naming the file for any write failure, atomic JSON, sha256.
Shared by the shard writer, checkpoints, exports and the run folder's logs."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
from safetensors import SafetensorError

from facegan.cli import first_line


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def is_number(value: object) -> bool:
    """An int or float (numpy's too) and not a bool: what a metrics line or a tracker may plot."""
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)


def finite_or_null(value: object) -> object:
    """`value` with every inf and NaN float (in lists and dicts too) made None: JSON has no
    Infinity or NaN, and strict readers (jq, JavaScript, pandas' default) refuse them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(v) for v in value]
    return value


def strict_json(value: object) -> str:
    """One line of strict JSON: a non-finite number is written null."""
    return json.dumps(finite_or_null(value), allow_nan=False)


def probe_folder(path: str | Path, flag: str = "") -> Path:
    """Make the output folder `path` and check that a file can be written in it, before any work
    (a projection runs for minutes): ValueError in one line naming the path that stands in the
    way (a regular file where a folder should be, a read-only folder, no permission)."""
    path = Path(path)
    prefix = f"{flag} {path}" if flag else str(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".facegan-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except FileExistsError as e:
        where = "" if Path(e.filename) == path else f"{e.filename} "
        raise ValueError(f"{prefix}: {where}is a file, not a folder") from None
    except OSError as e:
        raise ValueError(f"{prefix}: cannot write there ({e.filename}: {e.strerror or e})") from None
    return path


@contextlib.contextmanager
def named_os_errors(path: str | Path):
    """A full disk raises OSError with no file name (ENOSPC from write, flush, fsync or close):
    give it `path`, so that the one-line error says which file could not be written."""
    try:
        yield
    except OSError as e:
        if e.filename is not None:
            raise
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None


def write_json_atomic(path: Path, obj: dict) -> None:
    """Write to a temporary name, fsync, then rename: readers see the old file or the whole new one."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with named_os_errors(tmp), open(tmp, "w") as f:
            json.dump(obj, f, indent=1)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:  # after a failure (a full disk), no half-written file stays beside the old one
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def writing(path: Path):
    """Any failure while writing `path` becomes one OSError naming it. A full disk reaches us as
    OSError without a file name (a failed write), as RuntimeError from torch.save ("unexpected
    pos ...") or as SafetensorError, none of which says where; the last two get the disk's free
    space, the likely cause, beside their own words."""
    try:
        with named_os_errors(path):
            yield
    except (RuntimeError, SafetensorError) as e:
        disk = next(p for p in (Path(path), *Path(path).absolute().parents) if p.exists())
        free = shutil.disk_usage(disk).free / 2**20
        reason = first_line(e) or type(e).__name__
        raise OSError(errno.EIO, f"cannot write ({reason}); {free:.0f} MiB free on its disk", str(path)) from e
