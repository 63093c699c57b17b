"""One pass of feature extraction over a set of images, split across ranks: what every metric reads.

Each rank extracts features for its share of the images. Two things come out of a pass:
- moments (count, sum, sum of outer products of Inception's pool3 features, in float64), which
  the caller's `reduce` sums over ranks: FID's mean and covariance, the single-process result up
  to float64 rounding;
- rows: the features themselves, for the metrics that need every image (KID, IS, precision and
  recall). Every image has a global index (its latent, its file, its place in the manifest), each
  rank writes its rows into a zero matrix at those indices and `reduce` sums the matrices, so every
  rank holds all rows in the same order whatever the number of ranks and loader workers.

Real sets (packed shards or an image folder) are the reference: their moments and rows are cached
on disk under a key naming the data, the extractor and its weights (see `data_key`).

Distributed code stays with the caller: a `Dist` (facegan/distribution.py) says this process's
rank, the number of processes and how to sum a tensor over them (`Dist.of(accelerator)`); the
default is one process.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from facegan.data.balance import Shares
from facegan.data.shardset import ShardSet
from facegan.data.stream import eval_loader
from facegan.distribution import ONE, Dist, Reduce, identity
from facegan.metrics.extractors import Extractors
from facegan.metrics.inception import EXTRACTOR, FEATURE, Inception
from facegan.networks.sampling import generate_uint8, latent_attributes, latents
from facegan.progress import progress_bar

FEATURE_DIM = int(FEATURE)  # dimensions of the feature FID compares
STATS_VERSION = 1  # bump when the way statistics are computed changes
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def default_cache_dir() -> Path:
    root = os.environ.get("FACEGAN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "facegan")
    return Path(root) / "fid-stats"


@dataclass
class Stats:
    mu: np.ndarray  # float64 [2048]
    sigma: np.ndarray  # float64 [2048, 2048]
    count: int


class Moments:
    """Running count, sum and sum of outer products of feature vectors, in float64."""

    def __init__(self, dim: int, device: torch.device):
        self.dim = dim
        self.packed = torch.zeros(1 + dim + dim * dim, dtype=torch.float64, device=device)

    def add(self, features: torch.Tensor) -> None:
        f = features.to(self.packed.device, torch.float64)
        self.packed[0] += f.shape[0]
        self.packed[1:1 + self.dim] += f.sum(0)
        self.packed[1 + self.dim:].view(self.dim, self.dim).addmm_(f.T, f)

    def stats(self, reduce: Reduce = identity) -> Stats:
        """Sum over ranks, then mean and unbiased covariance (np.cov's), on every rank."""
        total = reduce(self.packed.clone()).cpu().numpy()
        n, d = int(round(total[0])), self.dim
        if n < 2:
            raise ValueError(f"FID needs at least 2 images per side, got {n}")
        mu = total[1:1 + d] / n
        sigma = (total[1 + d:].reshape(d, d) - n * np.outer(mu, mu)) / (n - 1)
        return Stats(mu, (sigma + sigma.T) / 2, n)


# ---------------------------------------------------------------------------------------------
# What a pass keeps.


@dataclass(frozen=True)
class Needs:
    """What a pass over one image set keeps: pool3 moments, and the kinds kept as whole rows."""

    moments: bool = False
    rows: frozenset[str] = field(default_factory=frozenset)

    def __or__(self, other: Needs) -> Needs:
        return Needs(self.moments or other.moments, self.rows | other.rows)

    def kinds(self) -> set[str]:
        return set(self.rows) | ({"pool"} if self.moments else set())


@dataclass
class Features:
    """One image set's features, the same on every rank."""

    count: int
    stats: Stats | None = None
    rows: dict[str, torch.Tensor] = field(default_factory=dict)  # kind -> float32 [count, dim], CPU
    attrs: torch.Tensor | None = None  # generated: the attributes asked of G, [count, K] (K = 0: unconditional)
    attr_names: list[str] = field(default_factory=list)
    balance: Shares | None = None  # an unconditional G's --balance stream: what attr.py scores it against


Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]  # (uint8 [B,3,H,W], global indices [B])


