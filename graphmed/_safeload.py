"""Loading torch files without running code from them.

``torch.load(weights_only=True)`` unpickles tensors and plain containers only;
a file that names any other Python object (a function, a class) is refused
before anything runs. graphmed writes its caches and checkpoints in that
subset (see :func:`plain`) and reads them back with :func:`load_tensors`.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import GraphMedError


def load_tensors(
    path: str | Path,
    *,
    what: str,
    fix: str,
    error: type[GraphMedError] = GraphMedError,
    map_location: str | torch.device = "cpu",
    mmap: bool = False,
) -> Any:
    """``torch.load(path, weights_only=True)``; every failure becomes ``error``.

    Args:
        path: The file to read.
        what: What the file is, for the message (e.g. ``"cached graphs"``).
        fix: What the user should do, for the message (e.g. ``"delete it to rebuild"``).
        error: The :class:`GraphMedError` subclass to raise.
        map_location: Passed to ``torch.load``.
        mmap: Memory-map the file: tensors are read from disk as they are used,
            so a file larger than memory can be loaded.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        raise error(
            f"refused to read {what} '{path}': it holds Python objects other than tensors and "
            f"plain values, so graphmed did not write it and loading it could run code; {fix}"
        ) from err
    except (OSError, RuntimeError, EOFError, pickle.PickleError, ValueError) as err:
        raise error(f"cannot read {what} '{path}' ({err}); {fix}") from err


def plain(obj: Any) -> Any:
    """``obj`` with numpy scalars and arrays made Python values and tensors, recursively."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj)
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    return obj
