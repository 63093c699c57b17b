"""Two kinds of checkpoint: full resumable state (atomic folders under RUN/checkpoints) and the
exported networks (safetensors + JSON architecture) that sampling and FID load without pickle."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from facegan.networks import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig
from facegan.shardset import write_json_atomic

CHECKPOINTS = "checkpoints"
STATE_FILE = "facegan_state.json"  # written last inside a checkpoint: its presence means whole
EMA_FILE = "ema.safetensors"
STEP_DIR = re.compile(r"^step-(\d{9})$")


def step_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step-{step:09d}"


def complete_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoint folders in step order; temporary or unfinished ones are never listed."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if STEP_DIR.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))


def resolve_resume(run_dir: str | Path, resume: str) -> Path | None:
    """'auto': the latest complete checkpoint, or None for a fresh run; 'none': None; a path:
    that checkpoint, which must be complete."""
    if resume == "none":
        return None
    if resume == "auto":
        found = complete_checkpoints(run_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise ValueError(f"--resume {resume}: not a complete facegan checkpoint (no {STATE_FILE})")
    return path


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_checkpoint(tmp: Path, final: Path, state: dict, keep: int) -> None:
    """Main process: write the state file last, rename the folder into place, prune old ones."""
    write_json_atomic(tmp / STATE_FILE, state)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    for old in complete_checkpoints(final.parent.parent)[:-keep]:
        shutil.rmtree(old)


def cpu_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as contiguous CPU tensors, floating point ones in float32."""
    return {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous()
            for k, v in module.state_dict().items()}


def save_tensors(module: torch.nn.Module, path: Path) -> None:
    save_file(cpu_tensors(module), str(path))


def load_tensors(module: torch.nn.Module, path: Path) -> None:
    module.load_state_dict(load_file(str(path)))


def _write_network(module: torch.nn.Module, path: Path, kind: str, info: dict) -> None:
    """`path` (.safetensors) and `path`.json, each written to a temporary name then renamed."""
    meta = {"facegan_network": kind, "config": module.cfg.to_dict(), **info}
    tmp = path.with_name(path.name + ".tmp")
    save_file(cpu_tensors(module), str(tmp), metadata={"facegan": json.dumps(meta)})
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    write_json_atomic(path.with_suffix(".json"), meta)


def export_generator(g: Generator, path: str | Path, **info) -> None:
    _write_network(g, Path(path), "generator", info)


def export_discriminator(d: Discriminator, path: str | Path, **info) -> None:
    _write_network(d, Path(path), "discriminator", info)


def read_network_meta(path: str | Path) -> dict:
    """The architecture and run info stored in an exported network, with clear errors."""
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
    return json.loads(meta)


NETWORKS = {"generator": (Generator, GeneratorConfig), "discriminator": (Discriminator, DiscriminatorConfig)}


def load_network(path: str | Path, kind: str) -> tuple[torch.nn.Module, dict]:
    """An exported generator or discriminator (no pickle involved) and its metadata."""
    meta = read_network_meta(path)
    if meta["facegan_network"] != kind:
        raise ValueError(f"{path}: holds a {meta['facegan_network']}, not a {kind}")
    cls, cfg_cls = NETWORKS[kind]
    module = cls(cfg_cls(**meta["config"]))
    load_tensors(module, Path(path))
    return module, meta


def load_generator(path: str | Path) -> tuple[Generator, dict]:
    return load_network(path, "generator")
