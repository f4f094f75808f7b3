"""Studies: Optuna storages, pruners, and running trials that many processes share.

Storage, by what ``--storage`` says:

* nothing: an SQLite file ``study.db`` in the output folder;
* ``journal:PATH`` or a path ending in ``.log`` / ``.journal``: Optuna's
  journal file storage (append-only, safe for many processes on one machine
  or on NFS);
* any SQLAlchemy URL (``sqlite:///x.db``, ``postgresql://user@host/db``,
  ``mysql+pymysql://...``): :class:`optuna.storages.RDBStorage`, with a
  heartbeat so that a trial of a crashed worker is marked failed and retried.

A worker that resumes or joins a study first fails the ``RUNNING`` trials whose
process is gone from this machine (a ``kill -9``, an out-of-memory kill) and
queues each again once, with any storage: no need to wait for the heartbeat,
which covers workers on other machines (and journal storages have none).

A study is opened with ``load_if_exists``: running the same command again
resumes it, and N processes pointed at one storage and study name share its
trials (Optuna hands each a distinct trial). Nothing here schedules work
itself.
"""

from __future__ import annotations

import copy
import os
import random
import socket
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..data.cohort import Cohort
from ..errors import ConfigError, did_you_mean
from ..train.config import ExperimentConfig, experiment_to_dict
from .objective import InnerCVObjective, TrialFailed, metric_direction
from .search_space import SearchSpace

PRUNERS: tuple[str, ...] = ("median", "hyperband", "none")
#: Consecutive failed trials of one process after which it stops (a broken setup, not bad luck).
MAX_CONSECUTIVE_FAILURES = 5
_ATTR = "graphmed"  # study user attribute holding what the study was created for


def make_pruner(name: str, inner_folds: int) -> optuna.pruners.BasePruner:
    """The pruner of ``--pruner``: ``median``, ``hyperband`` or ``none``.

    Intermediate values are running means over inner folds (steps ``0 ..
    inner_folds - 1``), so Hyperband's resource is the number of folds.
    """
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=max(inner_folds, 2), reduction_factor=3
        )
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(
        f"unknown pruner '{name}'; expected one of {', '.join(PRUNERS)}.{did_you_mean(name, PRUNERS)}"
    )


def open_storage(storage: str | None, out_dir: str | Path | None) -> optuna.storages.BaseStorage:
    """The Optuna storage named by ``storage`` (see the module docstring).

    Raises:
        ConfigError: No storage and no output folder, a database driver that
            is not installed (with the pip command), or a URL that cannot be
            opened.
    """
    if storage is None:
        if out_dir is None:
            raise ConfigError("give a storage URL or an output folder for the default SQLite file")
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        storage = f"sqlite:///{Path(out_dir).resolve() / 'study.db'}"
    if storage.startswith("journal:") or (
        "://" not in storage and storage.endswith((".log", ".journal"))
    ):
        path = Path(storage.removeprefix("journal:")).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if "://" not in storage:
        raise ConfigError(
            f"storage '{storage}' is neither a database URL (sqlite:///study.db, "
            "postgresql://user@host:5432/db) nor a journal file (journal:PATH or *.log)"
        )
    url = _with_postgres_driver(storage)
    engine: dict[str, Any] = {}
    if storage.startswith("sqlite"):
        engine = {"connect_args": {"timeout": 60}}  # wait for another process's write lock
    else:
        engine = {"pool_pre_ping": True}
    for attempt in range(4):
        try:
            return _rdb_storage(url, engine)
        except ImportError:  # Optuna re-raises a missing driver as a plain ImportError
            hint = (
                "pip install 'graphmed[postgres]' (psycopg2-binary)"
                if storage.startswith("postgres")
                else "install the database driver SQLAlchemy names for this URL"
            )
            raise ConfigError(
                f"storage '{_hide_password(storage)}' needs a database driver: {hint}"
            ) from None
        except Exception as err:  # noqa: BLE001 - SQLAlchemy raises many kinds; say which URL failed
            # N workers started at once on an empty database all create Optuna's tables;
            # the losers see "already exists" and succeed once the winner is done.
            if attempt < 3 and "already exists" in str(err):
                time.sleep(0.5 + random.random() * (attempt + 1))
                continue
            raise ConfigError(
                f"cannot open storage '{_hide_password(storage)}': {type(err).__name__}: {err}"
            ) from None
    raise AssertionError("unreachable")  # pragma: no cover


