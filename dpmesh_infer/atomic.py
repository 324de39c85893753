"""The one atomic writer: files and folders appear complete or not at all.

A file is written to a uniquely named temporary file in the same folder (``.NAME.XXXXXXXX.tmp``, so the
rename cannot cross a filesystem), created with mode 0666 less the umask (what any new file gets),
flushed, optionally fsync'ed, then renamed over the target with ``os.replace``. A reader therefore sees
either the old file or the new one, never a partial one, even if the process is killed (``kill -9``)
half-way. With ``fsync=True`` the data is also on disk before the rename, so the new file survives a
power loss or kernel crash once the call returns; with ``fsync=False`` a crash of the machine (not of
the process) may leave the new name empty or the old version in place.

Many files at once: write them with ``fsync=False``, then :func:`sync_files` makes them all durable with
one ``syncfs`` of their filesystem (Linux; elsewhere one fsync per file and folder). Folder runs do that
once per chunk of images, before writing the chunk's completion marks.

Folders: :func:`staging_dir` makes a uniquely named sibling to fill, :func:`replace_dir` swaps it into
place (an existing folder is moved aside first and removed only once the new one is in place).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import BinaryIO, Callable

_UMASK: int | None = None
_UMASK_LOCK = threading.Lock()


def umask() -> int:
    """The process umask (read once; from /proc on Linux, which does not change it even briefly)."""
    global _UMASK
    if _UMASK is None:
        with _UMASK_LOCK:
            if _UMASK is None:
                value = None
                try:
                    for line in Path("/proc/self/status").read_text().splitlines():
                        if line.startswith("Umask:"):
                            value = int(line.split()[1], 8)
                            break
                except (OSError, ValueError):
                    value = None
                if value is None:  # no /proc: the classic set-and-restore
                    value = os.umask(0o022)
                    os.umask(value)
                _UMASK = value
    return _UMASK


def dir_mode() -> int:
    """Permissions of a new folder under the current umask (0o755 for umask 022)."""
    return 0o777 & ~umask()


_TEMPORARY_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def _open_temporary(path: Path) -> tuple[int, Path]:
    """A new temporary file ``.NAME.XXXXXXXX.tmp`` beside ``path`` (8 random hex digits; exclusive
    create, mode 0666 less the umask), open for writing; creates the folder when missing. Returns
    (file descriptor, temporary path)."""
    for attempt in range(100):
        tmp = path.with_name(f".{path.name}.{os.urandom(4).hex()}.tmp")
        try:
            return os.open(tmp, _TEMPORARY_FLAGS, 0o666), tmp
        except FileExistsError:
            continue
        except FileNotFoundError:
            if attempt or path.parent.is_dir():
                raise
            path.parent.mkdir(parents=True, exist_ok=True)
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(path))


class AtomicFile:
    """A temporary file that becomes ``path`` on :meth:`commit` (or is removed by :meth:`discard`).

    For writers that stream into a file over time (``mode`` "wb" or "w")::

        f = AtomicFile(path, "w")
        f.file.write(...)
        f.commit()        # or f.discard() on failure

    As a context manager it commits on a normal exit and discards on an exception.
    """

    def __init__(self, path: str | os.PathLike, mode: str = "wb", *, fsync: bool = True,
                 encoding: str = "utf-8") -> None:
        if mode not in ("wb", "w"):
            raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
        self.path = Path(path)
        self.fsync = fsync
        fd, self._tmp = _open_temporary(self.path)
        self.file = os.fdopen(fd, mode, **({} if mode == "wb" else {"encoding": encoding}))
        self._done = False

    def commit(self) -> Path:
        """Flush, (fsync,) and rename over ``path``."""
        if self._done:
            raise RuntimeError(f"{self.path}: already committed or discarded")
        try:
            self.file.flush()
            if self.fsync:
                os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self._tmp, self.path)
        except BaseException:
            self.discard()
            raise
        self._done = True
        return self.path

    def discard(self) -> None:
        """Close and remove the temporary file; ``path`` is untouched."""
        if self._done:
            return
        self._done = True
        try:
            self.file.close()
        finally:
            try:
                os.unlink(self._tmp)
            except FileNotFoundError:
                pass

    def __enter__(self) -> "AtomicFile":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def write_with(path: str | os.PathLike, write: Callable[[BinaryIO], object], *, fsync: bool = True) -> Path:
    """Atomically create or replace ``path`` with what ``write(fileobj)`` writes to a binary file.

    The parent folder is created if needed. If ``write`` raises, the target is untouched and the
    temporary file is removed.
    """
    with AtomicFile(path, "wb", fsync=fsync) as f:
        write(f.file)
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> Path:
    """Atomically create or replace ``path`` with ``data`` (bytes-like).

    What :class:`AtomicFile` does, on the file descriptor (no file object): folder runs write thousands
    of files, and this is about 60 µs less Python per file."""
    path = Path(path)
    fd, tmp = _open_temporary(path)
    try:
        try:
            view = memoryview(data)
            if view.ndim != 1 or view.itemsize != 1:
                view = view.cast("B")
            while view:
                view = view[os.write(fd, view):]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def write_text(path: str | os.PathLike, text: str, *, fsync: bool = True, encoding: str = "utf-8") -> Path:
    """Atomically create or replace ``path`` with ``text``."""
    return write_bytes(path, text.encode(encoding), fsync=fsync)


@functools.cache
def _libc_syncfs():
    """libc's ``syncfs`` (Linux), looked up once in the process's own symbols; None where unavailable."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None


