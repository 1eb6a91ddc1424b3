"""Hyper-parameter sweeps over CV: an Optuna study whose every trial is a real k-fold run.

- The search space is kit.toml's [sweep] params: any config key, a number range
  ({ low, high, log, step }; integer fields stay integers) or a list of choices.
- Each trial is `kit train` with the trial's values (kit.train.cv.train_run), on every fold or on
  the first [sweep] folds, into runs/<sweep>-t<NNN>/, and is scored by its OOF metric: each
  image is predicted by the fold model that never trained on it, so the sweep never scores a
  trial on images it trained on. Folds are fixed (folds.csv), and [sweep] may not change them.
- Pruning: after each fold the trial reports that fold's score; the median pruner stops a trial
  whose score is worse than the median of earlier trials at the same fold. Pruned trials'
  folders are removed (the study keeps their values).
- The study lives in runs/sweeps/<sweep>/study.db (SQLite): a crashed sweep resumes where it
  stopped (a trial whose process died is retried, and its run continues with `--resume`), and
  several `kit sweep` processes on one machine can share the study. `trials` counts finished and
  pruned trials over all calls, so a rerun after a crash only runs what is missing.
- Every finished trial is a normal run in the ledger, marked with the sweep's name (`kit runs`
  shows it); runs/sweeps/<sweep>/summary.json lists the trials and names the best one.

Choosing the best of many trials on the same OOF is itself a selection, so the best trial's CV is
optimistic by a little; a blend or a final check on the leaderboard is the honest next step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import re
import shutil
import warnings
from pathlib import Path

from kit.competition import Competition
from kit.config import Config, config_from_dict
from kit.data.folds import training_table
from kit.errors import ConfigError, KitError
from kit.fileio import write_json
from kit.ledger import record_run
from kit.metrics import get_metric
from kit.run import Run
from kit.train.cv import train_run

SWEEPS_DIR = "sweeps"  # under runs/: one folder per study
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,60}$")
SPEC_KEYS = {"low", "high", "log", "step", "choices"}
FIXED_SECTIONS = ("competition", "folds", "sweep", "track")  # what a trial may not change
HEARTBEAT_SECONDS = 60  # a running trial's heartbeat in the study; missed for GRACE = dead
GRACE_SECONDS = 180
RETRIES = 2  # a trial whose process died is retried this often, resuming its run


def sweep_dir(competition: Competition, name: str) -> Path:
    return competition.runs_dir / SWEEPS_DIR / name


def search_space(params: dict, source: str = "[sweep] params") -> dict[str, dict]:
    """'section.key' -> spec, checked; nested tables ({train = {lr = {...}}}) are flattened."""
    flat: dict[str, object] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict) and value and not set(value) & SPEC_KEYS:
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else key, inner)
        else:
            flat[prefix] = value

    if params:
        walk("", params)
    defaults = Config()
    space = {}
    for key, spec in flat.items():
        where = f"{source} {key!r}"
        section, _, field = key.partition(".")
        if not field or "." in field or not hasattr(defaults, section):
            raise ConfigError(f"{where}: name a config key as section.key, e.g. train.lr")
        if section in FIXED_SECTIONS:
            raise ConfigError(f"{where}: [{section}] is fixed for a sweep; sweep training keys")
        if not hasattr(getattr(defaults, section), field):
            raise ConfigError(f"{where}: [{section}] has no key {field!r}")
        if not isinstance(spec, dict) or not set(spec) <= SPEC_KEYS:
            raise ConfigError(
                f"{where}: give {{ low = A, high = B, log = true }} or {{ choices = [...] }}"
            )
        if "choices" in spec:
            if not isinstance(spec["choices"], list) or not spec["choices"]:
                raise ConfigError(f"{where}: choices must be a non-empty list")
        else:
            low, high = spec.get("low"), spec.get("high")
            numbers = all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high)
            )
            if not numbers or not low < high:
                raise ConfigError(f"{where}: needs numbers low < high (got {low!r}, {high!r})")
            if spec.get("log") and low <= 0:
                raise ConfigError(f"{where}: a log range needs low > 0 (got {low!r})")
        default = getattr(getattr(defaults, section), field)
        space[key] = {**spec, "integer": isinstance(default, int) and not isinstance(default, bool)}
    return space


def suggest(trial, key: str, spec: dict):
    """The trial's value for one key of the search space."""
    if "choices" in spec:
        return trial.suggest_categorical(key, spec["choices"])
    log = bool(spec.get("log", False))
    if spec["integer"]:
        step = int(spec.get("step", 1))
        return trial.suggest_int(key, int(spec["low"]), int(spec["high"]), step=step, log=log)
    step = spec.get("step")
    return trial.suggest_float(key, float(spec["low"]), float(spec["high"]), step=step, log=log)


