"""CelebA in its official layout (folder or zip) or the Kaggle CSV layout.

Official: ROOT/img_align_celeba/*.jpg or ROOT/img_align_celeba.zip, ROOT/list_eval_partition.txt,
optional list_attr_celeba.txt, identity_CelebA.txt, list_landmarks_align_celeba.txt. The
Google Drive tree (Img/, Anno/, Eval/ subfolders) is accepted too.
Kaggle: ROOT/img_align_celeba/img_align_celeba/*.jpg, list_eval_partition.csv,
list_attr_celeba.csv, list_landmarks_align_celeba.csv.
"""

from __future__ import annotations

import csv
import os
import zipfile
from pathlib import Path

from facegan.data.imaging import BadImage, open_rgb
from facegan.data.sources.base import NOT_IMAGE, Item, Listing, is_image

SPLITS = {"train": 0, "val": 1, "test": 2}
SPLIT_NAMES = {v: k for k, v in SPLITS.items()}
IMAGE_DIR = "img_align_celeba"
# Folders where the Google Drive release keeps the official files.
SUBDIRS = ("", "Img", "Anno", "Eval")


class CelebAError(ValueError):
    """A CelebA tree that cannot be read; the message names the path."""


def _find(root: Path, name: str) -> Path | None:
    for sub in SUBDIRS:
        path = root / sub / name
        if path.exists():
            return path
    return None


def detect_layout(root: Path) -> str:
    """'kaggle', 'official-folder' or 'official-zip'."""
    if not root.is_dir():
        raise CelebAError(f"{root}: CelebA root folder not found")
    if (root / IMAGE_DIR / IMAGE_DIR).is_dir() or (root / "list_eval_partition.csv").exists():
        return "kaggle"
    folder = _find(root, IMAGE_DIR)
    if folder is not None and folder.is_dir() and any(folder.glob("*.jpg")):
        return "official-folder"
    if _find(root, IMAGE_DIR + ".zip") is not None:
        return "official-zip"
    raise CelebAError(
        f"{root}: no CelebA images found; expected {IMAGE_DIR}/*.jpg, {IMAGE_DIR}.zip "
        f"or the Kaggle {IMAGE_DIR}/{IMAGE_DIR}/*.jpg"
    )


def _rows_txt(path: Path, header_lines: int) -> tuple[list[str], list[list[str]]]:
    """Whitespace table rows after `header_lines`; the last header line holds the column names."""
    lines = path.read_text().splitlines()
    names = lines[header_lines - 1].split() if header_lines else []
    return names, [line.split() for line in lines[header_lines:] if line.strip()]


def _rows_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as f:
        rows = [row for row in csv.reader(f) if row]
    if not rows:
        raise CelebAError(f"{path}: empty file")
    return rows[0][1:], rows[1:]


def _table(path: Path, header_lines: int, width: int | None) -> dict[str, list[str]]:
    """file name -> values; a malformed line is an error naming the file and line."""
    if path.suffix == ".csv":
        names, rows, first = *_rows_csv(path), 2
    else:
        names, rows, first = *_rows_txt(path, header_lines), header_lines + 1
    width = width if width is not None else len(names)
    table = {}
    for lineno, row in enumerate(rows, start=first):
        if len(row) != width + 1:
            raise CelebAError(f"{path}:{lineno}: expected {width + 1} fields, found {len(row)}")
        table[row[0]] = row[1:]
    return table


def _columns(path: Path, header_lines: int) -> list[str]:
    if path.suffix == ".csv":
        return _rows_csv(path)[0]
    return _rows_txt(path, header_lines)[0]


