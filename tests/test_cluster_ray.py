"""`kit train --cluster` on a real two-node Ray cluster on this machine: a head and a second node,
each its own `ray start` process tree with one CPU. Folds train as Ray tasks on both nodes and
give the sequential run's OOF; a worker killed with SIGKILL mid-fold is retried by Ray and
resumes from last.pt; a GPU the cluster lacks and a folder it cannot see fail in one line.

Ray 2.60 replaces a 127.0.0.1 --node-ip-address by the host's own address
(ray._private.services.resolve_ip_for_localhost), so the nodes talk over this host's interface;
nothing leaves the machine, and the driver connects through 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import TINY

pytest.importorskip("ray")

from kit.cli import cli  # noqa: E402
from kit.cluster import RayRunner  # noqa: E402
from kit.competition import Competition  # noqa: E402
from kit.data.folds import make_folds  # noqa: E402
from kit.errors import KitError  # noqa: E402
from kit.train.cv import train_run  # noqa: E402

pytestmark = pytest.mark.slow

EXACT = [*TINY, "train.epochs=2", "train.checkpoint_every=1", "train.deterministic=true",
         "train.device=cpu", "train.threads=1"]  # fmt: skip
RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ray_processes(temp_dir: Path) -> list[str]:
    """Processes whose command line names this cluster's temp dir (its raylets, gcs, agents)."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, timeout=10)
    return [line for line in out.stdout.splitlines() if str(temp_dir) in line]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A head node and a second node, 1 CPU each, started as separate `ray start` processes."""
    temp = tmp_path_factory.mktemp("ray")  # short: Ray's unix socket paths must fit 107 chars
    # the same auth mode for the nodes and the drivers, whatever ~/.ray/auth_token holds
    patch = pytest.MonkeyPatch()
    patch.setenv("RAY_AUTH_MODE", "disabled")
    patch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "NO_ALBUMENTATIONS_UPDATE": "1",
           "OMP_NUM_THREADS": "1",
           # the client server's per-driver process may take longer than 30 s on a busy machine
           "RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S": "180"}  # fmt: skip
    gcs, client = free_port(), free_port()
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=0",
              "--disable-usage-stats", f"--dashboard-agent-listen-port={free_port()}"]  # fmt: skip
    head = [RAY, "start", "--head", f"--port={gcs}", f"--ray-client-server-port={client}",
            "--include-dashboard=false", f"--temp-dir={temp / 'h'}", *common]  # fmt: skip
    node = [RAY, "start", f"--address=127.0.0.1:{gcs}", f"--temp-dir={temp / 'n'}", *common]
    try:
        for command in (head, node):
            started = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
            assert started.returncode == 0, started.stderr[-2000:]
        yield {"client": f"ray://127.0.0.1:{client}", "gcs": f"127.0.0.1:{gcs}"}
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)
        deadline = time.time() + 30
        while ray_processes(temp) and time.time() < deadline:
            time.sleep(0.5)
        left = ray_processes(temp)
        shutil.rmtree(temp, ignore_errors=True)
        patch.undo()
        assert not left, f"Ray processes left running: {left}"


def read_oof(competition: Competition, run: str) -> pd.DataFrame:
    return pd.read_csv(competition.runs_dir / run / "oof.csv", dtype={"id": str}).set_index("id")


def test_folds_on_two_nodes_with_a_killed_worker_equal_a_sequential_run(ray_cluster, digits):
    competition = Competition.load(digits.root, EXACT)
    make_folds(competition)
    killed, lines = [], []

    def kill_once(line: str) -> None:  # the run-level view names each fold's node and pid
        lines.append(line)
        if not killed and "(fold 1)" in line and "started" in line:
            pid = int(line.split(" pid ")[1].split()[0])
            last = competition.runs_dir / "wide" / "fold1" / "last.pt"
            deadline = time.time() + 120
            while not last.exists() and time.time() < deadline:
                time.sleep(0.01)
            os.kill(pid, signal.SIGKILL)  # the Ray worker process training fold 1
            killed.append(pid)

    with RayRunner(competition.config, ray_cluster["client"], echo=kill_once) as runner:
        assert runner.device == "cpu"
        wide = train_run(competition, "wide", folds=[0, 1], progress=False, runner=runner)
    assert killed, "\n".join(lines)
    log = [json.loads(x) for x in (competition.runs_dir / "wide" / "log.jsonl").open()]
    starts = [e for e in log if e["event"] == "fold_start"]
    first = {e["fold"]: e["where"] for e in starts if not e["resumed"]}
    assert first.keys() == {0, 1} and len(set(first.values())) == 2  # one fold on each node
    again = [e for e in starts if e["fold"] == 1 and e["resumed"]]
    assert len(again) == 1 and again[0]["pid"] != killed[0]
    assert any("resumed from last.pt" in line for line in lines)
    assert any("ETA" in line and "epoch 2/2" in line for line in lines)

    sequential = train_run(competition, "seq", folds=[0, 1], progress=False)
    cluster, local = read_oof(competition, "wide"), read_oof(competition, "seq")
    assert cluster.index.tolist() == local.index.tolist()
    np.testing.assert_allclose(cluster.to_numpy(), local.to_numpy(), rtol=0, atol=1e-6)
    assert wide["cv"] == pytest.approx(sequential["cv"], abs=1e-9)
    assert wide["best_epochs"] == sequential["best_epochs"]
    assert wide["threads"] == sequential["threads"] == [1, 1]


def test_a_gpu_the_cluster_lacks_and_an_unshared_folder_fail_in_one_line(ray_cluster, tiny):
    make_folds(tiny)
    args = ["train", "-C", str(tiny.root), *[f"--set={o}" for o in TINY]]
    started = time.time()
    out = CliRunner().invoke(cli, [*args, "--name", "g", "--set=train.device=cuda",
                                   "--cluster", ray_cluster["gcs"]])  # fmt: skip
    assert out.exit_code == 2, out.output
    assert "asks each fold for a GPU but the Ray cluster (2 node(s), 2 CPUs) has none" in out.output
    assert len(out.output.strip().splitlines()) == 1 and "Traceback" not in out.output
    assert time.time() - started < 120 and not (tiny.runs_dir / "g").exists()

    tiny.runs_dir.mkdir(exist_ok=True)
    nowhere = tiny.root / "elsewhere" / "runs" / "r"  # a folder the workers cannot find
    with RayRunner(tiny.config, ray_cluster["gcs"]) as runner:
        with pytest.raises(KitError, match=r"not shared with node .*does not exist there"):
            runner.check_shared(nowhere)
        assert len(runner.check_shared(tiny.runs_dir)) == 2  # both nodes see the real folder

    out = CliRunner().invoke(cli, [*args, "--cluster", "127.0.0.1:1"])
    assert out.exit_code == 2 and "nothing answers at 127.0.0.1:1" in out.output


def test_a_driver_killed_mid_fold_resumes_on_the_cluster(ray_cluster, digits):
    competition = Competition.load(digits.root, EXACT)
    make_folds(competition)
    command = [sys.executable, "-m", "kit", "train", "-C", str(digits.root), "--name", "cut",
               "--folds", "0", "--quiet", "--cluster", ray_cluster["gcs"],
               *[f"--set={o}" for o in EXACT]]  # fmt: skip
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    last = competition.runs_dir / "cut" / "fold0" / "last.pt"
    deadline = time.time() + 240
    while not last.exists() and driver.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    assert driver.returncode == -signal.SIGKILL, driver.stderr.read().decode()[-2000:]
    assert not (competition.runs_dir / "cut" / "metrics.json").exists()

    with RayRunner(competition.config, ray_cluster["gcs"]) as runner:
        resumed = train_run(competition, "cut", folds=[0], resume=True, progress=False,
                            runner=runner)  # fmt: skip
    log = [json.loads(x) for x in (competition.runs_dir / "cut" / "log.jsonl").open()]
    kinds = [e["event"] for e in log]
    assert "resume" in kinds and kinds.count("fold") == 1
    after = log[kinds.index("resume") :]
    assert [e["resumed"] for e in after if e["event"] == "fold_start"] == [True]  # from last.pt
    reference = train_run(competition, "whole", folds=[0], progress=False)
    cut, whole = read_oof(competition, "cut"), read_oof(competition, "whole")
    np.testing.assert_allclose(cut.to_numpy(), whole.to_numpy(), rtol=0, atol=1e-6)
    assert resumed["cv"] == pytest.approx(reference["cv"], abs=1e-9)


def test_a_job_set_and_sweep_trials_share_the_cluster_with_warm_workers(ray_cluster, digits):
    """`kit train --name a,b --cluster`: four folds of two runs on both nodes' warm workers,
    each run complete with the children's epoch scalars; then two sweep trials on it."""
    from kit.workbench.sweep import run_sweep
    from kit.workbench.track import read_scalars

    competition = Competition.load(digits.root, EXACT)
    make_folds(competition)
    args = ["train", "-C", str(digits.root), *[f"--set={o}" for o in EXACT], "--folds", "0,1"]
    out = CliRunner().invoke(cli, [*args, "--name", "a,b", "--cluster", ray_cluster["gcs"]])
    assert out.exit_code == 0, out.output
    assert "2 run(s) (a, b): 4 fold(s) as Ray tasks (1 CPU each) on 2 node(s)" in out.output
    starts = [
        json.loads(line)
        for run in ("a", "b")
        for line in (competition.runs_dir / run / "log.jsonl").open()
        if '"fold_start"' in line
    ]
    assert len(starts) == 4 and len({s["where"] for s in starts}) == 2  # both nodes
    assert len({s["pid"] for s in starts}) == 2  # one warm worker per node took every fold
    for run in ("a", "b"):
        assert json.loads((competition.runs_dir / run / "metrics.json").read_text())[
            "fold_ids"
        ] == [0, 1]
        scalars = read_scalars(competition.runs_dir / run)
        assert [step for step, _ in scalars["fold1/val_loss"]] == [1, 2]  # from the workers

    space = 'sweep.params={ "train.lr" = { low = 1e-3, high = 1e-2, log = true } }'
    sweepable = Competition.load(digits.root, [*EXACT, space])
    summary = run_sweep(sweepable, "wide", trials=2, folds=1, progress=False,
                        cluster=ray_cluster["gcs"])  # fmt: skip
    assert summary["counts"]["complete"] == 2
    assert not list(competition.runs_dir.glob("**/.cluster-check/*"))  # markers cleaned up