def with_values(competition: Competition, values: dict) -> Competition:
    """The competition with a trial's values applied, checked as kit.toml itself is."""
    raw = competition.config.to_dict()
    for key, value in values.items():
        section, field = key.split(".")
        raw[section][field] = value
    origins = {key: f"[sweep] params (trial value {value!r})" for key, value in values.items()}
    return dataclasses.replace(competition, config=config_from_dict(raw, origins=origins))


def run_sweep(
    competition: Competition,
    name: str,
    *,
    trials: int | None = None,
    timeout: float | None = None,
    folds: int | None = None,
    progress: bool = True,
) -> dict:
    """Run (or resume) the study `name` until it holds `trials` finished or pruned trials, or
    `timeout` seconds pass; return runs/sweeps/<name>/summary.json's content."""
    import optuna
    from optuna.trial import TrialState

    if not NAME.match(name):
        raise ConfigError(f"sweep name {name!r}: use letters, digits, '-', '_' or '.'")
    settings = competition.config.sweep
    space = search_space(settings.params)
    if not space:
        raise ConfigError(
            '[sweep] params is empty in kit.toml: add e.g. params = { "train.lr" = '
            "{ low = 1e-4, high = 1e-2, log = true } }"
        )
    trials = settings.trials if trials is None else trials
    timeout = settings.timeout if timeout is None else timeout
    k = settings.folds if folds is None else folds
    if trials < 1 or timeout < 0 or k < 0:
        raise ConfigError("--trials must be at least 1, --timeout and --folds not negative")
    table, task = training_table(competition)
    metric = get_metric(competition.config.metric.name, task.kind)
    all_folds = sorted(table["fold"].unique().tolist())
    chosen = all_folds[:k] if k else all_folds

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder = sweep_dir(competition, name)
    folder.mkdir(parents=True, exist_ok=True)
    with _creation_lock(folder):  # two processes creating the same new study.db would clash
        study = _open_study(name, folder, metric, settings)
        opening = study.user_attrs.get("openings", 0)  # each process its own proposals
        study.set_user_attr("openings", opening + 1)
    study.sampler = optuna.samplers.TPESampler(seed=settings.seed + opening)
    if study.user_attrs.get("metric", metric.name) != metric.name:
        raise KitError(
            f"sweep {name!r} was scored by {study.user_attrs['metric']}, kit.toml now says "
            f"{metric.name}: restore metric.name or start a sweep under another name"
        )
    if study.user_attrs.get("folds", chosen) != chosen:
        raise KitError(
            f"sweep {name!r} scores trials on folds {study.user_attrs['folds']}, this call on "
            f"{chosen}: pass --folds {len(study.user_attrs['folds'])} or use another sweep name"
        )
    study.set_user_attr("metric", metric.name)
    study.set_user_attr("folds", chosen)

    def objective(trial) -> float:
        values = {key: suggest(trial, key, spec) for key, spec in space.items()}
        # a retry of a trial whose process died inherits its user attrs, so its run continues
        run = trial.user_attrs.get("run") or f"{name}-t{trial.number:03d}"
        trial.set_user_attr("run", run)
        trial_competition = with_values(competition, values)
        resume = Run(competition, run).exists  # a retried trial

        def on_fold(summary: dict) -> None:
            trial.report(summary["score"], chosen.index(summary["fold"]))
            if trial.should_prune():
                raise optuna.TrialPruned(f"fold {summary['fold']} scored {summary['score']:.5f}")

        if progress:
            shown = ", ".join(f"{key}={value!r}" for key, value in values.items())
            print(f"trial {trial.number} ({run}): {shown}")
        try:
            result = train_run(
                trial_competition,
                run,
                folds=chosen,
                progress=progress,
                resume=resume,
                on_fold=on_fold,
            )
        except optuna.TrialPruned:
            shutil.rmtree(competition.runs_dir / run, ignore_errors=True)
            if progress:
                print(f"trial {trial.number} ({run}): pruned")
            raise
        write_json(
            competition.runs_dir / run / "sweep.json",
            {"sweep": name, "trial": trial.number, "params": values, "folds": chosen},
        )
        record_run(competition, run)  # the ledger row now names the sweep
        if progress:
            print(f"trial {trial.number} ({run}): OOF {metric.name} {result['cv']:.5f}")
        return float(result["cv"])

    counted = (TrialState.COMPLETE, TrialState.PRUNED)
    remaining = trials - len(study.get_trials(deepcopy=False, states=counted))
    if remaining > 0:
        study.optimize(
            objective,
            timeout=timeout or None,
            callbacks=[optuna.study.MaxTrialsCallback(trials, states=counted)],
        )
    return summarise(competition, name, study, metric.name, chosen)


