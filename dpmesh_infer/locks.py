"""One run at a time per output folder: ``OUT/.dpmesh.lock``.

A run that writes into a folder (``dpmesh predict ... --out DIR``, training runs) holds an exclusive
lock on ``DIR/.dpmesh.lock`` for its whole duration; a second run into the same folder stops at once
with :class:`~dpmesh_infer.errors.OutputConflictError` (exit 2) naming the other run (pid, host,
command, start time). The lock is the kernel's ``flock``: it is released when the holder exits in any
way, ``kill -9`` included, so a lock never goes stale on a local filesystem and a re-run after a crash
just works. The file itself stays (it is tiny; deleting it would let two runs lock two different files).

Filesystems without ``flock`` (some network mounts) fall back to an exclusively created
``DIR/.dpmesh.lock.pid`` file: a lock left by a process that no longer exists *on this host* is taken
over with a warning; one from another host, or one you know to be stale, is removed by
``--force-unlock`` (only when no other run is using the folder).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

from .errors import OutputConflictError

logger = logging.getLogger(__name__)

LOCK_NAME = ".dpmesh.lock"
PID_LOCK_NAME = ".dpmesh.lock.pid"


def _holder_info() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)[:500],
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _describe(info: dict | None) -> str:
    if not info:
        return "another run (no details recorded)"
    return (f"pid {info.get('pid')} on host {info.get('host')}, started {info.get('started_at')}: "
            f"{info.get('command', '?')}")


def _read_info(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "null")
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """Exclusive lock of an output folder for one run (a context manager).

    Args:
        folder: the output folder (created if needed).
        force: with the pid-file fallback, remove an existing lock first (``--force-unlock``).

    Raises:
        OutputConflictError: another run holds the lock (the message names it and what to do).
    """

    def __init__(self, folder: str | os.PathLike, *, force: bool = False) -> None:
        self.folder = Path(folder)
        self.force = force
        self._fd: int | None = None
        self._pid_file: Path | None = None

    def acquire(self) -> "RunLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_NAME
        try:
            import fcntl
        except ImportError:  # not POSIX
            return self._acquire_pid_file()
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputConflictError(
                f"another dpmesh run is writing into {self.folder} ({_describe(_read_info(path))}). Wait for it to "
                "finish or choose another output folder; two runs into one folder would redo and mix each "
                "other's images.") from None
        except OSError:  # no flock on this filesystem
            os.close(fd)
            return self._acquire_pid_file()
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(_holder_info()).encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def _acquire_pid_file(self) -> "RunLock":
        path = self.folder / PID_LOCK_NAME
        if self.force:
            path.unlink(missing_ok=True)
        for _ in range(2):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                info = _read_info(path)
                if info and info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int) \
                        and not _pid_alive(info["pid"]):
                    logger.warning("removing the stale lock %s of a run that no longer exists (%s)", path,
                                   _describe(info))
                    path.unlink(missing_ok=True)
                    continue
                raise OutputConflictError(
                    f"{self.folder} is locked by another dpmesh run ({_describe(info)}). Wait for it to finish or "
                    f"choose another output folder; if that run is gone (e.g. on another machine), re-run with "
                    f"--force-unlock to remove {path}.") from None
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(_holder_info(), f)
            self._pid_file = path
            return self
        raise OutputConflictError(f"could not lock {self.folder} ({path})")

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            except OSError:
                pass
            os.close(self._fd)  # releases the flock
            self._fd = None
        if self._pid_file is not None:
            self._pid_file.unlink(missing_ok=True)
            self._pid_file = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
