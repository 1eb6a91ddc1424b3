"""kit host on a real PostgreSQL server with two server processes behind one database."""

from __future__ import annotations

import concurrent.futures as futures
import json
import uuid

import pytest
from click.testing import CliRunner
from host_server import Server, hosted_digits, prediction, request, upload
from pg_server import PostgresServer, pg_bin

from kit.cli import cli
from kit.host import admin
from kit.host.store import Store

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(pg_bin() is None, reason="pg_ctl not found: apt-get install postgresql"),
]


@pytest.fixture(scope="module")
def postgres():
    server = PostgresServer()
    try:
        yield server
    finally:
        server.stop()


def test_host_on_postgresql_with_two_workers(postgres, tmp_path, kit_home):
    made = hosted_digits(tmp_path, limit=200, db=postgres.url, daily_limit=3)
    hostdir = made["hostdir"]
    assert not (hostdir / "host.sqlite").exists()  # everything went to PostgreSQL
    runner = CliRunner()
    result = runner.invoke(cli, ["host", "team", "add", str(hostdir), "pg-team"])
    assert result.exit_code == 0, result.output  # host.json remembered the URL
    token = result.output.strip()
    others = [admin.add_team(hostdir, f"pg-{i}") for i in range(3)]
    server = Server(hostdir, {"KIT_HOME": str(kit_home)}, workers=2)
    try:
        url, sample = server.url, hostdir / "public" / "sample_submission.csv"
        data = prediction(sample, "5")
        # the daily limit holds across two processes sharing one database: never one over
        jobs = [token for token in [token, *others] for _ in range(6)]
        with futures.ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda t: upload(url, t, data, key=str(uuid.uuid4()))[0], jobs))
        for team in [token, *others]:
            mine = [code for t, code in zip(jobs, codes, strict=True) if t == team]
            assert sorted(mine) == [201] * 3 + [429] * 3
        # both workers answer from the one database: the same rows whichever one serves
        status, _, raw = request(url + "/api/submissions", token=token)
        assert status == 200 and len(json.loads(raw)) == 3
        board = json.loads(request(url + "/api/leaderboard")[2])["rows"]
        assert {row["team"] for row in board} == {"pg-team", "pg-0", "pg-1", "pg-2"}
        assert runner.invoke(cli, ["host", "reveal", str(hostdir)]).exit_code == 0
        assert "private_score" in json.loads(request(url + "/api/leaderboard")[2])["rows"][0]
        assert upload(url, token, data)[0] == 403
    finally:
        server.stop()
    store = Store.open(hostdir)
    try:
        assert store.engine.dialect.name == "postgresql"
        assert len(store.all_submissions()) == 12
    finally:
        store.close()
