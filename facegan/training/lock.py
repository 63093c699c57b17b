"""One training start per run folder: an exclusive flock on RUN/.lock, held by the main process.

The kernel drops the lock when its process dies, however it dies (kill -9 included), so no stale
lock is ever left to clean up. The file records its holder (pid, host, start time) for the one
line that refuses a second start. On a network file system flock may be unsupported (then a
warning says that nothing guards the folder) or only per node (two nodes can each take it):
start one run per folder yourself there (docs/training.md, "When something goes wrong")."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import stat
import time
from pathlib import Path

LOCK_FILE = ".lock"


class RunFolderBusy(ValueError):
    pass


class BadLockFile(ValueError):
    """RUN/.lock is not a regular file of its own: a symlink, a directory, a hard link, unreadable."""


def _open_lock(path: Path) -> int:
    """The lock file's descriptor, opened without following a symlink (in a shared run folder a
    `.lock` pointing elsewhere would have us overwrite the file it points to); BadLockFile in one
    line for anything but a regular file with no other name."""
    fix = f"remove it (rm {path}) and start again; facegan makes its own"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise BadLockFile(f"{path}: the run folder's lock file is a symbolic link (to {os.readlink(path)}); "
                              f"facegan never writes through one: {fix}") from None
        if e.errno == errno.EISDIR:
            raise BadLockFile(f"{path}: the run folder's lock file is a directory: {fix}") from None
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise BadLockFile(f"{path}: cannot open the run folder's lock file ({e.strerror}); make the run folder "
                              "and its .lock writable by you, or pick another --run-dir") from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        os.close(fd)
        what = "has other hard links" if stat.S_ISREG(info.st_mode) else "is not a regular file"
        raise BadLockFile(f"{path}: the run folder's lock file {what}; facegan would overwrite it: {fix}")
    return fd


class RunLock:
    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> str | None:
        """Take the lock, or raise RunFolderBusy naming its holder. Returns a warning where the
        file system cannot lock (the run goes on unguarded)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = _open_lock(self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = self.holder(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise RunFolderBusy(f"{self.path.parent}: another facegan run is using this folder ({holder}); wait "
                                    "for it to end, stop it (touch RUN/STOP), or pick another --run-dir") from None
            if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                return (f"{self.path}: this file system cannot lock files ({e.strerror}); nothing stops a second "
                        "run from writing into this folder at the same time")
            raise
        self.fd = fd
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        return None

    @staticmethod
    def holder(fd: int) -> str:
        """'pid N on host H since T' from the lock file's record, as far as it can be read."""
        try:
            record = json.loads(os.pread(fd, 4096, 0) or b"{}")
            return f"pid {record['pid']} on host {record['host']}, started {record['started']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "holder unknown: its record is unreadable"

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None
