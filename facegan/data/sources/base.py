"""What every pack source yields: items with a key, a reference to load and metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any


@dataclass(frozen=True)
class Item:
    key: str  # the webdataset __key__: a CelebA id like "000001", or a relative path
    ref: Any  # what the source's load() needs: a path, a zip member name, an index
    name: str  # the source file name recorded in the sample's json
    meta: dict = field(default_factory=dict)  # json-serialisable metadata


@dataclass
class Listing:
    """The result of listing a source: the items to pack and what was left out."""

    items: list[Item]
    skipped: list[dict] = field(default_factory=list)  # {"file": ..., "reason": ...}
    # Files on disk that are not packed and not an error: {"file": ..., "reason": ...}, the
    # reason NOT_IMAGE or one saying that no list mentions the file.
    ignored: list[dict] = field(default_factory=list)


NOT_IMAGE = "not an image type"  # by its extension: notes.txt, .DS_Store, Thumbs.db
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


def is_image(name: str) -> bool:
    """Whether a file (path or zip member name) is an image by its extension."""
    return PurePosixPath(name).suffix.lower() in IMAGE_EXTENSIONS
