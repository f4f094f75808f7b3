"""Atomic writes: a temporary file beside the target, then ``os.replace``."""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import WriteError

# What torch.save raises when the disk fills up under it: no errno, a message from its
# zip writer ("unexpected pos 4096 vs 0", "PytorchStreamWriter failed writing file").
_TORCH_WRITE_FAILURES = ("unexpected pos", "PytorchStreamWriter failed", "No space left")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path; on success it is renamed onto ``path``.

    On the ranks other than 0 of a distributed job nothing is renamed (rank 0
    writes the same file). An exception (or a kill) before the rename leaves no
    file under ``path``,
    and the temporary file is removed. A kill leaves it, hidden
    (``.name.<pid>.*.tmp``); the next write of ``path`` removes it once that
    pid is gone.

    Raises:
        WriteError: Writing failed (a full disk, no permission, torch's
            writer giving up); the message names ``path`` and says that
            nothing was written under it.
    """
    path = Path(path)
    tmp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(path)
        prefix = f".{path.name}.{os.getpid()}."  # the pid tells a later write it is stale
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        if not _writes_reach_disk():
            return  # a rank other than 0 of a distributed job: rank 0 writes this file
        os.replace(tmp_path, path)
    except (OSError, RuntimeError) as err:
        if isinstance(err, WriteError) or not _write_failure(err):
            raise
        raise WriteError(
            f"cannot write '{path}' ({type(err).__name__}: {_reason(err)}); nothing was written "
            "under that name. Free some disk space (or write elsewhere) and run again."
        ) from err
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def _writes_reach_disk() -> bool:
    """False on the ranks other than 0 of a ``--distributed`` job (they compute the same
    results as rank 0, which alone writes them; see ``docs/distributed.md``)."""
    from .train.distributed import current

    ctx = current()
    return ctx is None or ctx.is_main


def _remove_stale(path: Path) -> None:
    """Remove temporaries of ``path`` left by writers that were killed (their pid is gone)."""
    from ._lock import _alive

    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()


def _write_failure(err: BaseException) -> bool:
    if isinstance(err, OSError):
        return True
    return any(s in str(err) for s in _TORCH_WRITE_FAILURES)


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return "no space left on the device"
    text = (str(err).strip().splitlines() or [""])[0]
    return text if len(text) <= 160 else text[:157] + "..."


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")
