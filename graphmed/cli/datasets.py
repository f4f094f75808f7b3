"""``graphmed datasets``: list the dataset recipes and write one as a cohort folder.

``graphmed datasets materialize tcga --from-mcat CSV --out DIR`` builds a TCGA
cohort from an MCAT/PORPOISE CSV the user has (see ``datasets/tcga.yaml``).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("datasets", help="public cohorts available as recipes")
    inner = p.add_subparsers(dest="datasets_command", metavar="ACTION")
    inner.required = True
    ls = inner.add_parser("list", help="list the recipes and whether their source is installed")
    ls.set_defaults(func=run_list)
    mat = inner.add_parser("materialize", help="write a recipe's cohort as a cohort folder")
    mat.add_argument("name", help="recipe name (see `graphmed datasets list`) or a recipe YAML")
    mat.add_argument(
        "--from-mcat",
        type=Path,
        default=None,
        metavar="CSV",
        help="the MCAT/PORPOISE *_all_clean.csv (or .csv.zip) that the tcga recipe reads",
    )
    mat.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="cohort folder to write"
    )
    mat.add_argument("--overwrite", action="store_true", help="replace an existing cohort folder")
    mat.add_argument(
        "--format",
        dest="table_format",
        choices=("csv", "parquet"),
        default=None,
        help="format of every table (default: the recipe's, else csv)",
    )
    mat.set_defaults(func=run_materialize)


def run_list(args: argparse.Namespace) -> int:
    from ..data.recipes import list_recipes

    rows = [
        (
            r["name"],
            r["source"],
            "" if r["patients"] is None else str(r["patients"]),
            r["description"] + (f"  [{r['note']}]" if r["note"] else ""),
        )
        for r in list_recipes()
    ]
    header = ("name", "source", "patients", "description")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + "  " + row[3])
    return 0


def run_materialize(args: argparse.Namespace) -> int:
    from ..data.recipes import materialize

    path = materialize(
        args.name,
        args.out,
        overwrite=args.overwrite,
        table_format=args.table_format,
        from_mcat=args.from_mcat,
    )
    from ..data.io import read_cohort

    s = read_cohort(path).summary()
    mods = ", ".join(f"{m} ({v['kind']}, {v['width']})" for m, v in s["modalities"].items())
    print(f"wrote {s['name']} to {path}: {s['patients']} patients, {s['events']} events; {mods}")
    return 0