def _rdb_storage(url: str, engine: dict[str, Any]) -> optuna.storages.RDBStorage:
    with warnings.catch_warnings():  # heartbeats are marked experimental in Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine,
            heartbeat_interval=60,
            grace_period=180,
            heartbeat_stale_trial_callback=_Retry(max_retry=1),
        )


#: User attribute naming the process that runs a trial: ``host:pid-namespace:pid``.
PROCESS_ATTR = "worker_process"
#: User attribute of a trial failed because its process was gone: the worker that saw it.
FAILED_BY_ATTR = "failed_by"


class _Retry(optuna.storages.RetryHeartbeatStaleTrialCallback):
    """Queue a failed trial again, without the identity of the process that died.

    The retry copies the trial's user attributes; the dead process's id must not
    come along, or a worker that opens the study while the retry is starting
    would find that process gone and fail the retry too.
    """

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        trial = copy.deepcopy(trial)
        drop = (PROCESS_ATTR, FAILED_BY_ATTR, "worker")
        trial.user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in drop}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__call__(study, trial)


def process_id() -> str:
    """``host:pid-namespace:pid`` of this process: who runs a trial, told apart from
    a process of another container (same host name, own pid numbers)."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:  # not Linux: the host name and pid alone
        namespace = "-"
    return f"{socket.gethostname()}:{namespace}:{os.getpid()}"


def fail_trials_of_dead_workers(study: optuna.Study) -> list[int]:
    """Fail the ``RUNNING`` trials whose process on this machine is gone; queue each again once.

    A trial records :func:`process_id` when it starts. One whose process has
    the host name and pid namespace of this one, and a pid that no longer
    runs, was killed (or crashed) mid-trial: it is marked ``FAIL`` (its reason
    says so, see :func:`fail_reason`) and its parameters are queued as a new
    trial, as the heartbeat of an RDB storage would do after its grace period.
    Trials of other machines are left to the heartbeat.

    Returns:
        The numbers of the trials failed here.
    """
    from .._lock import _alive

    here, _, me = process_id().rpartition(":")
    storage = study._storage
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner, _, pid = str(trial.user_attrs.get(PROCESS_ATTR, "")).rpartition(":")
        if owner != here or not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            storage.set_trial_user_attr(trial._trial_id, FAILED_BY_ATTR, f"{here}:{me}")
            if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker opening the study got there first
        failed.append(trial.number)
        with warnings.catch_warnings():  # the retry callback is marked experimental in Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = _Retry(max_retry=1)
        retry(study, storage.get_trial(trial._trial_id))
    return failed


class _RecordProcess:
    """The objective, recording :func:`process_id` on the trial before it starts."""

    def __init__(self, objective: Callable[[optuna.Trial], float]):
        self.objective = objective

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr(PROCESS_ATTR, process_id())
        return self.objective(trial)


def _with_postgres_driver(url: str) -> str:
    """``postgresql://`` with the driver that is installed (psycopg 3, else psycopg2).

    SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3 and older versions
    as psycopg2; graphmed's ``postgres`` extra installs psycopg2-binary, so the
    bare form works with either.
    """
    import importlib.util

    head, sep, tail = url.partition("://")
    if head not in ("postgresql", "postgres") or not sep:
        return url
    for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return f"postgresql+{driver}://{tail}"
    return url


def _hide_password(url: str) -> str:
    head, sep, tail = url.partition("://")
    if sep and "@" in tail and ":" in tail.split("@", 1)[0]:
        user = tail.split("@", 1)[0].split(":", 1)[0]
        return f"{head}://{user}:***@{tail.split('@', 1)[1]}"
    return url


def open_study(
    name: str,
    storage: optuna.storages.BaseStorage,
    *,
    direction: str,
    pruner: optuna.pruners.BasePruner,
    seed: int | None = None,
    meta: dict[str, Any] | None = None,
) -> optuna.Study:
    """Create the study ``name`` or load it if it exists (so workers and reruns share it).

    Args:
        name: Study name.
        storage: From :func:`open_storage`.
        direction: ``"maximize"`` or ``"minimize"``.
        pruner: From :func:`make_pruner`.
        seed: Sampler seed; the number of trials already in the study is added,
            so a resumed study draws new points. ``None``: fresh randomness
            (what concurrent workers should use, or each a different seed).
        meta: What the study is for (metric, inner folds, cohort, space, base
            config); stored on creation and checked on resume.

    Raises:
        ConfigError: The existing study was made for another metric, number of
            inner folds or cohort.
    """
    try:
        existing = storage.get_study_id_from_name(name)
        n_before = len(storage.get_all_trials(existing, deepcopy=False))
    except KeyError:
        n_before = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(
            seed=None if seed is None else seed + n_before, multivariate=True, group=True
        )
    try:
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            sampler=sampler,
            pruner=pruner,
            direction=direction,
            load_if_exists=True,
        )
    except ValueError as err:
        raise ConfigError(f"cannot open study '{name}': {err}; use another --study name") from None
    if meta is not None:
        stored = study.user_attrs.get(_ATTR)
        if stored is None:
            study.set_user_attr(_ATTR, meta)
        else:
            for key in ("metric", "inner_folds", "cohort", "n_patients"):
                if key in stored and stored[key] != meta.get(key):
                    raise ConfigError(
                        f"study '{name}' was created with {key}={stored[key]!r}, not "
                        f"{meta.get(key)!r}; resume it with the same setting or use another --study"
                    )
    return study


@dataclass
class TuneResult:
    """What :func:`run_study` leaves: the study and why this process stopped."""

    study: optuna.Study
    stopped_by_failures: bool = False
    seconds: float = 0.0


def study_meta(
    cohort: Cohort, base: ExperimentConfig, space: SearchSpace, metric: str, inner_folds: int
) -> dict[str, Any]:
    """The study's identity card, stored once and checked on every resume."""
    return {
        "metric": metric,
        "direction": metric_direction(metric, base),
        "inner_folds": inner_folds,
        "cohort": cohort.name,
        "n_patients": cohort.n_patients,
        "space": space.to_dict(),
        "space_fingerprint": space.fingerprint(),
        "base_config": experiment_to_dict(base),
    }