def extract(extractors: Extractors, batches: Batches, total: int, needs: Needs, *, dist: Dist = ONE,
            progress: bool = False, desc: str = "features") -> Features:
    """One pass over this rank's batches of a set of `total` images; every rank gets the whole."""
    device = extractors.device
    moments = Moments(FEATURE_DIM, device) if needs.moments else None
    dims = extractors.dims()
    rows = {kind: torch.zeros(total, dims[kind], device=device) for kind in sorted(needs.rows)}
    seen = 0
    with progress_bar(total, desc, enabled=progress, leave=False) as bar:  # closed on errors too
        for images, index in batches:
            features = extractors(images, needs.kinds())
            if moments is not None:
                moments.add(features["pool"])
            for kind, matrix in rows.items():
                matrix[index.to(device)] = features[kind].to(matrix.dtype)
            seen += images.shape[0]
            bar.update(images.shape[0])
    count = int(dist.reduce(torch.tensor([float(seen)], dtype=torch.float64, device=device)).item())
    if count != total:
        raise RuntimeError(f"{desc}: read {count} images, expected {total}")
    # Summing zero-filled matrices over ranks is exact: every row is written by one rank only.
    return Features(count, moments.stats(dist.reduce) if moments is not None else None,
                    {kind: dist.reduce(matrix).cpu() for kind, matrix in rows.items()})


# ---------------------------------------------------------------------------------------------
# Image sets: generated, a folder, packed shards. Each gives this rank's (images, indices).


def generated_batches(g: torch.nn.Module, num: int, z_dim: int, *, seed: int = 0, batch_size: int = 100,
                      dist: Dist = ONE) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Rank r makes images [num*r/W, num*(r+1)/W) of the `num` latents drawn from `seed`."""
    share = dist.part(num)
    z = latents(num, z_dim, seed)[share.start:share.stop]
    c = latent_attributes(g, num, seed)[share.start:share.stop]  # [n, K]; K = 0 for an unconditional G
    start = share.start
    for images in generate_uint8(g, z, batch_size, c):
        yield images, torch.arange(start, start + images.shape[0])
        start += images.shape[0]


def list_images(folder: str | Path, flag: str = "--images") -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{flag} {folder}: no such folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"{flag} {folder}: no images (.png, .jpg, .jpeg, .bmp, .webp) in it")
    return files


def _folder_batches(files: list[Path], batch_size: int) -> Iterator[torch.Tensor]:
    from PIL import Image

    batch: list[torch.Tensor] = []
    for path in files:
        try:  # as torch-fidelity reads a folder: PIL, convert("RGB")
            with Image.open(path) as img:
                array = np.array(img.convert("RGB"))
        except (OSError, SyntaxError, ValueError) as err:
            raise ValueError(f"{path}: cannot decode image ({err})") from None
        image = torch.from_numpy(array).permute(2, 0, 1)
        if batch and (image.shape != batch[0].shape or len(batch) == batch_size):
            yield torch.stack(batch)  # consecutive images of one size go together
            batch = []
        batch.append(image)
    if batch:
        yield torch.stack(batch)


def folder_batches(files: list[Path], *, batch_size: int = 100,
                   dist: Dist = ONE) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Rank r reads files [N*r/W, N*(r+1)/W) of the sorted list, as RGB uint8 at their own size."""
    share = dist.part(len(files))
    start = share.start
    for images in _folder_batches(files[share.start:share.stop], batch_size):
        yield images, torch.arange(start, start + images.shape[0])
        start += images.shape[0]


