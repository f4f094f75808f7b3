"""What a run folder was made from, so that ``--resume`` continues only the same run.

:func:`run_fingerprint` hashes the config (less the keys that do not change
results: ``train.progress``, ``train.device``) and the cohort's patient ids,
times and events. :func:`check_resume` writes it to ``fingerprint.json`` in
the run folder, and on resume refuses a folder made from another config,
fold count or cohort, whose finished folds would otherwise be mixed with new
ones in ``metrics.json``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import write_json
from ..data.cohort import Cohort
from ..errors import GraphMedError

FINGERPRINT = "fingerprint.json"
IGNORED = (("train", "progress"), ("train", "device"))
"""Config keys that do not change results, so a resume may change them."""


def run_fingerprint(cohort: Cohort, config: dict[str, Any]) -> dict[str, Any]:
    """The config (plain data, less :data:`IGNORED`), its hash, and the cohort's hash."""
    conf = json.loads(json.dumps(config))  # a copy, as read back from the file
    for section, key in IGNORED:
        conf.get(section, {}).pop(key, None)
    h = hashlib.sha256()
    for pid in cohort.patient_ids:
        h.update(str(pid).encode() + b"\0")
    h.update(np.ascontiguousarray(cohort.time, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(cohort.event, dtype=np.int64).tobytes())
    return {
        "config_hash": _digest(conf),
        "cohort_hash": h.hexdigest(),
        "cohort": cohort.name,
        "n_patients": cohort.n_patients,
        "n_events": int(cohort.event.sum()),
        "config": conf,
    }


def check_resume(out: Path, fingerprint: dict[str, Any], resume: bool) -> None:
    """On resume, refuse ``out`` if it was made from another run; then record ``fingerprint``.

    A folder without a fingerprint (made before they were recorded, or a
    fresh one) is accepted.

    Raises:
        GraphMedError: ``resume`` and the folder's fingerprint differs; the
            message names the differing config keys or the cohort.
    """
    path = out / FINGERPRINT
    if resume and path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise GraphMedError(
                f"cannot read '{path}' ({err}); delete it to resume without the check"
            ) from err
        problems = _differences(old, fingerprint)
        if problems:
            raise GraphMedError(
                f"cannot resume in '{out}': it holds a run of a different "
                + "; ".join(problems)
                + ". Its finished folds would be mixed with new ones in metrics.json. Resume "
                "with the same config and cohort, or train into a new --out (or without "
                "--resume, which recomputes every fold)."
            )
    write_json(path, fingerprint)


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = []
    if old.get("config_hash") != new["config_hash"]:
        keys = _changed(old.get("config", {}), new["config"])
        shown = ", ".join(f"{k}: {a!r} there, {b!r} now" for k, a, b in keys[:5])
        more = f" and {len(keys) - 5} more" if len(keys) > 5 else ""
        out.append(f"config ({shown or 'see ' + FINGERPRINT}{more})")
    if old.get("cohort_hash") != new["cohort_hash"]:
        out.append(
            f"cohort ('{old.get('cohort')}' with {old.get('n_patients')} patients and "
            f"{old.get('n_events')} events there, '{new['cohort']}' with {new['n_patients']} "
            f"and {new['n_events']} now; or the same count with other ids, times or events)"
        )
    return out


def _changed(a: Any, b: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = list(dict.fromkeys([*a, *b]))
        return [
            d for k in keys for d in _changed(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
        ]
    return [] if a == b else [(path, a, b)]


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()