def run_study(
    cohort: Cohort,
    base: ExperimentConfig,
    space: SearchSpace,
    *,
    study_name: str,
    storage: optuna.storages.BaseStorage,
    n_trials: int | None,
    metric: str = "c_index",
    inner_folds: int = 3,
    pruner: str = "median",
    timeout: float | None = None,
    seed: int | None = None,
    max_trials: int | None = None,
    log: Callable[[str], None] | None = print,
) -> TuneResult:
    """Run (or resume, or join) a study of inner-CV trials on ``cohort``.

    Args:
        cohort: The patients to tune on (training patients only).
        base: The config the space is applied to.
        space: The search space.
        study_name: Study name in ``storage``.
        storage: From :func:`open_storage`.
        n_trials: Trials this call runs, counting failed ones and retries of
            killed ones (``None``: no limit, until ``timeout`` or ``max_trials``).
        metric: Objective metric (see :func:`~graphmed.tune.objective.metric_direction`).
        inner_folds: Inner CV folds.
        pruner: ``median``, ``hyperband`` or ``none``.
        timeout: Stop starting new trials after this many seconds.
        seed: Sampler seed (see :func:`open_study`).
        max_trials: Stop once the study (all workers) holds this many
            complete or pruned trials; a study that holds them already runs
            no trial. With ``n_trials`` too, the first limit reached stops.
        log: Callable receiving one progress line per trial (None: silent).
    """
    log = log or (lambda line: None)
    objective = InnerCVObjective(cohort, base, space, metric=metric, inner_folds=inner_folds)
    meta = study_meta(cohort, base, space, metric, inner_folds)
    study = open_study(
        study_name,
        storage,
        direction=objective.direction,
        pruner=make_pruner(pruner, inner_folds),
        seed=seed,
        meta=meta,
    )
    stored = study.user_attrs.get(_ATTR, {})
    if stored.get("space_fingerprint") not in (None, meta["space_fingerprint"]):
        log(f"note: study '{study_name}' was started with another search space; continuing")
    for number in fail_trials_of_dead_workers(study):
        log(
            f"note: trial {number} was running in a process that is gone (killed or crashed); "
            "marked failed, its parameters are queued again"
        )
    progress = ProgressPrinter(metric, len(objective.folds), log)
    callbacks: list[Any] = [progress]
    t0 = time.time()
    if max_trials is not None:
        states = (TrialState.COMPLETE, TrialState.PRUNED)
        done = len(study.get_trials(deepcopy=False, states=states))
        if done >= max_trials:  # Optuna's callback would stop only after one more trial
            log(
                f"study '{study_name}' holds {done} complete or pruned trials already "
                f"(max_trials {max_trials}): no trial to run"
            )
            return TuneResult(study, False, 0.0)
        callbacks.append(optuna.study.MaxTrialsCallback(max_trials, states))
    study.optimize(
        _RecordProcess(objective),
        n_trials=n_trials,
        timeout=timeout,
        catch=(TrialFailed,),
        callbacks=callbacks,
    )
    return TuneResult(study, progress.stopped_by_failures, round(time.time() - t0, 2))


