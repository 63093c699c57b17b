"""Loader throughput: the seed notebooks' ImageFolder pipeline vs facegan's shard stream.

Both read the same CelebA images with the same DataLoader workers and batch size, and both
deliver float [-1,1] batches of [B,3,64,64]. Run: python bench/loader.py [--celeba ROOT]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from facegan.data.pack import pack
from facegan.data.samples import TrainSpec
from facegan.data.sources.celeba import CelebASource
from facegan.data.stream import train_loader

DEFAULT_CELEBA = Path(__file__).resolve().parents[2] / "shared" / "data" / "celeba-sample"


def imagefolder_loader(root: Path, size: int, batch: int, workers: int) -> DataLoader:
    """The PyTorch DCGAN example / seed notebooks' pipeline, decoding 178x218 JPEGs each time."""
    tf = transforms.Compose([
        transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor(),
        transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    ])
    ds = datasets.ImageFolder(str(root), transform=tf)
    return DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                      persistent_workers=True)


def images_per_second(loader, batches: int, warmup: int, get_images, repeats: int = 3) -> float:
    """Median over `repeats` windows of `batches` batches, after `warmup` batches that also fill
    the loaders' prefetch queues (a short window would time prefetched batches for free)."""
    def endless():
        while True:
            yield from loader

    it = endless()
    for _ in range(warmup):
        next(it)
    rates = []
    for _ in range(repeats):
        n, start = 0, time.perf_counter()
        for _ in range(batches):
            n += get_images(next(it)).shape[0]
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--celeba", type=Path, default=DEFAULT_CELEBA, help="CelebA root (official layout)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batches", type=int, default=60, help="timed batches per window (3 windows)")
    p.add_argument("--formats", default="npy,png,jpg", help="shard formats to measure")
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"images: {args.celeba}, {args.size} px, batch {args.batch}, {args.workers} workers, "
          f"{args.batches} timed batches after warm-up")
    base = images_per_second(imagefolder_loader(args.celeba, args.size, args.batch, args.workers),
                             args.batches, 10, lambda b: b[0])
    jpeg_bytes = sum(p.stat().st_size for p in args.celeba.glob("img_align_celeba/*.jpg"))
    rows = [("ImageFolder + Resize/CenterCrop/Normalize (baseline)", base, jpeg_bytes)]
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in args.formats.split(","):
            out = Path(tmp) / fmt
            m = pack(CelebASource(args.celeba, "all"), out, size=args.size, crop=None, fmt=fmt,
                     workers=args.workers, progress=False)
            disk = sum(s["bytes"] for s in m["shards"])
            for uint8 in (False, True):
                # float: [-1,1] batches like the baseline's; uint8: what the training loop takes
                # on GPU, converting on the device.
                loader = train_loader(out, TrainSpec(args.batch), num_workers=args.workers, uint8=uint8)
                ips = images_per_second(loader, args.batches, 10, lambda b: b["image"])
                rows.append((f"facegan shards ({fmt}, {'uint8' if uint8 else 'float'})", ips, disk))
    n = len(list(args.celeba.glob("img_align_celeba/*.jpg")))
    print(f"{'pipeline':<56}{'img/s':>9}{'vs baseline':>13}{'KB/img':>8}")
    for name, ips, nbytes in rows:
        print(f"{name:<56}{ips:>9.0f}{ips / base:>12.1f}x{nbytes / n / 1024:>8.1f}")


if __name__ == "__main__":
    main()
