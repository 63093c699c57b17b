"""FID with torch-fidelity's InceptionV3 and its statistics code, split across ranks.

Each rank extracts features for its share of the images and sums them into moments
(count, sum, sum of outer products, in float64); the caller's `reduce` sums the moments over
ranks, and every rank then holds the same mean and covariance: the single-process result up to
float64 rounding. torch-fidelity's `fid_statistics_to_metric` turns two of them into FID.

Distributed code stays with the caller: `reduce` is a function that sums a tensor over ranks
(`lambda t: accelerator.reduce(t, "sum")`), the identity in one process.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric
from tqdm.auto import tqdm

from .data import eval_loader
from .inception import EXTRACTOR, FEATURE, Inception
from .shardset import ShardSet

FEATURE_DIM = int(FEATURE)  # dimensions of the feature FID compares

Reduce = Callable[[torch.Tensor], torch.Tensor]
STATS_VERSION = 1  # bump when the way statistics are computed changes


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1,1] float -> uint8 0..255, rounded as torchvision's save_image does, so a PNG written
    by `facegan.sample --images-dir` holds exactly the pixels FID saw."""
    return ((images.float() + 1) * 127.5 + 0.5).clamp_(0, 255).to(torch.uint8)


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

    def stats(self, reduce: Reduce = _identity) -> Stats:
        """Sum over ranks, then mean and unbiased covariance (np.cov's), on every rank."""
        total = reduce(self.packed.clone()).cpu().numpy()
        n, d = int(round(total[0])), self.dim
        if n < 2:
            raise ValueError(f"FID needs at least 2 images per side, got {n}")
        mu = total[1:1 + d] / n
        sigma = (total[1 + d:].reshape(d, d) - n * np.outer(mu, mu)) / (n - 1)
        return Stats(mu, (sigma + sigma.T) / 2, n)


def frechet_distance(a: Stats, b: Stats) -> float:
    """torch-fidelity's FID formula on two sets of statistics."""
    out = fid_statistics_to_metric({"mu": a.mu, "sigma": a.sigma}, {"mu": b.mu, "sigma": b.sigma}, False)
    return float(out[KEY_METRIC_FID])


def features_moments(inception: Inception, batches: Iterable[torch.Tensor], total: int | None = None,
                     progress: bool = False, desc: str = "features") -> Moments:
    """Moments of the Inception features of uint8 [B,3,H,W] batches."""
    moments = Moments(FEATURE_DIM, inception.device)
    with tqdm(total=total, desc=desc, unit="img", disable=not progress, leave=False,
              mininterval=0.5 if sys.stderr.isatty() else 30) as bar:  # closed on errors too
        for images in batches:
            moments.add(inception(images))
            bar.update(images.shape[0])
    return moments


