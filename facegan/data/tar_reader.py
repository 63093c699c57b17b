"""A lean reader of the regular files in an in-memory tar, much faster than the tarfile module
on small members (bench/RESULTS.md, tar_reader.py), and zero-copy: each member is a memoryview
into the shard's buffer.

It reads the ustar shards facegan writes and plain POSIX/GNU/pax tars of regular files, and
raises TarReadError on truncation or a corrupt header.
"""

from __future__ import annotations

from collections.abc import Iterator

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)


class TarReadError(ValueError):
    pass


def _octal(field: bytes) -> int:
    field = bytes(field).rstrip(b"\0 ").lstrip(b" ")
    return int(field, 8) if field else 0


def _pax_path(data: bytes) -> str | None:
    """The `path` record of a pax extended header ("%d path=...\\n" records)."""
    for record in bytes(data).split(b"\n"):
        _, _, kv = record.partition(b" ")
        if kv.startswith(b"path="):
            return kv[5:].decode("utf-8")
    return None


def _name(header: memoryview) -> str:
    name = bytes(header[:100]).rstrip(b"\0").decode("utf-8")
    if header[257:262] == b"ustar":
        prefix = bytes(header[345:500]).rstrip(b"\0")
        if prefix:
            name = prefix.decode("utf-8") + "/" + name
    return name


def tar_members(buf: memoryview, check_headers: bool = True) -> Iterator[tuple[str, memoryview]]:
    """(name, data) of each regular file in the tar held by `buf`, in order."""
    pos, long_name = 0, None
    while pos < len(buf):
        header = buf[pos:pos + BLOCK]
        if len(header) < BLOCK:
            raise TarReadError(f"unexpected end of data in a header at byte {pos}")
        if header == ZERO_BLOCK:  # end of archive
            return
        if check_headers and _octal(header[148:156]) != sum(header[:148]) + 256 + sum(header[156:]):
            raise TarReadError(f"bad header checksum at byte {pos}")
        size, kind = _octal(header[124:136]), bytes(header[156:157])
        start = pos + BLOCK
        pos = start + size + (-size % BLOCK)
        if start + size > len(buf):
            raise TarReadError(f"unexpected end of data in a member at byte {start}")
        data = buf[start:start + size]
        if kind in (b"x", b"L"):  # a pax or GNU long name for the next member
            long_name = _pax_path(data) if kind == b"x" else bytes(data).rstrip(b"\0").decode()
        elif kind in (b"0", b"\0"):  # a regular file; folders, links and the rest are skipped
            yield (long_name or _name(header)), data
            long_name = None
