"""Two kinds of checkpoint: full resumable state (atomic folders under RUN/checkpoints) and the
exported networks (safetensors + the network's spec as JSON) that sampling and FID load without
pickle and without knowing the architecture beforehand."""

from __future__ import annotations

import contextlib
import errno
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
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from facegan import networks
from facegan.shardset import named_os_errors, sha256_file, write_json_atomic

CHECKPOINTS = "checkpoints"
STATE_FILE = "facegan_state.json"  # written last inside a checkpoint: its presence means whole
EMA_FILE = "ema.safetensors"
STEP_DIR = re.compile(r"^step-(\d{9})$")


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
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise OSError(errno.EIO, f"cannot write ({reason}); {free:.0f} MiB free on its disk", str(path)) from e


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
        text = str(e).strip().splitlines()
        return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")
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


def cpu_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as contiguous CPU tensors, floating point ones in float32."""
    return {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous()
            for k, v in module.state_dict().items()}


def save_tensors(module: torch.nn.Module, path: Path) -> None:
    save_file(cpu_tensors(module), str(path))


def load_tensors(module: torch.nn.Module, path: Path) -> None:
    module.load_state_dict(load_file(str(path)))


def write_network(module: torch.nn.Module, path: Path, kind: str, info: dict) -> None:
    """`path` (.safetensors) and `path`.json, each written to a temporary name then renamed."""
    if not hasattr(module, "spec"):
        raise ValueError(f"{path}: cannot export a {type(module).__name__} without .spec "
                         "(build it with facegan.networks.build)")
    meta = {"facegan_network": kind, "spec": module.spec, **info}
    tmp = path.with_name(path.name + ".tmp")
    try:
        with writing(path):
            save_file(cpu_tensors(module), str(tmp), metadata={"facegan": json.dumps(meta)})
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
    finally:  # a full disk leaves the previous export whole and no half-written file beside it
        tmp.unlink(missing_ok=True)
    write_json_atomic(path.with_suffix(".json"), meta)  # names its file in any error itself


def export_generator(g: torch.nn.Module, path: str | Path, **info) -> None:
    write_network(g, Path(path), "generator", info)


def export_discriminator(d: torch.nn.Module, path: str | Path, **info) -> None:
    write_network(d, Path(path), "discriminator", info)


def _legacy_spec(kind: str, config: dict) -> dict:
    """The dcgan spec of an export written before specs, which stored the old config dataclass."""
    if kind == "generator":
        return {"arch": "dcgan", "kwargs": {"resolution": config["resolution"], "z_dim": config["z_dim"],
                                            "width": config["ngf"]}}
    return {"arch": "dcgan", "kwargs": {"resolution": config["resolution"], "width": config["ndf"],
                                        "batchnorm": config["batchnorm"], "spectral_norm": config["spectral_norm"]}}


def read_network_meta(path: str | Path) -> dict:
    """What an exported network stores: {"facegan_network": kind, "spec": ..., run info}, with
    clear errors. Older exports (a "config" and no "spec") get their dcgan spec."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: exported network not found")
    try:
        with safe_open(str(path), "pt") as f:
            meta = (f.metadata() or {}).get("facegan")
    except Exception as e:  # safetensors raises its own error types for a non-safetensors file
        raise ValueError(f"{path}: not a safetensors file ({e})") from None
    if meta is None:
        raise ValueError(f"{path}: not a facegan export (no facegan metadata)")
    try:
        meta = json.loads(meta)
        kind = meta["facegan_network"]
        if "spec" not in meta:  # written before specs
            meta["spec"] = _legacy_spec(kind, meta.pop("config"))
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        problem = f"{type(e).__name__}: {e}"
        raise ValueError(f"{path}: facegan metadata without a readable kind and spec ({problem})") from None
    return meta


def load_into(module: torch.nn.Module, path: Path, kind: str) -> None:
    try:
        load_tensors(module, path)
    except RuntimeError as e:  # load_state_dict lists every mismatch over many lines
        raise ValueError(f"{path}: its tensors do not fit the {kind} its spec describes "
                         f"({str(e).strip().splitlines()[0]})") from None


def load_network(path: str | Path, kind: str) -> tuple[torch.nn.Module, dict]:
    """An exported generator or discriminator of any registered arch, built from the spec it
    stores (no pickle involved), and its metadata."""
    meta = read_network_meta(path)
    if meta["facegan_network"] != kind:
        raise ValueError(f"{path}: holds a {meta['facegan_network']}, not a {kind}")
    try:
        module = networks.build(kind, meta["spec"])
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    load_into(module, Path(path), kind)
    return module, meta


def load_generator(path: str | Path) -> tuple[torch.nn.Module, dict]:
    return load_network(path, "generator")


def check_warm_start(module: torch.nn.Module, path: str | Path, kind: str) -> dict:
    """The export's metadata if it can warm-start `module` (same kind, same spec), else one line
    saying what differs. Specs are compared as JSON holds them (a tuple reads back as a list)."""
    meta = read_network_meta(path)
    spec = json.loads(json.dumps(module.spec))
    if meta["facegan_network"] != kind or meta["spec"] != spec:
        raise ValueError(f"{path}: a {meta['facegan_network']} with spec {meta['spec']} cannot warm-start "
                         f"this {kind} with spec {spec}")
    return meta


def warm_start(module: torch.nn.Module, path: str | Path, kind: str) -> None:
    """Load an exported network into `module` (before any channels_last or compile); the specs
    must match."""
    check_warm_start(module, path, kind)
    load_into(module, Path(path), kind)
