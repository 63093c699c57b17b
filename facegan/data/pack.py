"""pack(): every item of a source decoded, cropped, resized and encoded by worker processes,
written into tar shards with a manifest written last (its presence means the set is whole).
The command around it is facegan/pack.py."""

from __future__ import annotations

import multiprocessing
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from facegan import __version__
from facegan.data.attributes import AttributeCounts
from facegan.data.imaging import FORMATS, BadImage, crop_resize, encode, sample_layout
from facegan.data.shard_writer import PARTIAL, ShardWriter
from facegan.data.shardset import FORMAT_VERSION, MANIFEST, content_hash
from facegan.data.sources.base import Item
from facegan.files import write_json_atomic
from facegan.progress import progress_bar

SIZES = (32, 64, 128, 256)  # the networks' resolutions (facegan.networks.RESOLUTIONS)


# Centre square cropped from aligned CelebA (178x218) before resizing. 140 keeps the face with
# some hair and little background, as the CelebA-64 FID literature does; 178 is the PyTorch
# DCGAN example's Resize+CenterCrop (the whole width); 108 is DCGAN-tensorflow's tight crop.
CELEBA_CROP = 140


class PackError(Exception):
    """A one-line error for the user: bad source, existing output, nothing to pack."""


# Pack options each worker process needs; set once per process by _init_worker.
_WORKER: dict = {}


def _init_worker(source, crop, size, fmt) -> None:
    _WORKER.update(source=source, crop=crop, size=size, fmt=fmt)


def _process(item: Item) -> tuple[Item, bytes | None, str | None]:
    """Decode, crop, resize and encode one item: (item, bytes, None) or (item, None, reason)."""
    w = _WORKER
    try:
        img = w["source"].load(item)
    except BadImage as e:
        return item, None, str(e)
    return item, encode(crop_resize(img, w["crop"], w["size"]), w["fmt"]), None


def _results(items: list[Item], workers: int, init_args: tuple):
    if workers <= 1:
        _init_worker(*init_args)
        yield from map(_process, items)
        return
    # Workers start from a clean forkserver (spawn where there is none), not a fork of this
    # process: a fork copies whatever locks other threads (OpenMP, tqdm's monitor) hold at that
    # moment, and a worker that deadlocks on one never returns. Unlike multiprocessing.Pool, the
    # executor also raises when a worker dies (out of memory, killed) instead of waiting forever.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    chunk = max(1, min(64, len(items) // (workers * 8)))
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=init_args)
    try:
        yield from pool.map(_process, items, chunksize=chunk)
    except BrokenProcessPool as e:
        raise PackError(f"a pack worker process died ({e}); try fewer --workers or more memory") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def prepare_out(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty output unless overwriting; drop the old manifest first when we do."""
    if out.exists() and not out.is_dir():
        raise PackError(f"{out}: output exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise PackError(f"{out}: output folder is not empty; pass --overwrite to replace it")
        (out / MANIFEST).unlink(missing_ok=True)  # from here on the old set no longer looks whole
        for path in out.iterdir():
            if path.name.endswith((".tar", PARTIAL, ".tmp")):
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _remove_shards(out: Path, shards: list[dict]) -> None:
    for s in shards:
        (out / s["name"]).unlink(missing_ok=True)


def pack(source, out, *, size=64, crop=None, fmt="npy", shard_size=1000, workers=1,
         overwrite=False, strict=False, split="train", progress=True) -> dict:
    """Pack every item of `source` into shards under `out`; return the manifest."""
    if size not in SIZES:
        raise PackError(f"size {size} is not supported; choose one of {', '.join(map(str, SIZES))}")
    if fmt not in FORMATS:
        raise PackError(f"format {fmt!r} is not supported; choose one of {', '.join(FORMATS)}")
    out = Path(out)
    listing = source.list()
    if strict and listing.skipped:
        s = listing.skipped[0]
        raise PackError(f"{s['file']}: {s['reason']} (--strict)")
    prepare_out(out, overwrite)
    writer = ShardWriter(out, split, shard_size)
    skipped = list(listing.skipped)
    attributes = AttributeCounts()
    bar = progress_bar(len(listing.items), f"packing {out}", enabled=progress)
    try:
        for item, data, reason in _results(listing.items, workers, (source, crop, size, fmt)):
            bar.update()
            if data is None:
                if strict:
                    raise PackError(f"{item.name}: {reason} (--strict)")
                skipped.append({"file": item.name, "reason": reason})
                continue
            writer.write(item.key, fmt, data, item.meta)
            attributes.add(item.meta)
        shards = writer.close()
        count = sum(s["count"] for s in shards)
        if count == 0:
            raise PackError(f"{source.description.get('root', source.kind)}: no images to pack "
                            f"({len(skipped)} skipped)")
        manifest = {
            "facegan_version": __version__, "format_version": FORMAT_VERSION,
            "source": source.description, "split": split, "size": size, "crop": crop,
            "format": fmt, "sample": sample_layout(fmt, size), "count": count, "shards": shards,
            "skipped": skipped, "ignored": _ignored(listing.ignored), "attributes": attributes.summary(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        manifest["content_sha256"] = content_hash(manifest)
        write_json_atomic(out / MANIFEST, manifest)  # last: its presence means the set is whole
    except BaseException:  # a full disk included: no shard stays that could pass for a whole set
        writer.abort()
        _remove_shards(out, writer.shards)
        raise
    finally:
        bar.close()
    return manifest


def _ignored(ignored: list[dict]) -> dict:
    """The manifest's `ignored`: how many files, the first 1000 names, and how many per reason."""
    return {"count": len(ignored), "files": [i["file"] for i in ignored[:1000]],
            "reasons": dict(Counter(i["reason"] for i in ignored).most_common())}