def _syncfs(fd: int) -> bool:
    """``syncfs(2)`` of the filesystem holding ``fd``; False where unavailable or failed."""
    syncfs = _libc_syncfs()
    return syncfs is not None and syncfs(fd) == 0


def sync_files(paths, folder: str | os.PathLike) -> None:
    """Make ``paths`` (written with ``fsync=False``) and their renames durable: one ``syncfs`` of the
    filesystem of ``folder`` (all of ``paths`` must be on it), or, where syncfs is unavailable or fails,
    an fsync of every file and of every folder holding one. Missing paths are skipped."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        fd = None
    if fd is not None:
        try:
            if _syncfs(fd):
                return
        finally:
            os.close(fd)
    for path in paths:
        try:
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        except OSError:
            pass
    for parent in {Path(p).parent for p in paths}:
        fsync_dir(parent)


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a folder, so renames inside it survive a power loss (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def staging_dir(final: str | os.PathLike) -> Path:
    """A new, empty, uniquely named sibling folder of ``final`` to fill before :func:`replace_dir`."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    os.chmod(tmp, dir_mode())
    return tmp


def replace_dir(staging: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Move the complete folder ``staging`` to ``final``; an existing ``final`` is replaced.

    The old folder is renamed aside first and deleted only after the new one is in place, so ``final``
    is at every moment either the old or the new folder (briefly absent between the two renames; if
    the second rename fails the old folder is put back).
    """
    staging, final = Path(staging), Path(final)
    if not final.exists():
        os.replace(staging, final)
        fsync_dir(final.parent)
        return final
    old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
    os.rmdir(old)
    os.replace(final, old)
    try:
        os.replace(staging, final)
    except BaseException:
        os.replace(old, final)
        raise
    fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)
    return final


def check_writable_dir(folder: str | os.PathLike) -> Path:
    """Create ``folder`` if needed and prove a file can be written there; an :class:`InputError` (exit 2)
    naming the folder and the reason otherwise (a file in the way, read-only filesystem, permissions)."""
    from .errors import InputError

    folder = Path(folder)
    try:
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(20, "exists and is not a folder")
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".dpmesh-write-test-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise InputError(f"cannot write to the output folder {folder}: {e.strerror or e}") from None
    return folder


def check_writable_file(path: str | os.PathLike) -> Path:
    """Prove the output file ``path`` can be created (its folder can be created and written, and the path
    is not a folder); :class:`InputError` (exit 2) otherwise. Nothing is left behind."""
    from .errors import InputError

    path = Path(path)
    if path.is_dir():
        raise InputError(f"cannot write the output file {path}: it is a folder")
    parent = path.parent
    existing = next(p for p in [parent, *parent.parents] if p.exists())  # the nearest existing ancestor
    if not existing.is_dir():
        raise InputError(f"cannot write the output file {path}: {existing} is a file, not a folder")
    try:
        check_writable_dir(parent)
    except InputError as e:
        raise InputError(f"cannot write the output file {path}: {str(e).split(': ', 1)[-1]}") from None
    created = [p for p in [parent, *parent.parents] if existing in p.parents]
    for p in created:  # leave no trace of the probe: remove the folders it created, innermost first
        try:
            p.rmdir()
        except OSError:
            break
    return path