def fail_reason(trial: FrozenTrial, trials: Sequence[FrozenTrial] = ()) -> str:
    """Why a failed trial failed: the reason it recorded, or what a missing one means.

    A trial records ``fail_reason`` when its config fails (:class:`TrialFailed`).
    One without it was running in a worker that died (SIGKILL, out of memory, a
    lost machine) and was marked failed later, by a worker of the same machine
    that opened the study (:func:`fail_trials_of_dead_workers`) or by the
    storage's heartbeat, which may have queued a retry of it among ``trials``.
    """
    reason = trial.user_attrs.get("fail_reason")
    if reason:
        return str(reason)
    worker = trial.user_attrs.get("worker")
    who = f"worker {worker}" if worker else "its worker"
    by = trial.user_attrs.get(FAILED_BY_ATTR)
    how = (
        f"worker {by} found its process gone when it opened the study and marked it failed"
        if by
        else "the storage's heartbeat marked it failed"
    )
    retry = next(
        (
            t.number
            for t in trials
            if (t.system_attrs.get("retry_history") or [None])[-1] == trial.number
        ),
        None,
    )
    return f"no reason recorded: {who} stopped (killed or crashed) while running it, and {how}" + (
        f"; retried as trial {retry}" if retry is not None else ""
    )


class ProgressPrinter:
    """Optuna callback: one line per finished trial; stops after repeated failures."""

    def __init__(self, metric: str, n_folds: int, log: Callable[[str], None]):
        self.metric, self.n_folds, self.log = metric, n_folds, log
        self.failures = 0
        self.stopped_by_failures = False

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        params = " ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
        secs = trial.user_attrs.get("seconds")
        took = f" {secs:.1f} s" if isinstance(secs, (int, float)) else ""
        head = f"[trial {trial.number}] {trial.state.name}"
        if trial.state == TrialState.COMPLETE:
            self.failures = 0
            best = study.best_trial
            self.log(
                f"{head} {self.metric} {trial.value:.4f} (best {best.value:.4f}, trial "
                f"{best.number}){took} | {params}"
            )
        elif trial.state == TrialState.PRUNED:
            self.failures = 0
            steps = len(trial.intermediate_values)
            last = trial.intermediate_values.get(steps - 1, float("nan"))
            self.log(
                f"{head} after inner fold {steps}/{self.n_folds} (running {self.metric} "
                f"{last:.4f}){took} | {params}"
            )
        else:
            self.failures += 1
            reason = fail_reason(trial, study.get_trials(deepcopy=False))
            self.log(f"{head}: {reason} | {params}")
            if self.failures >= MAX_CONSECUTIVE_FAILURES:
                self.stopped_by_failures = True
                self.log(
                    f"stopping: {self.failures} trials in a row failed; fix the config or the "
                    "search space (the reasons are above and in trials.csv)"
                )
                study.stop()


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


__all__ = [
    "MAX_CONSECUTIVE_FAILURES",
    "PRUNERS",
    "ProgressPrinter",
    "TuneResult",
    "fail_trials_of_dead_workers",
    "make_pruner",
    "open_storage",
    "open_study",
    "process_id",
    "run_study",
    "study_meta",
]