def shard_batches(shardset: ShardSet, *, batch_size: int = 100, num_workers: int = 2,
                  dist: Dist = ONE) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Every sample once across ranks and workers, with its index in manifest order."""
    for batch in eval_loader(shardset, batch_size, dist=dist, num_workers=num_workers, uint8=True):
        yield batch["image"], batch["index"]


# ---------------------------------------------------------------------------------------------
# Real sets: cached moments and rows.


def data_key(data: ShardSet | list[Path]) -> dict:
    """What names a real set's content. Shards: the manifest's content hash (it covers every
    shard's checksum), resolution and count. A folder: its path and every file's relative name,
    size and modification time (reading every file to hash it would cost as much as a pass)."""
    if isinstance(data, ShardSet):
        return {"content_sha256": data.content_hash, "size": data.size, "count": data.count}
    root = Path(os.path.commonpath([str(p.parent) for p in data])).resolve()
    listing = hashlib.sha256()
    for path in data:
        stat = path.stat()
        listing.update(f"{path.resolve().relative_to(root)}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return {"folder": str(root), "files_sha256": listing.hexdigest(), "count": len(data)}


def _key(data: dict, extractor: str, weights_sha256: str) -> str:
    parts = {**data, "extractor": extractor, "weights_sha256": weights_sha256, "version": STATS_VERSION}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def stats_key(shardset: ShardSet, inception: Inception) -> str:
    """Everything that defines a shard set's reference statistics: the data, the extractor and its
    weights."""
    return _key(data_key(shardset), f"{EXTRACTOR}-{FEATURE}", inception.sha256)


def _rows_source(extractors: Extractors, kind: str) -> tuple[str, str]:
    """(what made a kind of rows, its weights' sha256): part of their cache key."""
    extractor = extractors.of_kind(kind)
    return extractor.rows_source(kind), extractor.sha256


def _cache_files(cache: Path, data: dict, extractors: Extractors, needs: Needs) -> dict[str, Path]:
    """Where each part of a real set's features is cached. The moments keep the name they had
    when FID was the only metric, so statistics cached then are still found."""
    files = {}
    if needs.moments:
        files["moments"] = cache / f"real-{_key(data, f'{EXTRACTOR}-{FEATURE}', extractors.inception.sha256)[:32]}.npz"
    for kind in sorted(needs.rows):
        files[kind] = cache / f"real-{_key(data, *_rows_source(extractors, kind))[:32]}.npy"
    return files


def _load_stats(path: Path) -> Stats | None:
    try:
        with np.load(path, allow_pickle=False) as f:
            return Stats(f["mu"], f["sigma"], int(f["count"]))
    except (OSError, KeyError, ValueError):
        return None  # absent or unreadable: recompute (and overwrite)


def _load_rows(path: Path, count: int) -> torch.Tensor | None:
    try:
        rows = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    return torch.from_numpy(rows) if rows.ndim == 2 and rows.shape[0] == count else None


def _save_atomic(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    write(tmp)
    os.replace(tmp, path)


def _save_stats(path: Path, stats: Stats, meta: dict) -> None:
    _save_atomic(path, lambda tmp: np.savez(tmp, mu=stats.mu, sigma=stats.sigma, count=stats.count,
                                            meta=json.dumps(meta)))


def _load_cached(files: dict[str, Path], count: int) -> Features | None:
    stats = _load_stats(files["moments"]) if "moments" in files else None
    rows = {kind: _load_rows(path, count) for kind, path in files.items() if kind != "moments"}
    if ("moments" in files and stats is None) or any(r is None for r in rows.values()):
        return None
    return Features(count, stats, rows)


def real_features(extractors: Extractors, data: ShardSet | list[Path], needs: Needs, *, batch_size: int = 100,
                  num_workers: int = 2, dist: Dist = ONE, cache_dir: str | Path | None = None,
                  progress: bool = False) -> tuple[Features, bool]:
    """A real set's features (shards, or a sorted list of image files), each image read exactly
    once across ranks. Returns (features, cache_hit). `cache_dir=None` uses the default; pass ""
    to turn caching off."""
    count = data.count if isinstance(data, ShardSet) else len(data)
    key = data_key(data)
    files = _cache_files(Path(cache_dir or default_cache_dir()), key, extractors, needs) if cache_dir != "" else {}
    cached = _load_cached(files, count) if files else None
    # Every rank must take the same branch (a rank that computes while another does not would
    # wait forever in reduce): use the cache only when every rank found it.
    hits = dist.reduce(torch.tensor([float(cached is not None), 1.0], dtype=torch.float64, device=extractors.device))
    if hits[0] == hits[1]:
        return cached, True
    if isinstance(data, ShardSet):
        batches = shard_batches(data, batch_size=batch_size, num_workers=num_workers, dist=dist)
        desc = f"real {data.root.name}"
    else:
        batches = folder_batches(data, batch_size=batch_size, dist=dist)
        desc = f"images {Path(key['folder']).name}"
    features = extract(extractors, batches, count, needs, dist=dist, progress=progress, desc=desc)
    if files and dist.rank == 0:
        meta = {"data": key, **(extractors.inception.describe() if extractors.inception is not None else {})}
        for kind, path in files.items():
            if kind == "moments":
                _save_stats(path, features.stats, meta)
            else:
                _save_atomic(path, lambda tmp, kind=kind: np.save(tmp, features.rows[kind].numpy()))
    return features, False


# ---------------------------------------------------------------------------------------------
# FID-only shortcuts (bench scripts and older callers).


def shard_stats(inception: Inception, shardset: ShardSet, *, batch_size: int = 100, num_workers: int = 2,
                dist: Dist = ONE, cache_dir: str | Path | None = None, progress: bool = False) -> tuple[Stats, bool]:
    """Pool3 statistics of every sample of a shard set, cached. Returns (stats, cache_hit)."""
    features, hit = real_features(Extractors({"inception": inception}), shardset, Needs(moments=True),
                                  batch_size=batch_size, num_workers=num_workers, dist=dist, cache_dir=cache_dir,
                                  progress=progress)
    return features.stats, hit


def generator_stats(inception: Inception, g: torch.nn.Module, num: int, z_dim: int, *, seed: int = 0,
                    batch_size: int = 100, dist: Dist = ONE, progress: bool = False) -> Stats:
    """Pool3 statistics of `num` generated images; rank r makes images [num*r/W, num*(r+1)/W)."""
    batches = generated_batches(g, num, z_dim, seed=seed, batch_size=batch_size, dist=dist)
    return extract(Extractors({"inception": inception}), batches, num, Needs(moments=True), dist=dist,
                   progress=progress, desc="generated").stats