@contextlib.contextmanager
def _creation_lock(folder: Path):
    """An exclusive flock on runs/sweeps/<name>/.lock while the study's tables are created."""
    with open(folder / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _open_study(name: str, folder: Path, metric, settings):
    """The study in folder/study.db (created on first use): TPE, median pruner, heartbeats."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5, and needed
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = RDBStorage(
            f"sqlite:///{folder / 'study.db'}",
            engine_kwargs={"connect_args": {"timeout": 60}},  # several processes share the file
            heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=GRACE_SECONDS,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=RETRIES),
        )
    direction = "maximize" if metric.greater_is_better else "minimize"
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
        if settings.prune
        else optuna.pruners.NopPruner()
    )
    return optuna.create_study(
        study_name=name, storage=storage, load_if_exists=True, direction=direction, pruner=pruner
    )


def summarise(competition: Competition, name: str, study, metric: str, folds: list[int]) -> dict:
    """summary.json: every trial (state, value, run, params, fold scores) and the best one."""
    from optuna.trial import TrialState

    rows = []
    for trial in study.get_trials(deepcopy=False):
        rows.append(
            {
                "number": trial.number,
                "state": trial.state.name.lower(),
                "value": trial.value,
                "run": trial.user_attrs.get("run"),
                "params": trial.params,
                "fold_scores": [
                    trial.intermediate_values[s] for s in sorted(trial.intermediate_values)
                ],
            }
        )
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    best = None
    if done:
        trial = study.best_trial
        best = {"run": trial.user_attrs.get("run"), "value": trial.value, "params": trial.params}
    summary = {
        "sweep": name,
        "metric": metric,
        "direction": study.direction.name.lower(),
        "folds": folds,
        "storage": str(sweep_dir(competition, name) / "study.db"),
        "trials": rows,
        "counts": {s: sum(r["state"] == s for r in rows) for s in ("complete", "pruned", "fail")},
        "best": best,
    }
    write_json(sweep_dir(competition, name) / "summary.json", summary)
    return summary


def read_summary(competition: Competition, name: str) -> dict:
    path = sweep_dir(competition, name) / "summary.json"
    if not path.exists():
        raise KitError(f"no sweep {name!r} in {path.parent.parent}: kit sweep {name}")
    return json.loads(path.read_text())
