"""One run per output folder: a lock file that holds the owner's process id.

``os.open(O_CREAT | O_EXCL)`` creates the lock or fails if it exists, so two
runs started into one folder cannot both take it. A lock left by a process
that died (a kill, a crash) is taken over: its pid no longer runs. The lock
is re-entrant inside one process (``graphmed train`` holds it and calls
:func:`~graphmed.train.cv.cross_validate`, which takes it too).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import GraphMedError

LOCK_NAME = ".graphmed.lock"
_HELD: set[str] = set()  # lock files this process holds
_GRACE_S = 10.0  # an empty lock younger than this is being written, not stale


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike, what: str = "graphmed run") -> Iterator[Path]:
    """Hold ``folder/.graphmed.lock`` for the duration of the block.

    Args:
        folder: The output folder (created if needed).
        what: The kind of run, for the message (``"graphmed train"``).

    Raises:
        GraphMedError: A live process holds the lock; the message names it,
            the lock file and what to do.
    """
    from ._atomic import _writes_reach_disk

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    key = str(path.resolve())
    if key in _HELD or not _writes_reach_disk():  # in a torchrun job rank 0 holds it for all
        yield path
        return
    _acquire(path, folder, what)
    _HELD.add(key)
    try:
        yield path
    finally:
        _HELD.discard(key)
        if _owner(path) == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _acquire(path: Path, folder: Path, what: str) -> None:
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid = _owner(path)
            if pid is None and _age(path) < _GRACE_S:
                pid = -1  # another run is writing its pid right now
            if pid is not None and (pid == -1 or _alive(pid)):
                who = f"process {pid}" if pid > 0 else "a run that is starting"
                raise GraphMedError(
                    f"'{folder}' is in use by another {what} ({who}; lock file {path}). "
                    "Wait for it to finish or write to another output folder; if no such run "
                    f"is going on, delete {path}."
                ) from None
            with contextlib.suppress(FileNotFoundError):  # stale: its owner died
                path.unlink()
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{os.getpid()}\n")
        return
    raise GraphMedError(f"could not take the lock {path}; delete it and run again")


def _owner(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return float("inf")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
