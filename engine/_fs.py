"""Small file-system helpers the engine and its front ends share (private).

* :func:`atomic_file` / :func:`atomic_write`: write a file so that a reader never sees half of
  it (a temporary file in the same folder, flushed, synced and renamed over the target with
  :func:`os.replace`, which is atomic on POSIX and Windows).
* :func:`lock_exclusive`: an exclusive, non-blocking lock on an open file descriptor
  (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows). The lock dies with the process.
* :func:`write_private`: a new file only its owner may read (mode 0600), for secrets.
* :func:`private_dir`, :func:`private_file`, :func:`tighten`: the folders (0700) and files
  (0600) that hold a person's library, history and logs, whatever the umask; an existing one
  with looser bits is tightened when deejai opens it.
* :class:`PrivateRotatingFileHandler`: a rotating log whose files are born 0600.
"""
from __future__ import annotations

import logging.handlers
import os
import secrets
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Iterator

__all__ = [
    "atomic_file",
    "atomic_write",
    "lock_exclusive",
    "write_private",
    "private_dir",
    "private_file",
    "tighten",
    "PrivateRotatingFileHandler",
    "PRIVATE_DIR_MODE",
    "PRIVATE_FILE_MODE",
]

#: Mode of the folders deejai keeps a person's data in (data, state, config, runtime).
PRIVATE_DIR_MODE = 0o700
#: Mode of the files in them: the library, its WAL files, index sidecars, logs, lock files.
PRIVATE_FILE_MODE = 0o600


def tighten(path: str | os.PathLike[str], mode: int) -> bool:
    """Clear the permission bits of ``path`` that ``mode`` does not have (never adds any).

    Returns True when the mode was changed. A missing file, or one this user may not chmod
    (another owner, a file system without modes), is left alone.
    """
    try:
        st = os.stat(path)
    except OSError:
        return False
    bits = stat.S_IMODE(st.st_mode)
    if not bits & ~mode:
        return False
    try:
        os.chmod(path, bits & mode)
    except OSError:  # pragma: no cover - not the owner, or no modes here
        return False
    return True


def private_dir(path: str | os.PathLike[str]) -> Path:
    """Create folder ``path`` (and its parents) and make it 0700; an existing one is tightened.

    The parents keep the modes the umask gives them; only ``path`` itself is private.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    tighten(path, PRIVATE_DIR_MODE)
    return path


def private_file(path: str | os.PathLike[str]) -> bool:
    """Create ``path`` empty with mode 0600 when it does not exist, else tighten it to 0600.

    The mode is set with ``fchmod`` after ``open``, so it does not depend on the umask.

    Returns
    -------
    bool
        True when the file was created by this call.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                     PRIVATE_FILE_MODE)
    except FileExistsError:
        tighten(path, PRIVATE_FILE_MODE)
        return False
    try:
        _fchmod(fd, PRIVATE_FILE_MODE)
    finally:
        os.close(fd)
    return True


def _fchmod(fd: int, mode: int) -> None:
    try:
        os.fchmod(fd, mode)
    except (AttributeError, OSError):  # pragma: no cover - Windows
        pass


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """:class:`logging.handlers.RotatingFileHandler` whose files are mode 0600.

    Each new log file (the first one and every one after a rollover) is opened with mode 0600
    whatever the umask, and an existing one with looser bits is tightened.
    """

    def _open(self) -> Any:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                     PRIVATE_FILE_MODE)
        tighten(self.baseFilename, PRIVATE_FILE_MODE)
        return open(fd, self.mode, encoding=self.encoding, errors=self.errors)


@contextmanager
def atomic_file(path: str | os.PathLike[str], *, mode: int = 0o666,
                private: bool = False) -> Iterator[BinaryIO]:
    """A binary file object whose content replaces ``path`` when the ``with`` block ends.

    Parameters
    ----------
    path : path-like
        The file to write; its folder must exist.
    mode : int
        Permission bits of a new file, minus the umask (``0o666``: like any new file;
        :mod:`tempfile` would make it 0600).
    private : bool
        Make the file exactly 0600, whatever the umask (``mode`` is then ignored).

    Raises
    ------
    OSError
        When the temporary file cannot be created or renamed; ``path`` is then unchanged and
        the temporary file is removed. An exception inside the block does the same.
    """
    target = Path(path)
    tmp = target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp"
    if private:
        mode = PRIVATE_FILE_MODE
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), mode)
    if private:
        _fchmod(fd, PRIVATE_FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o666,
                 private: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_file`); returns the path."""
    with atomic_file(path, mode=mode, private=private) as fh:
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
