"""A list of runs as one job set (`kit train --name a,b` / `--runs`): [[runs]] is checked at
load in one line, names are refused before any fold trains, every (run, fold) shares the
--parallel slots, each run equals the same run trained alone, and the tracker gets the epoch
scalars the children log."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY
from run_support import ledger_row, read_oof

from kit.cli import cli
from kit.cluster import LocalRunner
from kit.competition import Competition
from kit.data.folds import make_folds
from kit.errors import KitError
from kit.run import Run
from kit.train.cv import train_run
from kit.train.jobset import plan_runs, train_runs
from kit.workbench.track import read_scalars

# exact on CPU: deterministic kernels, one torch thread per fold
EXACT = [*TINY, "train.deterministic=true", "train.device=cpu", "train.threads=1"]
TABLE = """
[[runs]]
name = "base"

[[runs]]
name = "fast"
set = { "train.lr" = 0.003, model = { drop_rate = 0.1 } }
"""


def add_table(competition: Competition, text: str) -> None:
    path = competition.root / "kit.toml"
    path.write_text(path.read_text() + text)


@pytest.mark.parametrize(
    ("entries", "says"),
    [
        ('[runs]\nname = "a"', "must be [[runs]] tables"),
        ('[[runs]]\nset = { "train.lr" = 0.1 }', 'needs name = "RUN"'),
        ('[[runs]]\nname = "a/b"', "entry 1 in"),
        ('[[runs]]\nname = "a"\n[[runs]]\nname = "a"', "listed twice"),
        ('[[runs]]\nname = "a"\noverrides = {}', "unknown key 'overrides'"),
        ('[[runs]]\nname = "a"\nset = { "train.lrr" = 0.1 }', "[[runs]] 'a' set \"train.lrr\""),
        ('[[runs]]\nname = "a"\nset = { "train.lr" = "fast" }', "[[runs]] 'a' set \"train.lr\""),
        ('[[runs]]\nname = "a"\nset = { "folds.n_splits" = 3 }', "[folds] is shared"),
        ('[[runs]]\nname = "a"\nset = { "modle.name" = "x" }', "no section [modle]"),
    ],
)
def test_runs_table_is_checked_at_load_in_one_line(digits, entries, says):
    add_table(digits, "\n" + entries + "\n")
    with pytest.raises(KitError) as caught:
        Competition.load(digits.root)
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_template_example_and_names_are_checked_before_anything_is_written(digits):
    template = (digits.root / "kit.toml").read_text()
    example = template[template.index("# [[runs]]\n") :]
    add_table(digits, "\n" + "\n".join(line[2:] for line in example.splitlines()) + "\n")
    planned = plan_runs(Competition.load(digits.root), table=True)
    assert [p.name for p in planned] == ["r18", "r34"]
    assert planned[0].competition.config.train.lr == 0.001
    assert planned[1].competition.config.model.name == "resnet34"
    assert "runs" not in planned[0].competition.config.to_dict()  # a run's config has no list

    runner = CliRunner()
    args = ["train", "-C", str(digits.root), *[f"--set={o}" for o in TINY]]
    out = runner.invoke(cli, [*args, "--name", "ok,bad/name"])
    assert out.exit_code == 2 and "'bad/name' is not a plain name" in out.output
    out = runner.invoke(cli, [*args, "--name", "ok,ok"])
    assert out.exit_code == 2 and "listed twice" in out.output
    taken = Run(digits, "taken")
    taken.dir.mkdir(parents=True)
    (taken.dir / "config.toml").write_text("")
    (taken.dir / "log.jsonl").write_text('{"event": "epoch", "fold": 0}\n')
    out = runner.invoke(cli, [*args, "--name", "ok,taken", "--parallel", "2"])
    assert out.exit_code == 2 and "run 'taken' exists" in out.output
    out = runner.invoke(cli, [*args, "--runs", "--name", "x,y"])
    assert out.exit_code == 2 and "not both" in out.output
    assert sorted(p.name for p in digits.runs_dir.iterdir()) == ["taken"]  # nothing else

    # a name another process claims meanwhile: refused at its claim, before any fold starts
    make_folds(Competition.load(digits.root, TINY))
    busy = Run(digits, "busy").claim(new=True)
    try:
        with LocalRunner(digits.config, 2) as runner, pytest.raises(KitError, match="busy"):
            train_runs(Competition.load(digits.root, TINY), ["ok", "busy"], runner=runner)
    finally:
        busy.close()
    assert not Run(digits, "ok").dir.exists() and Run(digits, "busy").dir.is_dir()


@pytest.mark.slow
def test_job_set_on_two_slots_equals_each_run_trained_alone(digits):
    """[[runs]] base + fast on --parallel 2 (4 folds on 2 slots), against each run alone."""
    add_table(digits, TABLE)
    competition = Competition.load(digits.root, [*EXACT, "train.epochs=2"])
    make_folds(competition)
    planned = plan_runs(competition, table=True)
    lines: list[str] = []
    with LocalRunner(competition.config, 2, root=competition.root, echo=lines.append) as runner:
        together = train_runs(competition, table=True, folds=[0, 1], runner=runner, echo=print)
    assert [r.run for r in together] == ["base", "fast"]
    assert any("2 run(s) (base, fast): 4 fold(s) on 2 slot(s)" in line for line in lines)
    starts = [
        json.loads(x)
        for run in ("base", "fast")
        for x in (competition.runs_dir / run / "log.jsonl").open()
        if '"fold_start"' in x
    ]
    assert len({s["pid"] for s in starts}) == 2  # both slots' children trained folds of both

    for plan, result in zip(planned, together, strict=True):
        alone = train_run(plan.competition, f"{plan.name}-alone", folds=[0, 1], progress=False)
        set_oof, alone_oof = read_oof(competition, result.run), read_oof(competition, alone.run)
        assert set_oof.index.tolist() == alone_oof.index.tolist()
        np.testing.assert_allclose(set_oof.to_numpy(), alone_oof.to_numpy(), rtol=0, atol=1e-6)
        for key in ("cv", "folds", "fold_ids", "best_epochs", "per_class", "complete", "threads"):
            assert result[key] == pytest.approx(alone[key], abs=1e-6), key
        set_row, alone_row = ledger_row(competition, result.run), ledger_row(competition, alone.run)
        for key in ("model", "cv", "cv_std", "folds", "epochs", "best_epochs", "folds_hash"):
            assert set_row[key] == pytest.approx(alone_row[key], abs=1e-6), key
        # the tracker: the epoch scalars the children logged, as the lone run's own loop gave
        set_tb, alone_tb = read_scalars(Path(result.run_dir)), read_scalars(Path(alone.run_dir))
        assert sorted(set_tb) == sorted(alone_tb)
        assert {"fold0/loss", "fold1/val_loss", "fold1/accuracy", "fold0/lr"} <= set(set_tb)
        for tag, points in alone_tb.items():
            assert [s for s, _ in set_tb[tag]] == [s for s, _ in points], tag
            np.testing.assert_allclose([v for _, v in set_tb[tag]], [v for _, v in points],
                                       rtol=0, atol=1e-6, err_msg=tag)  # fmt: skip
    fast = Run(competition, "fast").config  # the entry's overrides are in its run's config
    assert fast.train.lr == 0.003 and fast.model.drop_rate == 0.1


@pytest.mark.slow
def test_sweep_trials_on_two_slots_match_the_sequential_sweep(digits):
    """Two trials of one fold each train at once on --parallel 2; the seeded sampler proposes
    the same values as a sequential sweep, and each trial scores the same."""
    from kit.workbench.sweep import run_sweep

    space = 'sweep.params={ "train.lr" = { low = 1e-3, high = 1e-2, log = true } }'
    competition = Competition.load(digits.root, [*EXACT, space])
    make_folds(competition)
    side = run_sweep(competition, "side", trials=2, folds=1, progress=False, parallel="2")
    alone = run_sweep(competition, "alone", trials=2, folds=1, progress=False)
    assert side["counts"]["complete"] == alone["counts"]["complete"] == 2
    for ours, theirs in zip(side["trials"], alone["trials"], strict=True):
        assert ours["params"] == theirs["params"]
        assert ours["value"] == pytest.approx(theirs["value"], abs=1e-6)
    pids = {
        json.loads(line)["pid"]
        for trial in side["trials"]
        for line in (competition.runs_dir / trial["run"] / "log.jsonl").open()
        if '"fold_start"' in line
    }
    assert len(pids) == 2  # the two trials' folds trained in the two slots' children


@pytest.mark.slow
def test_sweep_on_parallel_prunes_and_waits_for_the_pruned_trials_running_fold(digits):
    """`kit sweep --parallel 2`: a trial below two perfect ones is pruned at its first fold; its
    queued fold is dropped, its other running fold ends, then its folder goes."""
    import optuna
    from optuna.distributions import FloatDistribution

    make_folds(Competition.load(digits.root, TINY))
    folder = digits.runs_dir / "sweeps" / "p"
    folder.mkdir(parents=True)
    study = optuna.create_study(
        study_name="p", storage=f"sqlite:///{folder / 'study.db'}", direction="maximize"
    )
    for _ in range(2):  # two earlier trials that scored perfectly on every fold
        study.add_trial(
            optuna.trial.create_trial(
                params={"train.lr": 3e-3},
                distributions={"train.lr": FloatDistribution(1e-3, 1e-2, log=True)},
                value=1.0,
                intermediate_values={0: 1.0, 1: 1.0, 2: 1.0},
            )
        )
    space = 'sweep.params={ "train.lr" = { low = 1e-3, high = 1e-2, log = true } }'
    sets = [f"--set={s}" for s in [*EXACT, space]]
    out = CliRunner().invoke(
        cli, ["sweep", "-C", str(digits.root), *sets, "p", "--trials", "3", "--parallel", "2"]
    )
    assert out.exit_code == 0, out.output
    assert "on 2 slot(s)" in out.output
    third = json.loads((folder / "summary.json").read_text())["trials"][2]
    assert third["state"] == "pruned" and len(third["fold_scores"]) == 1
    assert not (digits.runs_dir / third["run"]).exists()  # removed after its folds ended
    assert "1 pruned" in out.output
