"""One writer per run directory: an exclusive `flock` on a lock file inside it.

The kernel releases a `flock` when its holder exits in any way, kill -9 included, so a lock file a
crashed process left behind holds no lock and the next writer takes it over. The holder writes its
pid into the file, so a refused writer can say who holds the directory. On release the file is
removed; a writer that locked a file which was meanwhile removed or replaced checks the inode and
tries again, so two writers never hold two different files of one name.

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> with RunLock(d):
...     try:
...         RunLock(d).acquire()
...     except RunLockedError as e:
...         print("refused:", "in use by process" in str(e))
refused: True
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Self

from variational.errors import CheckpointError, RunLockedError

__all__ = ["LOCK_FILE", "RunLock", "RunLockedError"]

LOCK_FILE = ".lock"


class RunLock:
    """An exclusive lock on `directory` (which must exist), held from `acquire` to `release`."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self._fd: int | None = None
        self.took_over: int | None = None  # pid named in a stale lock file this lock replaced

    def acquire(self) -> Self:
        """Take the lock now or raise RunLockedError naming the directory and the holder's pid."""
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise CheckpointError(f"cannot lock the run directory {self.directory}: {e.strerror or e}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                who = f"process {holder}" if holder else "another process"
                raise RunLockedError(
                    f"{self.directory} is in use by {who} (training or resuming into it); "
                    "wait for it to end, or choose another --out"
                ) from None
            except OSError as e:  # a file system without flock (some network mounts)
                os.close(fd)
                raise CheckpointError(
                    f"cannot lock the run directory {self.directory}: {e.strerror or e} "
                    "(is it on a file system without file locks?)"
                ) from None
            if _same_file(fd, self.path):
                break
            os.close(fd)  # the holder we waited for removed the file: lock the new one
        self.took_over = _read_pid(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still locked, so no one locks the removed file
        finally:
            os.close(self._fd)  # closing releases the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 64, 0).decode(errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
