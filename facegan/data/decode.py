"""Decoding packed samples: the npy, png and jpg bytes of a shard sample -> [H,W,3] uint8, checked
(a corrupt sample is a ShardSetError naming it, never a crashed process), and uint8 -> float."""

from __future__ import annotations

import ast
import functools
import struct
import warnings
import zlib

import numpy as np
import torch

from facegan.data.shardset import ShardSetError

IMAGE_EXTS = ("npy", "png", "jpg")
# torchvision 0.29 deprecates its image codecs in favour of torchcodec, but they remain the
# fastest decoders of small PNGs here (about 90 us at 64 px, against 130 us through PIL).
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities",
                        category=DeprecationWarning)


@functools.lru_cache(maxsize=16)
def _npy_shape(header: bytes) -> tuple[int, int, int] | None:
    """The [H,W,3] shape of a uint8 .npy header, or None for anything else (parsed once)."""
    try:
        d = ast.literal_eval(header.decode("latin1"))
        ok = d["descr"] == "|u1" and not d["fortran_order"] and len(d["shape"]) == 3
    except (ValueError, SyntaxError, KeyError, TypeError):
        return None
    return tuple(d["shape"]) if ok and d["shape"][2] == 3 else None


def decode_npy(data: memoryview) -> torch.Tensor | None:
    """[H,W,3] uint8 view of a raw .npy sample (version 1 header), or None if it is not one."""
    if data[:6] != b"\x93NUMPY" or data[6] != 1:
        return None
    end = 10 + int.from_bytes(data[8:10], "little")
    shape = _npy_shape(bytes(data[10:end]))
    if shape is None or len(data) - end != shape[0] * shape[1] * 3:
        return None
    return torch.frombuffer(data[end:], dtype=torch.uint8).view(shape)


def png_intact(data: memoryview) -> bool:
    """Whether every chunk's CRC matches. torchvision's libpng decoder crashes the process on a
    corrupt stream instead of raising, so PNG bytes are checked first (a few microseconds)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return False
    pos = 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        end = pos + 8 + length
        if end + 4 > len(data) or zlib.crc32(data[pos + 4:end]) != struct.unpack_from(">I", data, end)[0]:
            return False
        if data[pos + 4:pos + 8] == b"IEND":
            return True
        pos = end + 4
    return False


def decode(sample: dict) -> torch.Tensor:
    """[H,W,3] uint8 from the sample's npy, png or jpg bytes."""
    where = f"{sample.get('__url__')}: sample {sample['__key__']}"
    for ext in IMAGE_EXTS:
        if ext == "npy" and ext in sample:
            image = decode_npy(sample[ext])
            if image is None:
                raise ShardSetError(f"{where}: not a uint8 [H,W,3] .npy array")
            return image
        if ext in sample:
            if ext == "png" and not png_intact(sample[ext]):
                raise ShardSetError(f"{where}: corrupt png (the shard changed since packing?)")
            # torchvision here, not at the top: its import loads torch._dynamo (~2 s per process
            # start), and the default npy shards never need it.
            from torchvision.io import ImageReadMode, decode_image

            data = torch.frombuffer(sample[ext], dtype=torch.uint8)
            try:
                return decode_image(data, mode=ImageReadMode.RGB).permute(1, 2, 0)
            except RuntimeError as e:
                raise ShardSetError(f"{where}: cannot decode {ext} ({e})") from None
    raise ShardSetError(f"{where}: has no npy, png or jpg image")


# 2/255 rounded down in float32: 255 maps just under 1.0, and the conversion is one fused kernel
# instead of three (bench/RESULTS.md, its "data.py" section).
_SCALE = float(np.nextafter(np.float32(2 / 255), np.float32(0)))


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0,255] -> float32 [-1,1], on the images' device."""
    return torch.add(torch.tensor(-1.0), images, alpha=_SCALE)
