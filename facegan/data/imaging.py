"""Decode, crop, resize and encode single images for packing, and decode them back for streaming."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

FORMATS = ("png", "jpg", "npy")
JPEG_QUALITY = 95


class BadImage(Exception):
    """An image that cannot be used; the message is the reason recorded in `skipped`."""


def open_rgb(data: bytes) -> Image.Image:
    """Fully decode `data` (whatever its extension says) into an RGB image, or raise BadImage."""
    if not data:
        raise BadImage("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            img.load()  # decode every byte now: a truncated file fails here, not later
    except UnidentifiedImageError:
        raise BadImage("not an image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImage(too_large(data, e)) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise BadImage(f"cannot decode: {e}") from None
    return to_rgb(img)


def too_large(data: bytes, error: Exception) -> str:
    """The skip reason of an image over Pillow's pixel limit (a decompression bomb, or a header
    that lies): its size, read as Image.open reads it. Image.open itself refuses such an image
    before saying how large it is, but its format readers only parse the header."""
    for factory, accept in list(Image.OPEN.values()):
        try:
            match = accept is None or accept(data[:16])
            if match and not isinstance(match, str):  # a str is Pillow's "maybe" warning
                width, height = factory(io.BytesIO(data), "").size
                return (f"image too large: {width}x{height} ({width * height} pixels, over the "
                        f"limit of {Image.MAX_IMAGE_PIXELS} against decompression bombs)")
        except Exception:  # noqa: BLE001 - a reader that cannot parse it: try the next one
            continue
    return f"image too large: {error}"


def to_rgb(img: Image.Image) -> Image.Image:
    """Grayscale, palette, CMYK, 16-bit and alpha images become RGB; alpha is composited on white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        arr = (arr / max(arr.max(), 1.0) * 255.0).round().astype(np.uint8)
        img = Image.fromarray(arr, mode="L")
    return img.convert("RGB")


def center_crop_box(width: int, height: int, crop: int | None) -> tuple[int, int, int, int]:
    """The centred square box of side `crop` (None: the largest square), clamped to the image."""
    side = min(width, height) if crop is None else min(crop, width, height)
    left = (width - side) // 2
    top = (height - side) // 2
    return left, top, left + side, top + side


def crop_resize(img: Image.Image, crop: int | None, size: int) -> Image.Image:
    """Centre-crop a square, then resize it to size x size with an antialiasing filter."""
    box = center_crop_box(img.width, img.height, crop)
    if box == (0, 0, size, size) and img.size == (size, size):
        return img
    # Crop first: resizing with box= would let the filter reach pixels outside the crop.
    return img.crop(box).resize((size, size), Image.Resampling.LANCZOS)


def sample_layout(fmt: str, size: int) -> dict[str, str]:
    """What each sample holds, by extension: written to the manifest for readers other than facegan."""
    image = {"npy": f"uint8 HWC RGB array, shape [{size},{size},3] (numpy .npy)",
             "png": f"8-bit RGB PNG, {size}x{size}",
             "jpg": f"8-bit RGB JPEG (quality {JPEG_QUALITY}), {size}x{size}"}
    return {fmt: image[fmt], "json": "source metadata: what the source knows of the image"}


def encode(img: Image.Image, fmt: str) -> bytes:
    """PNG (lossless), JPEG quality 95 or raw .npy bytes of an RGB image."""
    buf = io.BytesIO()
    if fmt == "png":
        img.save(buf, format="PNG", compress_level=6)
    elif fmt == "jpg":
        img.save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    elif fmt == "npy":
        np.save(buf, np.asarray(img, dtype=np.uint8))  # raw [H,W,3] uint8: no decode at all
    else:
        raise ValueError(f"unknown image format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return buf.getvalue()
