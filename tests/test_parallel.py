"""`kit train --parallel`: folds in child processes give the sequential run's artefacts (at the
same train.threads), record their thread count, survive a child killed with SIGKILL, and
refuse what cannot work in one line."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY
from run_support import ledger_row, parent_of, read_oof, running_pids

from kit.cli import cli
from kit.cluster import ClusterProgress, LocalRunner, parse_parallel, plan_slots
from kit.competition import Competition
from kit.data.folds import make_folds
from kit.errors import KitError
from kit.train.cv import train_run

# exact on CPU: deterministic kernels, one torch thread per fold, a checkpoint every step
EXACT = [*TINY, "train.epochs=2", "train.checkpoint_every=1", "train.deterministic=true",
         "train.device=cpu", "train.threads=1"]  # fmt: skip


def test_plan_slots_split_cores_and_gpus():
    cpu = plan_slots("auto", "cpu", 0, folds=5, cores=[0, 1, 2, 3], gpus=[])
    assert [s.cores for s in cpu] == [(0,), (1,), (2,), (3,)] and not any(s.gpu for s in cpu)
    two = plan_slots(2, "cpu", 0, folds=5, cores=[0, 1, 2, 3], gpus=[])
    assert [s.cores for s in two] == [(0, 1), (2, 3)]
    threads = plan_slots("auto", "cpu", 2, folds=5, cores=[0, 1, 2, 3], gpus=[])
    assert len(threads) == 2  # train.threads = 2 on 4 cores: two folds at once
    few = plan_slots(8, "cpu", 0, folds=3, cores=[0, 1], gpus=[])
    assert len(few) == 3 and all(s.cores == () for s in few)  # more slots than cores: no pinning
    gpus = plan_slots("auto", "cuda", 0, folds=5, cores=[0, 1, 2, 3], gpus=["3", "5"])
    assert [s.gpu for s in gpus] == ["3", "5"] and [s.cores for s in gpus] == [(0, 1), (2, 3)]
    assert len(plan_slots("auto", "cuda", 0, folds=1, cores=[0, 1], gpus=["0", "1"])) == 1
    assert parse_parallel("auto") == 0 and parse_parallel("3") == 3
    for bad in ("0", "-1", "two"):
        with pytest.raises(KitError, match="--parallel"):
            parse_parallel(bad)


def test_progress_reads_whole_lines_only(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text("")
    echoed = []
    view = ClusterProgress(tmp_path, [0, 1], 2, "accuracy", 2, echoed.append)
    start = {"event": "fold_start", "fold": 1, "where": "node-a", "pid": 7, "device": "cpu"}
    epoch = {"event": "epoch", "fold": 1, "epoch": 1, "accuracy": 0.5, "seconds": 4.0}
    with open(log, "a") as handle:
        handle.write(json.dumps(start) + "\n" + json.dumps(epoch)[:20])  # half a line
    assert len(view.poll()) == 1 and "fold 2/2 (fold 1) on node-a pid 7" in echoed[0]
    with open(log, "a") as handle:
        handle.write(json.dumps(epoch)[20:] + "\n")
    (line,) = view.poll()
    assert "epoch 1/2 accuracy 0.5000" in line and "ETA 6s" in line  # 3 epochs left, 2 at once


@pytest.mark.slow
def test_parallel_run_with_a_killed_child_equals_a_sequential_run(digits):
    """3 folds on 2 slots; one child is SIGKILLed mid-fold, restarted, and resumes from last.pt."""
    competition = Competition.load(digits.root, EXACT)
    make_folds(competition)
    killed = []

    def kill_once(line: str) -> None:  # the progress view names each child's pid
        if not killed and "(fold 0)" in line and "started" in line:
            pid = int(line.split(" pid ")[1].split()[0])
            last = competition.runs_dir / "par" / "fold0" / "last.pt"
            deadline = time.time() + 120
            while not last.exists() and time.time() < deadline:
                time.sleep(0.01)  # a checkpoint exists: the restart has something to resume
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    with LocalRunner(competition.config, 2, echo=kill_once) as runner:
        parallel = train_run(competition, "par", progress=False, runner=runner)
    assert killed, "no child was killed"
    log = [json.loads(x) for x in (competition.runs_dir / "par" / "log.jsonl").open()]
    starts = [e for e in log if e["event"] == "fold_start" and e["fold"] == 0]
    assert len(starts) == 2 and starts[1]["resumed"] and starts[1]["attempt"] == 2

    sequential = train_run(competition, "seq", progress=False)
    par, seq = read_oof(competition, "par"), read_oof(competition, "seq")
    assert par.index.tolist() == seq.index.tolist()
    np.testing.assert_allclose(par.to_numpy(), seq.to_numpy(), rtol=0, atol=1e-6)
    assert parallel["cv"] == pytest.approx(sequential["cv"], abs=1e-9)
    for key in ("folds", "fold_ids", "best_epochs", "per_class", "complete", "metric"):
        assert parallel[key] == sequential[key], key
    assert parallel["threads"] == sequential["threads"] == [1, 1, 1]
    par_row, seq_row = ledger_row(competition, "par"), ledger_row(competition, "seq")
    for key in ("cv", "cv_std", "folds", "epochs", "best_epochs", "complete", "folds_hash"):
        assert par_row[key] == seq_row[key], key


@pytest.mark.slow
def test_cli_parallel_trains_and_refuses_nonsense(tiny):
    make_folds(tiny)
    runner = CliRunner()
    args = ["train", "-C", str(tiny.root), *[f"--set={o}" for o in TINY]]
    out = runner.invoke(cli, [*args, "--parallel", "2", "--nproc", "2"])
    assert out.exit_code == 2 and "choose one" in out.output
    out = runner.invoke(cli, [*args, "--parallel", "many"])
    assert out.exit_code == 2 and "--parallel 'many'" in out.output
    assert not (tiny.runs_dir / "p").exists()
    out = runner.invoke(cli, [*args, "--name", "p", "--folds", "0,1", "--parallel", "auto"])
    assert out.exit_code == 0, out.output
    assert "2 fold(s) on 2 slot(s)" in out.output and "done, accuracy" in out.output
    metrics = json.loads((tiny.runs_dir / "p" / "metrics.json").read_text())
    share = max(1, len(os.sched_getaffinity(0)) // 2)  # the cores, split over 2 slots
    assert metrics["fold_ids"] == [0, 1] and metrics["threads"] == [share, share]
    from kit.workbench.track import read_scalars  # the children's epochs reach the tracker

    scalars = read_scalars(tiny.runs_dir / "p")
    assert (
        [step for step, _ in scalars["fold0/loss"]]
        == [step for step, _ in scalars["fold1/lr"]]
        == [1]
    )


@pytest.mark.slow
def test_ctrl_c_stops_every_process_and_the_run_resumes(tiny):
    """Ctrl-C (SIGINT to the terminal's process group) of `kit train --parallel 2`: one error
    line, exit 130, no child and no warm server left; `--resume` then finishes the run."""
    make_folds(tiny)
    sets = [f"--set={o}" for o in [*EXACT, "train.epochs=8"]]
    command = [sys.executable, "-m", "kit", "train", "-C", str(tiny.root), *sets]
    driver = subprocess.Popen(
        [*command, "--name", "cc", "--parallel", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's job
    )
    log = tiny.runs_dir / "cc" / "log.jsonl"
    try:
        deadline = time.monotonic() + 180
        pids: set[int] = set()
        while len(pids) < 2 and time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.2)
            lines = log.read_text().splitlines() if log.exists() else []
            pids = {json.loads(line)["pid"] for line in lines if '"fold_start"' in line}
        assert len(pids) == 2, "the two children never started a fold"
        servers = [pid for pid in running_pids() if parent_of(pid) == driver.pid]
        os.killpg(driver.pid, signal.SIGINT)
        _, stderr = driver.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 130, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and "interrupted" in last and "--resume cc" in last
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(pid in running_pids() for pid in {*pids, *servers}):
        time.sleep(0.2)
    assert not {*pids, *servers} & running_pids(), "a child or the warm server outlived Ctrl-C"
    done = subprocess.run(
        [*command, "--resume", "cc", "--parallel", "2"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tiny.runs_dir / "cc" / "metrics.json").read_text())
    assert metrics["fold_ids"] == [0, 1, 2] and ledger_row(tiny, "cc")["complete"]
