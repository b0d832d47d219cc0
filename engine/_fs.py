"""Small file-system helpers the engine and its front ends share (private).

* :func:`atomic_file` / :func:`atomic_write`: write a file so that a reader never sees half of
  it (a temporary file in the same folder, flushed, synced and renamed over the target with
  :func:`os.replace`, which is atomic on POSIX and Windows).
* :func:`lock_exclusive`: an exclusive, non-blocking lock on an open file descriptor
  (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows). The lock dies with the process.
* :func:`write_private`: a new file only its owner may read (mode 0600), for secrets.
"""
from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

__all__ = ["atomic_file", "atomic_write", "lock_exclusive", "write_private"]


@contextmanager
def atomic_file(path: str | os.PathLike[str], *, mode: int = 0o666) -> Iterator[BinaryIO]:
    """A binary file object whose content replaces ``path`` when the ``with`` block ends.

    Parameters
    ----------
    path : path-like
        The file to write; its folder must exist.
    mode : int
        Permission bits of a new file, minus the umask (``0o666``: like any new file;
        :mod:`tempfile` would make it 0600).

    Raises
    ------
    OSError
        When the temporary file cannot be created or renamed; ``path`` is then unchanged and
        the temporary file is removed. An exception inside the block does the same.
    """
    target = Path(path)
    tmp = target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o666) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_file`); returns the path."""
    with atomic_file(path, mode=mode) as fh:
        fh.write(data)
    return Path(path)


def lock_exclusive(fd: int) -> None:
    """Take an exclusive, non-blocking lock on the open file ``fd``.

    Raises
    ------
    OSError
        (``BlockingIOError`` on POSIX) when another process holds the lock. Closing ``fd``
        releases it.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def write_private(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to a new file readable by this user only (mode 0600).

    The folder is created with mode 0700 when missing; an existing file is replaced (unlinked
    first, so the new one is born 0600 with no window of looser modes).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)
    os.chmod(path, 0o600)
