"""Any tree of images, read recursively; the key is the relative path without its extension."""

from __future__ import annotations

from pathlib import Path

from facegan.data.imaging import BadImage, open_rgb
from facegan.data.sources.base import NOT_IMAGE, Item, Listing, is_image


def key_for(rel: Path) -> str:
    """webdataset splits a key from its extension at the first dot, so dots become '_'."""
    return rel.with_suffix("").as_posix().replace(".", "_")


class FolderSource:
    kind = "folder"

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"{self.root}: image folder not found")
        self.description = {"kind": self.kind, "root": str(self.root), "layout": "folder"}

    def list(self) -> Listing:
        listing = Listing(items=[])
        seen: dict[str, str] = {}
        for path in sorted(p for p in self.root.rglob("*") if p.is_file()):
            rel = path.relative_to(self.root)
            if not is_image(path.name):
                listing.ignored.append({"file": rel.as_posix(), "reason": NOT_IMAGE})
                continue
            key = key_for(rel)
            if key in seen:
                reason = f"duplicate key {key!r} (also {seen[key]})"
                listing.skipped.append({"file": rel.as_posix(), "reason": reason})
                continue
            seen[key] = rel.as_posix()
            name = rel.as_posix()
            listing.items.append(Item(key=key, ref=str(path), name=name, meta={"file": name}))
        return listing

    def load(self, item: Item):
        try:
            data = Path(item.ref).read_bytes()
        except OSError as e:
            raise BadImage(f"cannot read: {e.strerror}") from None
        return open_rgb(data)
