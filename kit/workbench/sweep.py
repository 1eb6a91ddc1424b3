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
import queue
import re
import shutil
import threading
import time
import warnings
from pathlib import Path

from kit.cluster import create_runner
from kit.competition import Competition
from kit.config import Config, config_from_dict
from kit.data.folds import training_table
from kit.errors import ConfigError, KitError
from kit.fileio import write_json
from kit.ledger import record_run
from kit.metrics import get_metric
from kit.run import Run
from kit.train.cv import train_run
from kit.train.jobset import JobSet

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
    parallel: str | None = None,
    cluster: str | None = None,
) -> dict:
    """Run (or resume) the study `name` until it holds `trials` finished or pruned trials, or
    `timeout` seconds pass; return runs/sweeps/<name>/summary.json's content.

    parallel/cluster: the trials' folds run on kit.cluster's scheduler (`kit train --parallel`
    / `--cluster`), as many trials at once as fill its slots (optimize_on_runner)."""
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

    def propose(trial) -> dict:
        return {key: suggest(trial, key, spec) for key, spec in space.items()}

    def objective(trial, values: dict | None = None, runner_for=None) -> float:
        """One trial's run; values: already proposed (asked ahead); runner_for(run): the
        scheduler's feed the run's folds go to."""
        values = propose(trial) if values is None else values
        # a retry of a trial whose process died inherits its user attrs, so its run continues
        run = trial.user_attrs.get("run") or f"{name}-t{trial.number:03d}"
        trial.set_user_attr("run", run)
        trial_competition = with_values(competition, values)
        resume = Run(competition, run).exists  # a retried trial
        runner = runner_for(run) if runner_for is not None else None

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
                runner=runner,
            )
        except optuna.TrialPruned:
            if runner is not None:
                runner.settle()  # its folds still training end before its folder goes
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
    if remaining > 0 and (parallel or cluster):
        echo = print if progress else None
        with create_runner(competition, parallel=parallel, cluster=cluster, echo=echo) as runner:
            optimize_on_runner(
                study,
                objective,
                propose,
                runner,
                trials=trials,
                timeout=timeout,
                folds=len(chosen),
                echo=echo,
            )
    elif remaining > 0:
        study.optimize(
            objective,
            timeout=timeout or None,
            callbacks=[optuna.study.MaxTrialsCallback(trials, states=counted)],
        )
    return summarise(competition, name, study, metric.name, chosen)


def optimize_on_runner(
    study, objective, propose, runner, *, trials: int, timeout: float, folds: int, echo=None
) -> None:
    """study.optimize for trials whose folds share one kit.cluster runner.

    Ask/tell: this thread asks each trial and proposes its values in trial order, so a seeded
    sampler proposes what a sequential sweep would for the trials it draws without looking at
    results (TPE's first n_startup_trials = 10, random search, a grid, enqueued trials); each
    trial's run is then assembled as if trained alone. As many trials run at once as fill the
    runner's slots (slots ÷ folds per trial, rounded up). What differs from a sequential sweep:
    a trial proposed while earlier ones still train does not see their results (TPE after its
    startup trials, so the values differ), and the median pruner compares a fold's score with
    the trials that reported that fold by then, so it may prune less.
    """
    import optuna
    from optuna.storages._heartbeat import get_heartbeat_thread  # what study.optimize uses
    from optuna.trial import TrialState

    counted = (TrialState.COMPLETE, TrialState.PRUNED)
    jobset = JobSet(runner, echo=echo, expected=trials * folds)
    jobset.started.set()  # no barrier: the trials' names are the sweep's own
    width = max(1, -(-jobset.slots() // max(1, folds)))  # trials at once
    ended: queue.Queue = queue.Queue()  # (trial, value or the exception it raised)

    def body(trial, values) -> None:
        with get_heartbeat_thread(trial._trial_id, study._storage):  # a crash is retried
            try:
                outcome = objective(trial, values, jobset.feed)
            except BaseException as error:  # noqa: BLE001 - told to the study by the caller
                outcome = error
        ended.put((trial, outcome))

    server = jobset.serve_in_thread()
    started = time.monotonic()
    running = 0
    failure: BaseException | None = None
    try:
        while True:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)  # trials of a crashed process: retried
            held = len(study.get_trials(deepcopy=False, states=counted))
            late = bool(timeout) and time.monotonic() - started > timeout
            while failure is None and not late and running < width and held + running < trials:
                with warnings.catch_warnings():  # body() runs the heartbeat optimize would
                    warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
                    trial = study.ask()
                values = propose(trial)
                threading.Thread(target=body, args=(trial, values), daemon=True).start()
                running += 1
            if not running:
                break
            while True:  # in steps, so that Ctrl-C reaches this thread at once
                with contextlib.suppress(queue.Empty):
                    trial, outcome = ended.get(timeout=1)
                    break
            running -= 1
            if isinstance(outcome, optuna.TrialPruned):
                study.tell(trial, state=TrialState.PRUNED)
            elif isinstance(outcome, BaseException):
                study.tell(trial, state=TrialState.FAIL)
                failure = failure or outcome  # as study.optimize: the sweep stops with it
            else:
                study.tell(trial, outcome)
    except KeyboardInterrupt:
        jobset.stop(KitError("interrupted"))
        raise
    finally:
        jobset.source.seal()
        server.join(timeout=60)
    if failure is not None:
        raise jobset.error or failure  # the scheduler's own error, if it stopped the trials


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