def _rank_range(n: int, rank: int, world: int) -> range:
    return range(n * rank // world, n * (rank + 1) // world)


# ---------------------------------------------------------------------------------------------
# Real images: packed shards, with cached statistics.


def stats_key(shardset: ShardSet, inception: Inception) -> str:
    """Everything that defines the reference statistics: the data (manifest content hash, which
    covers every shard's checksum), its resolution and count, the extractor and its weights."""
    parts = {"content_sha256": shardset.content_hash, "size": shardset.size, "count": shardset.count,
             "extractor": f"{EXTRACTOR}-{FEATURE}", "weights_sha256": inception.sha256,
             "version": STATS_VERSION}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _load_cached(path: Path) -> Stats | None:
    try:
        with np.load(path, allow_pickle=False) as f:
            return Stats(f["mu"], f["sigma"], int(f["count"]))
    except (OSError, KeyError, ValueError):
        return None  # absent or unreadable: recompute (and overwrite)


def _save_cached(path: Path, stats: Stats, meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.partial.npz")
    np.savez(tmp, mu=stats.mu, sigma=stats.sigma, count=stats.count, meta=json.dumps(meta))
    os.replace(tmp, path)


def shard_stats(inception: Inception, shardset: ShardSet, *, batch_size: int = 100, num_workers: int = 2,
                rank: int = 0, world_size: int = 1, reduce: Reduce = _identity,
                cache_dir: str | Path | None = None, progress: bool = False) -> tuple[Stats, bool]:
    """Statistics of every sample of a shard set, each read exactly once across ranks. Returns
    (stats, cache_hit). `cache_dir=None` uses the default; pass "" to turn caching off."""
    cache = None
    if cache_dir != "":
        cache = Path(cache_dir or default_cache_dir()) / f"real-{stats_key(shardset, inception)[:32]}.npz"
    cached = _load_cached(cache) if cache is not None and cache.is_file() else None
    # Every rank must take the same branch (a rank that computes while another does not would
    # wait forever in reduce): use the cache only when every rank found it.
    hits = reduce(torch.tensor([float(cached is not None), 1.0], dtype=torch.float64, device=inception.device))
    if hits[0] == hits[1]:
        return cached, True
    loader = eval_loader(shardset, batch_size, num_workers=num_workers, rank=rank, world_size=world_size,
                         uint8=True)
    moments = features_moments(inception, (b["image"] for b in loader), total=shardset.count,
                               progress=progress, desc=f"real {shardset.root.name}")
    stats = moments.stats(reduce)
    if stats.count != shardset.count:
        raise RuntimeError(f"{shardset.root}: read {stats.count} samples, the manifest says {shardset.count}")
    if cache is not None and rank == 0:
        _save_cached(cache, stats, {"data": str(shardset.root), **inception.describe(),
                                    "content_sha256": shardset.content_hash, "size": shardset.size})
    return stats, False


# ---------------------------------------------------------------------------------------------
# Generated images and image folders.


def latents(num: int, z_dim: int, seed: int, truncation: float | None = None) -> torch.Tensor:
    """The same N latents whatever the world size: drawn on the CPU from their own generator.
    With `truncation`, components beyond +-truncation are redrawn (the truncation trick)."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(num, z_dim, generator=gen)
    if truncation is not None:
        if truncation <= 0:
            raise ValueError(f"truncation={truncation}: must be positive")
        while (outside := z.abs() > truncation).any():
            z[outside] = torch.randn(int(outside.sum()), generator=gen)
    return z


@torch.no_grad()
def generate_uint8(g: torch.nn.Module, z: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """G(z) in batches as uint8 images, G in eval mode: BatchNorm uses its running statistics,
    so an image does not depend on its batch-mates, the batch size or the number of ranks."""
    was_training = g.training
    g.eval()
    device = next(g.parameters()).device
    try:
        for start in range(0, len(z), batch_size):
            yield to_uint8(g(z[start:start + batch_size].to(device)))
    finally:
        g.train(was_training)


def generator_stats(inception: Inception, g: torch.nn.Module, num: int, z_dim: int, *, seed: int = 0,
                    batch_size: int = 100, rank: int = 0, world_size: int = 1, reduce: Reduce = _identity,
                    progress: bool = False) -> Stats:
    """Statistics of `num` generated images; rank r makes images [num*r/W, num*(r+1)/W)."""
    share = _rank_range(num, rank, world_size)
    z = latents(num, z_dim, seed)[share.start:share.stop]
    moments = features_moments(inception, generate_uint8(g, z, batch_size), total=len(z),
                               progress=progress, desc="generated")
    return moments.stats(reduce)


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--images {folder}: no such folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"--images {folder}: no images (.png, .jpg, .jpeg, .bmp, .webp) in it")
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


def folder_stats(inception: Inception, folder: str | Path, *, batch_size: int = 100, rank: int = 0,
                 world_size: int = 1, reduce: Reduce = _identity, progress: bool = False) -> Stats:
    """Statistics of every image in a folder (recursive), as torch-fidelity reads them: RGB uint8
    at their own size."""
    files = list_images(folder)
    share = _rank_range(len(files), rank, world_size)
    mine = files[share.start:share.stop]
    moments = features_moments(inception, _folder_batches(mine, batch_size), total=len(mine),
                               progress=progress, desc=f"images {Path(folder).name}")
    return moments.stats(reduce)


def _counts_text(record: dict, below: float = math.inf) -> str:
    """ "474 real, 500 generated": the record's num_* counts (those under `below`)."""
    return ", ".join(f"{v} {k.removeprefix('num_')}" for k, v in record.items() if k.startswith("num_") and v < below)


def few_samples_warning(counts: dict) -> str | None:
    """What pytorch-fid and clean-fid warn of: a side with fewer images than the 2048 feature
    dimensions has a singular covariance, and its FID is biased upwards and noisy."""
    sides = _counts_text(counts, below=FEATURE_DIM)
    if not sides:
        return None
    return (f"fewer images than the {FEATURE_DIM} feature dimensions ({sides}): the covariance is singular, "
            "so this FID is biased upwards and noisy; compare it only with FIDs taken from the same counts")


def fid_record(fid: float, inception: Inception, **counts) -> dict:
    """One FID result with the weights that produced it. With non-standard weights the value goes
    under `fid_nonstandard`, never `fid`, and a note says why; too few images add a warning."""
    info = inception.describe()
    record = {fid_key(info["standard_weights"]): fid, **counts, **info}
    if not info["standard_weights"]:
        record["note"] = ("not torch-fidelity's standard Inception weights: this number is not "
                          "comparable to published FIDs")
    warning = few_samples_warning(counts)
    if warning:
        record["warning"] = warning
    return record


def fid_key(standard_weights: bool) -> str:
    """Where a record keeps its FID: `fid` only for torch-fidelity's standard weights."""
    return "fid" if standard_weights else "fid_nonstandard"


def fid_value(record: dict) -> float:
    return record[fid_key(record["standard_weights"])]


def score_generator(inception: Inception, g: torch.nn.Module, z_dim: int, shardset: ShardSet, num: int, *,
                    seed: int = 0, batch_size: int = 100, num_workers: int = 2, rank: int = 0,
                    world_size: int = 1, reduce: Reduce = _identity, cache_dir: str | Path | None = None,
                    progress: bool = False) -> dict:
    """FID of `num` images of G against every sample of the shard set, as a fid_record."""
    real, hit = shard_stats(inception, shardset, batch_size=batch_size, num_workers=num_workers, rank=rank,
                            world_size=world_size, reduce=reduce, cache_dir=cache_dir, progress=progress)
    fake = generator_stats(inception, g, num, z_dim, seed=seed, batch_size=batch_size, rank=rank,
                           world_size=world_size, reduce=reduce, progress=progress)
    return fid_record(frechet_distance(real, fake), inception, num_real=real.count, num_generated=fake.count,
                      real_stats_cached=hit)


def describe(record: dict) -> str:
    """One line for people: the value, the counts and the weights that produced it."""
    where = f"step {record['step']}: " if "step" in record else ""
    counts = _counts_text(record)
    few = f"; warning: {record['warning']}" if "warning" in record else ""
    if record["standard_weights"]:
        return f"{where}FID {record['fid']:.3f} ({counts}; standard Inception weights{few})"
    return (f"{where}FID {record['fid_nonstandard']:.4f} with NON-STANDARD Inception weights {record['weights']} "
            f"(sha256 {record['weights_sha256'][:12]}; not comparable to published FIDs; {counts}{few})")
