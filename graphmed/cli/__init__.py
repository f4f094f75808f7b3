"""The ``graphmed`` command line.

Each subcommand lives in its own module with a ``register(subparsers)`` function
that adds its parser and sets ``func`` to the handler; :func:`main` dispatches.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ..errors import GraphMedError

# Modules that register subcommands, in the order they appear in --help.
_COMMAND_MODULES: tuple[str, ...] = (
    "train",
    "predict",
    "export",
    "benchmark",
    "cohort",
    "datasets",
    "tune",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="graphmed",
        description="Omni-modal patient heterographs for survival and classification.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code (2 for bad input, with the message on stderr).

    A failed read or write (a full disk, no permission: any ``OSError``) is
    reported the same way, with the path, rather than as a traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (GraphMedError, OSError) as err:
        print(f"graphmed {args.command}: error: {_message(err)}", file=sys.stderr)
        return 2


def _message(err: BaseException) -> str:
    if isinstance(err, GraphMedError) or not isinstance(err, OSError):
        return str(err)
    if isinstance(err, FileNotFoundError):  # as it always read: "[Errno 2] No such file ..."
        return str(err)
    reason = err.strerror or str(err)
    where = f" '{err.filename}'" if err.filename else ""
    return f"cannot read or write{where}: {reason}" if where else f"{type(err).__name__}: {reason}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