class CelebASource:
    kind = "celeba"

    def __init__(self, root: str | Path, split: str = "train"):
        if split not in (*SPLITS, "all"):
            raise CelebAError(f"unknown split {split!r}; expected train, val, test or all")
        self.root = Path(root)
        self.split = split
        self.layout = detect_layout(self.root)
        self.ext = "csv" if self.layout == "kaggle" else "txt"
        self._zip: zipfile.ZipFile | None = None
        self._zip_pid = 0  # a forked worker must not share the parent's file offset
        self.zip_path = _find(self.root, IMAGE_DIR + ".zip") if self.layout == "official-zip" else None
        self.description = {"kind": self.kind, "root": str(self.root), "layout": self.layout}

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_zip"] = None  # each worker process opens its own handle
        return state

    def _annotation(self, stem: str) -> Path | None:
        return _find(self.root, f"{stem}.{self.ext}")

    def _image_dir(self) -> Path:
        if self.layout == "kaggle":
            return self.root / IMAGE_DIR / IMAGE_DIR
        return _find(self.root, IMAGE_DIR)

    def _open_zip(self) -> zipfile.ZipFile:
        if self._zip is None or self._zip_pid != os.getpid():
            self._zip_pid = os.getpid()
            try:
                self._zip = zipfile.ZipFile(self.zip_path)
            except (zipfile.BadZipFile, OSError) as e:
                raise CelebAError(f"{self.zip_path}: not a readable zip file ({e})") from None
        return self._zip

    def _files_on_disk(self) -> dict[str, str]:
        """file name -> ref (a path or a zip member name), for every file under the image folder
        (the partition file names the images; any other file is ignored, and counted)."""
        if self.zip_path is not None:
            files = [m for m in self._open_zip().namelist() if not m.endswith("/")]
            # A .jpg goes by its bare name, as the partition file names it, wherever the zip keeps it.
            return {(m.rsplit("/", 1)[-1] if m.lower().endswith(".jpg") else m.removeprefix(IMAGE_DIR + "/")): m
                    for m in files}
        folder = self._image_dir()
        if not folder.is_dir():
            raise CelebAError(f"{folder}: image folder not found")
        return {p.relative_to(folder).as_posix(): str(p) for p in folder.rglob("*") if p.is_file()}

    def _partition(self) -> dict[str, int]:
        path = self._annotation("list_eval_partition")
        if path is None:
            raise CelebAError(
                f"{self.root / ('list_eval_partition.' + self.ext)}: partition file not found"
            )
        table = _table(path, header_lines=1 if self.ext == "csv" else 0, width=1)
        try:
            return {name: int(v[0]) for name, v in table.items()}
        except ValueError as e:
            raise CelebAError(f"{path}: partition values must be 0, 1 or 2 ({e})") from None

    def _metadata(self) -> dict[str, dict]:
        """file name -> identity, attributes (booleans) and landmarks, where the files exist."""
        meta: dict[str, dict] = {}
        path = self._annotation("identity_CelebA")
        if path is not None:
            for name, v in _table(path, 0, 1).items():
                meta.setdefault(name, {})["identity"] = int(v[0])
        path = self._annotation("list_attr_celeba")
        if path is not None:
            cols = _columns(path, 2)
            for name, v in _table(path, 2, len(cols)).items():
                meta.setdefault(name, {})["attributes"] = {c: x == "1" for c, x in zip(cols, v)}
        path = self._annotation("list_landmarks_align_celeba")
        if path is not None:
            cols = _columns(path, 2)
            for name, v in _table(path, 2, len(cols)).items():
                meta.setdefault(name, {})["landmarks"] = {c: int(x) for c, x in zip(cols, v)}
        return meta

    def list(self) -> Listing:
        partition = self._partition()
        on_disk = self._files_on_disk()
        meta = self._metadata()
        wanted = sorted(n for n, p in partition.items() if self.split == "all" or p == SPLITS[self.split])
        listing = Listing(items=[], ignored=[
            {"file": n, "reason": "not in list_eval_partition" if is_image(n) else NOT_IMAGE}
            for n in sorted(set(on_disk) - set(partition))])
        for name in wanted:
            if name not in on_disk:
                reason = "listed in list_eval_partition but missing on disk"
                listing.skipped.append({"file": name, "reason": reason})
                continue
            info = {"file": name, "partition": SPLIT_NAMES.get(partition[name], partition[name])}
            info.update(meta.get(name, {}))
            listing.items.append(Item(key=name.rsplit(".", 1)[0], ref=on_disk[name], name=name, meta=info))
        return listing

    def load(self, item: Item):
        if self.zip_path is not None:
            data = self._open_zip().read(item.ref)
        else:
            try:
                data = Path(item.ref).read_bytes()
            except OSError as e:
                raise BadImage(f"cannot read: {e.strerror}") from None
        return open_rgb(data)
