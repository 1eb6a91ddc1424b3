"""Hostile conditions that need real processes and real mounts: concurrent submits and trainings,
SIGKILL at random moments, Ctrl-C, a read-only folder and a full disk. Each ends in a clear line
(or a clean win for exactly one process), and a normal run afterwards finds nothing half-written:
no temp files, every table parses, both databases pass `PRAGMA integrity_check`.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from hostile_support import (
    assert_one_line,
    copy_prepared,
    kit_env,
    kit_executable,
    prepare,
    run_kit,
    temp_files,
    try_mount,
    umount,
    with_sets,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepare(tmp_path_factory.mktemp("hostile-slow"))


@pytest.fixture
def comp(prepared, tmp_path, kit_home) -> Path:
    return copy_prepared(prepared, tmp_path, kit_home)


def start_kit(*args) -> subprocess.Popen:
    return subprocess.Popen(
        [*kit_executable(), *[str(a) for a in args]], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=kit_env(),
    )  # fmt: skip


def integrity(path: Path) -> str:
    with sqlite3.connect(path) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


def assert_nothing_half_written(comp: Path, kit_home: Path) -> None:
    assert temp_files(comp) == []
    for table in comp.rglob("*.csv"):
        if "data" not in table.relative_to(comp).parts:
            pd.read_csv(table)  # whole, or it would not parse
    for path in comp.rglob("*.json"):
        json.loads(path.read_text())
    for database in [comp / "runs" / "ledger.sqlite", kit_home / "leaderboard.sqlite"]:
        if database.exists():
            assert integrity(database) == "ok"


# --------------------------------------------------------------------- 3. the limit holds
def test_twenty_concurrent_submits_with_a_limit_of_five_accept_exactly_five(comp, kit_home):
    path = comp / "submissions" / "r1.csv"
    processes = [start_kit(*with_sets(["submit", path, "-m", f"s{i}"], comp)) for i in range(20)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in processes]
    accepted = [code for code, _ in results if code == 0]
    refused = [err for code, err in results if code == 2]
    assert len(accepted) == 5, results
    assert len(refused) == 15 and all("daily limit" in err for err in refused), results
    with sqlite3.connect(kit_home / "leaderboard.sqlite") as db:
        assert db.execute("select count(*) from submissions").fetchone() == (5,)
    history = (comp / "submissions" / "history.jsonl").read_text().splitlines()
    assert len(history) == 5  # what was counted is what was recorded, and nothing else


# ------------------------------------------------------------------------ 7. one run wins
def test_two_trainings_of_one_name_at_once_exactly_one_wins(comp):
    command = with_sets(["train", "--name", "same", "--quiet", "--folds", "0"], comp)
    first, second = start_kit(*command), start_kit(*command)
    codes = sorted([first.wait(timeout=600), second.wait(timeout=600)])
    errors = first.stderr.read() + second.stderr.read()
    assert codes == [0, 2], errors
    assert "being trained by another process" in errors or "exists" in errors
    assert (comp / "runs" / "same" / "fold0" / "result.json").exists()


# ---------------------------------------------------------------------------- 8. Ctrl-C
def test_ctrl_c_during_training_prints_the_resume_command(comp):
    long = "--set=train.epochs=200"  # after SETS' train.epochs=1: the last value wins
    process = start_kit(*with_sets(["train", "--name", "cut", "--quiet"], comp), long)
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if list((comp / "runs" / "cut").glob("fold0/last.pt")):
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    code = process.wait(timeout=120)
    lines = [line for line in process.stderr.read().splitlines() if line.strip()]
    assert code == 130, lines
    assert len(lines) == 1 and "--resume cut" in lines[0], lines
    from kit.competition import Competition
    from kit.ledger import list_runs

    table = list_runs(Competition.load(comp)).set_index("run")
    assert table.loc["cut", "state"] == "interrupted"


# --------------------------------------------------------------- SIGKILL, then a normal run
KILLED = {
    "ensemble": (["ensemble", "r1", "--name", "k"], 0.5, 6.0),
    "pseudo": (["pseudo", "r1", "--name", "k", "--threshold", "0.1"], 0.5, 6.0),
    "train": (["train", "--name", "k", "--quiet"], 1.0, 12.0),
    "submit": (["submit", "SUBMISSION", "-m", "k"], 0.5, 5.0),
}


@pytest.mark.parametrize("stage", sorted(KILLED))
def test_sigkill_at_a_random_moment_then_a_normal_run(comp, kit_home, stage):
    command, low, high = KILLED[stage]
    command = [str(comp / "submissions" / "r1.csv") if c == "SUBMISSION" else c for c in command]
    moment = random.Random(f"{stage}-{time.time_ns()}").uniform(low, high)
    process = start_kit(*with_sets(command, comp))
    try:
        process.wait(timeout=moment)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=60)
    time.sleep(1.1)  # older than kit.fileio.STALE_SECONDS: a dead writer's temp file
    if stage == "train" and (comp / "runs" / "k" / "fold0").exists():
        again = run_kit(*with_sets(["train", "--resume", "k", "--quiet"], comp), timeout=600)
    else:
        again = run_kit(*with_sets(command, comp), timeout=600)
    assert again.returncode == 0 or "daily limit" in again.stderr, again.stderr
    assert_nothing_half_written(comp, kit_home)


# ------------------------------------------------------------ 5. read-only folder, full disk
def test_submit_on_a_read_only_folder_counts_nothing(comp, kit_home):
    why = try_mount("--bind", str(comp), str(comp))
    if why:
        pytest.skip(f"cannot bind-mount here: {why}")
    try:
        why = try_mount("-o", "remount,bind,ro", str(comp))
        if why:
            pytest.skip(f"cannot remount read-only here: {why}")
        result = run_kit(*with_sets(["submit", comp / "submissions" / "r1.csv", "-m", "ro"],
                                    comp))  # fmt: skip
        assert_one_line(result, "not counted")
    finally:
        umount(comp)
    with sqlite3.connect(kit_home / "leaderboard.sqlite") as db:
        assert db.execute("select count(*) from submissions").fetchone() == (0,)


def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(comp, tmp_path, kit_home):
    import shutil

    small = tmp_path / "small"
    small.mkdir()
    blocks = sum(-(-p.stat().st_size // 4096) for p in comp.rglob("*") if p.is_file())
    size_kb = blocks * 4 + 4 * len(list(comp.rglob("*"))) + 2048  # files, folders, a margin
    why = try_mount("-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(small))
    if why:
        pytest.skip(f"cannot mount a tmpfs here: {why}")
    try:
        full = small / "digits"
        shutil.copytree(comp, full)
        with contextlib.suppress(OSError), open(small / "filler", "wb") as handle:
            handle.write(b"\0" * (1 << 30))  # fills the rest of the tmpfs
        result = run_kit(*with_sets(["ensemble", "r1", "--name", "full"], full))
        assert_one_line(result, "no space left")
        assert temp_files(full) == []
        assert not (full / "submissions" / "full.csv").exists()
    finally:
        umount(small)
