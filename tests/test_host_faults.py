"""kill -9 of the server in the middle of concurrent submissions, then a restart: every
acknowledged submission is there exactly once, retries with the same Idempotency-Key are not
counted twice, and the SQLite database passes integrity_check."""

from __future__ import annotations

import concurrent.futures as futures
import http.client
import threading
import urllib.error

import pytest
from host_server import Server, hosted_digits, prediction, upload

from kit.host import admin
from kit.host.store import Store

TEAMS = 20
PER_TEAM = 3
CLIENTS = 5
KILL_AFTER = 12  # acknowledged submissions before the kill -9


@pytest.mark.slow
def test_kill_9_mid_load_loses_and_doubles_nothing(tmp_path, kit_home):
    made = hosted_digits(tmp_path, limit=200, daily_limit=PER_TEAM)
    hostdir = made["hostdir"]
    tokens = [admin.add_team(hostdir, f"team-{i:02d}") for i in range(TEAMS)]
    data = prediction(hostdir / "public" / "sample_submission.csv", "7")
    jobs = [(token, f"{i}-{n}") for i, token in enumerate(tokens) for n in range(PER_TEAM)]
    server = Server(hostdir, {"KIT_HOME": str(kit_home)})
    acknowledged: dict[str, int] = {}
    lock = threading.Lock()

    def send(job, url):
        token, key = job
        try:
            status, body = upload(url, token, data, key=key, timeout=20)
        # cut off by the kill (before the answer, or between its headers and its body): the
        # client retries after the restart
        except (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException):
            return
        if status == 201:
            with lock:
                acknowledged[key] = body["id"]
                if len(acknowledged) == KILL_AFTER:
                    server.kill()

    try:
        with futures.ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(lambda job: send(job, server.url), jobs))
    finally:
        server.kill()
    assert KILL_AFTER <= len(acknowledged) < len(jobs)  # the kill landed mid-load

    store = Store.open(hostdir)
    try:
        assert store.integrity_check() == "ok"
    finally:
        store.close()
    restarted = Server(hostdir, {"KIT_HOME": str(kit_home)})
    try:
        replies = {}
        with futures.ThreadPoolExecutor(CLIENTS) as pool:  # every job retried, acknowledged too
            answers = pool.map(lambda job: upload(restarted.url, job[0], data, key=job[1]), jobs)
            for (_, key), (status, body) in zip(jobs, answers, strict=True):
                # the daily limit is PER_TEAM: a double charge anywhere would answer 429 here
                assert status == 201, body
                replies[key] = body
    finally:
        restarted.stop()
    for key, submission_id in acknowledged.items():
        assert replies[key]["id"] == submission_id and replies[key]["replayed"]
    store = Store.open(hostdir)
    try:
        rows = store.all_submissions()
        assert store.integrity_check() == "ok"
    finally:
        store.close()
    keys = [row["idempotency_key"] for row in rows]
    assert sorted(keys) == sorted(key for _, key in jobs)  # each exactly once
    assert {replies[key]["id"] for key in keys} == {row["id"] for row in rows}
