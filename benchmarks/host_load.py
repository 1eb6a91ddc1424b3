"""`kit host` under load on loopback: many teams submitting a 10k-row macro-F1 CSV at once.

    python benchmarks/host_load.py [--teams 200] [--per-team 5] [--clients 20] [--rows 10000]
                                   [--workers 1] [--db postgresql://...]

Builds a synthetic 10-class competition (10,000 test ids, metric f1_macro, a solution file with
a Public/Private split), hosts it with `kit host init --solution`, makes the teams, starts
`kit host serve` as a real uvicorn process on 127.0.0.1 and sends every team's submissions plus
one more each (which must be refused: the daily limit is per-team, exact, never one over) from
`--clients` concurrent HTTP clients. Every submission is checked as acknowledged, stored once and
scored. The last line is `p99_s=<99th percentile latency of the scored submissions, seconds>`;
the goal is <= 2 s on 2 cores.
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

CLASSES = 10


def build(folder: Path, rows: int) -> tuple[Path, Path]:
    """A kit competition folder (a few training images, `rows` test ids) and its solution CSV."""
    from PIL import Image

    from kit.scaffold import new_competition

    competition = new_competition("load", folder / "competitions")
    toml = competition.root / "kit.toml"
    toml.write_text(toml.read_text().replace('name = "accuracy"', 'name = "f1_macro"'))
    data = competition.root / "data"
    (data / "train").mkdir(parents=True)
    train = pd.DataFrame({"id": [f"tr{i}" for i in range(3 * CLASSES)],
                          "label": [i % CLASSES for i in range(3 * CLASSES)]})  # fmt: skip
    for image_id in train["id"]:
        Image.new("L", (8, 8)).save(data / "train" / f"{image_id}.png")
    train.to_csv(data / "train.csv", index=False)
    ids = [f"t{i:06d}" for i in range(rows)]
    pd.DataFrame({"id": ids, "label": 0}).to_csv(data / "sample_submission.csv", index=False)
    rng = np.random.default_rng(0)
    solution = pd.DataFrame({"id": ids, "label": rng.integers(0, CLASSES, rows),
                             "Usage": np.where(rng.random(rows) < 0.5, "Public", "Private")})  # fmt: skip
    solution.to_csv(folder / "solution.csv", index=False)
    return competition.root, folder / "solution.csv"


def submission(ids: list[str], truth: np.ndarray, rng) -> bytes:
    right = rng.random(len(ids)) < rng.uniform(0.3, 0.9)
    labels = np.where(right, truth, rng.integers(0, CLASSES, len(ids)))
    return pd.DataFrame({"id": ids, "label": labels}).to_csv(index=False).encode()


def post(url: str, token: str, data: bytes, key: str) -> tuple[int, dict, float]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="message"\r\n\r\nload\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="s.csv"\r\n'
            "Content-Type: text/csv\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key,
               "Content-Type": f"multipart/form-data; boundary={boundary}"}  # fmt: skip
    request = urllib.request.Request(url + "/api/submissions", body, headers, method="POST")
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            status, answer = response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        status, answer = error.code, json.loads(error.read() or b"{}")
    return status, answer, time.perf_counter() - start


def server_cpu_seconds(group: int) -> float:
    """User + system CPU seconds of every process in the server's process group (uvicorn and
    its workers), from /proc: the cost of the load whatever else shares the machine."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group:  # fields[2] is the process group id
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teams", type=int, default=200)
    parser.add_argument("--per-team", type=int, default=5)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--db", help="PostgreSQL URL (default: SQLite in the host folder)")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="kit-host-load-"))
    os.environ["KIT_HOME"] = str(folder / "kit-home")
    from kit.host import admin
    from kit.host.store import Store

    root, solution = build(folder, args.rows)
    hostdir = folder / "host"
    admin.init_host(hostdir, root, solution=solution, daily_limit=args.per_team, db=args.db)
    tokens = [admin.add_team(hostdir, f"team-{i:03d}", db=args.db) for i in range(args.teams)]
    ids = pd.read_csv(solution, dtype=str)["id"].tolist()
    truth = pd.read_csv(solution)["label"].to_numpy()
    rng = np.random.default_rng(1)
    files = [submission(ids, truth, rng) for _ in range(min(args.teams, 50))]
    print(f"{args.teams} teams x {args.per_team} (+1 over the limit) submissions of "
          f"{len(files[0]):,} bytes ({args.rows:,} rows), {args.clients} clients, "
          f"{args.workers} server process(es), {'PostgreSQL' if args.db else 'SQLite WAL'}")  # fmt: skip

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "kit", "host", "serve", str(hostdir), "--port", str(port),
               "--workers", str(args.workers)] + (["--db", args.db] if args.db else [])  # fmt: skip
    log = open(folder / "server.log", "wb")  # noqa: SIM115 (closed below)
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if server.poll() is not None:
                sys.exit(f"the server exited: {(folder / 'server.log').read_text()[-2000:]}")
            try:
                urllib.request.urlopen(url + "/api/competition", timeout=2).close()
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        jobs = [(token, n) for n in range(args.per_team + 1) for token in tokens]
        cpu_before = server_cpu_seconds(server.pid)
        started = time.perf_counter()
        with futures.ThreadPoolExecutor(args.clients) as pool:
            results = list(pool.map(
                lambda job: post(url, job[0], files[hash(job) % len(files)], str(uuid.uuid4())),
                jobs,
            ))  # fmt: skip
        wall = time.perf_counter() - started
        cpu = server_cpu_seconds(server.pid) - cpu_before
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        log.close()

    per_team: dict[str, list[int]] = {}
    for (token, _), (status, _, _) in zip(jobs, results, strict=True):
        per_team.setdefault(token, []).append(status)
    exact = all(sorted(c) == [201] * args.per_team + [429] for c in per_team.values())
    scored = [seconds for status, _, seconds in results if status == 201]
    store = Store.open(hostdir, args.db)
    try:
        rows = store.all_submissions()
        integrity = store.integrity_check()
    finally:
        store.close()
    shutil.rmtree(folder, ignore_errors=True)  # about 100 MB of uploads at the default size
    stored_ok = len(rows) == len(scored) == args.teams * args.per_team and all(
        r["public_score"] is not None and r["private_score"] is not None for r in rows
    )
    acknowledged = {answer["id"] for status, answer, _ in results if status == 201}
    print(f"acknowledged {len(scored)}, stored {len(rows)}, ids distinct "
          f"{len(acknowledged) == len(scored)}, all scored {stored_ok}, integrity {integrity}")  # fmt: skip
    print(f"daily limit exact for every team (never one over): {exact}")
    print(f"wall {wall:.1f} s, {len(results) / wall:.1f} requests/s; latency of scored "
          f"submissions p50 {np.percentile(scored, 50):.3f} s, max {max(scored):.3f} s")  # fmt: skip
    load = os.getloadavg()[0]
    print(f"server CPU {cpu:.1f} s = {1000 * cpu / len(results):.0f} ms per request "
          f"(load average {load:.1f} on {os.cpu_count()} cores while it ran)")  # fmt: skip
    if not (exact and stored_ok and len(acknowledged) == len(scored)):
        sys.exit("FAILED: see the lines above")
    print(f"p99_s={np.percentile(scored, 99):.3f}")


if __name__ == "__main__":
    main()
