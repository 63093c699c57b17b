"""Resumable training state on disk: atomic step folders under RUN/checkpoints, whose state file
records every other file's size and sha256; verifying and choosing the one to resume from;
keeping the newest; setting aside another timeline's. (The exported networks that sampling and
metrics load are facegan.networks.files'.)"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import load as accelerate_load
from safetensors.torch import load_file

from facegan.cli import describe_error
from facegan.files import sha256_file, write_json_atomic

CHECKPOINTS = "checkpoints"
STATE_FILE = "facegan_state.json"  # written last inside a checkpoint: its presence means whole
EMA_FILE = "ema.safetensors"
STEP_DIR = re.compile(r"^step-(\d{9})$")


def step_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step-{step:09d}"


def complete_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoint folders in step order; temporary or unfinished ones are never listed. Whether
    their files survived intact is verify_checkpoint's question."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if STEP_DIR.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))


def read_state(path: Path) -> dict:
    """A checkpoint's state file, or ValueError naming it."""
    try:
        return json.loads((path / STATE_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path / STATE_FILE}: unreadable state file ({e})") from None


def _sync_and_hash(path: Path) -> dict:
    """{bytes, sha256} of a file, flushed to disk first: the record vouches for what is stored."""
    with open(path, "rb+") as f:
        os.fsync(f.fileno())
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def file_records(folder: Path) -> dict[str, dict]:
    """Every file of a checkpoint folder but the state file: name -> {bytes, sha256}."""
    return {p.name: _sync_and_hash(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != STATE_FILE}


def verify_checkpoint(path: Path) -> str | None:
    """None if every file the state file records is there with its size and sha256, and loads,
    else one line naming the first bad file (a disk that filled up, a truncated copy, a flipped
    byte, or bytes that were replaced together with their record)."""
    try:
        files = read_state(path).get("files")
    except ValueError as e:
        return str(e)
    if files is None:  # every facegan that wrote specs wrote file records too
        return f"{path / STATE_FILE}: records no files (incomplete or edited); their sizes and hashes cannot be checked"
    for name, want in files.items():
        file = path / name
        if not file.is_file():
            return f"{file}: missing"
        size = file.stat().st_size
        if size != want["bytes"]:
            return f"{file}: {size} bytes, but {want['bytes']} were saved (truncated or changed)"
        if sha256_file(file) != want["sha256"]:
            return f"{file}: sha256 differs from the one saved (corrupted or changed)"
    for name in files:
        problem = _unloadable(path / name)
        if problem:
            return f"{path / name}: cannot be loaded ({problem})"
    return None


RNG_KEYS = ("random_state", "numpy_random_seed", "torch_manual_seed")


def _unloadable(file: Path) -> str | None:
    """Why `file` would not load the way Accelerate's load_state loads it, or None. Accelerate
    catches a failure of the RNG files and only logs it at INFO (the run would go on, inexactly):
    those are loaded here and applied to a copy of the RNG states, then the states are put back."""
    try:
        if file.suffix == ".safetensors":
            load_file(str(file))
        elif file.suffix in (".bin", ".pt", ".pkl"):
            loaded = accelerate_load(file, map_location="cpu")  # weights_only=True, as load_state does
            if file.name.startswith("random_states_"):
                _try_rng_states(loaded)
    except Exception as e:  # unpickling, safetensors and RNG errors have many types
        return describe_error(e)
    return None


def _try_rng_states(states) -> None:
    """Apply `states` as Accelerate would, then restore the process's own; raise what fails."""
    missing = [k for k in RNG_KEYS if not isinstance(states, dict) or k not in states]
    if missing:
        raise ValueError(f"no {missing[0]!r}")
    own = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        random.setstate(states["random_state"])
        np.random.set_state(states["numpy_random_seed"])
        torch.set_rng_state(states["torch_manual_seed"])
    finally:
        random.setstate(own[0])
        np.random.set_state(own[1])
        torch.set_rng_state(own[2])


def resolve_resume(run_dir: str | Path, resume: str) -> tuple[Path | None, list[str]]:
    """(checkpoint to resume from or None, notes for the user). 'none': a fresh run; 'auto': the
    newest intact checkpoint, skipping (and noting) damaged ones; a path: that checkpoint, which
    must be complete and intact, else ValueError naming the bad file."""
    if resume == "none":
        return None, []
    if resume != "auto":
        path = Path(resume)
        if not (path / STATE_FILE).is_file():
            raise ValueError(f"--resume {resume}: not a complete facegan checkpoint (no {STATE_FILE})")
        problem = verify_checkpoint(path)
        if problem:
            raise ValueError(f"--resume {resume}: {problem}")
        return path, []
    notes = []
    for path in reversed(complete_checkpoints(run_dir)):
        problem = verify_checkpoint(path)
        if problem is None:
            return path, notes
        notes.append(f"skipping checkpoint {path.name}: {problem}")
    return None, notes


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def step_of(path: Path) -> int:
    return int(STEP_DIR.match(path.name).group(1))


def commit_checkpoint(tmp: Path, final: Path, state: dict, keep: int) -> None:
    """Main process: record every file's size and sha256 in the state file, written last; rename
    the folder into place; keep it and the keep - 1 newest of the older ones."""
    write_json_atomic(tmp / STATE_FILE, {**state, "files": file_records(tmp)})
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    older = [p for p in complete_checkpoints(final.parent.parent) if step_of(p) < step_of(final)]
    for old in older[:max(len(older) - (keep - 1), 0)]:
        shutil.rmtree(old)


def set_aside_newer(run_dir: str | Path, step: int) -> str | None:
    """Main process, at a start from `step` (0 for a fresh one): move the checkpoint folders of
    later steps (another timeline, or damaged ones a resume skipped) into
    checkpoints/abandoned-TIME/, where --resume auto never looks; nothing is deleted. Returns
    the line that says so, or None."""
    root = Path(run_dir) / CHECKPOINTS
    newer = sorted(p for p in root.iterdir() if STEP_DIR.match(p.name) and step_of(p) > step) \
        if root.is_dir() else []
    if not newer:
        return None
    aside = root / f"abandoned-{time.strftime('%Y%m%d-%H%M%S')}"
    while aside.exists():  # two starts within a second
        aside = aside.with_name(aside.name + "+")
    aside.mkdir()
    for path in newer:
        os.replace(path, aside / path.name)
    _fsync_dir(root)
    names = ", ".join(p.name for p in newer)
    return (f"this start continues from step {step}: the later checkpoint(s) {names} were moved to {aside} "
            "(kept, never resumed by --resume auto; delete them when no longer needed)")


