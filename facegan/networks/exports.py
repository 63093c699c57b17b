"""Exported networks: safetensors holding the weights, with the network's spec (and run
information) in its metadata and in a .json beside it, so a generator loads from its file alone,
without pickle and without knowing its architecture beforehand."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from facegan.cli import first_line
from facegan.files import write_json_atomic, writing
from facegan.networks.registry import build


def cpu_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as contiguous CPU tensors, floating point ones in float32."""
    return {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous()
            for k, v in module.state_dict().items()}


def content_sha256(module: torch.nn.Module) -> str:
    """sha256 of a network's tensors (names, dtypes, shapes and bytes, as an export stores them):
    the same for the same weights whatever file, device or metadata they came with. What a
    directions or latent file records of the generator it belongs to."""
    h = hashlib.sha256()
    for name, tensor in sorted(cpu_tensors(module).items()):
        h.update(f"{name}:{tensor.dtype}:{list(tensor.shape)}:".encode())
        h.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


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
    except (json.JSONDecodeError, KeyError, TypeError, RecursionError) as e:  # (JSON nested thousands deep)
        problem = f"{type(e).__name__}: {first_line(e, 200)}"
        raise ValueError(f"{path}: facegan metadata without a readable kind and spec ({problem})") from None
    return meta


def load_into(module: torch.nn.Module, path: Path, kind: str) -> None:
    try:
        load_tensors(module, path)
    except RuntimeError as e:  # load_state_dict lists every mismatch over many lines
        raise ValueError(f"{path}: its tensors do not fit the {kind} its spec describes "
                         f"({first_line(e)})") from None


def load_network(path: str | Path, kind: str) -> tuple[torch.nn.Module, dict]:
    """An exported generator or discriminator of any registered arch, built from the spec it
    stores (no pickle involved), and its metadata."""
    meta = read_network_meta(path)
    if meta["facegan_network"] != kind:
        raise ValueError(f"{path}: holds a {meta['facegan_network']}, not a {kind}")
    try:
        module = build(kind, meta["spec"])
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
