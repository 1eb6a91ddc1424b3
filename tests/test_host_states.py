"""No private score reaches a participant before the reveal: every participant page and API
answer is crawled in each state (open, frozen, revealed). Then the host's freeze, reveal,
rescore and export, and a baseline's marked row."""

from __future__ import annotations

import json
import re

import httpx
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from host_server import Server, hosted_digits, upload

from kit.cli import cli
from kit.host import admin
from kit.host.store import Store

PAGES = ["/", "/data", "/rules", "/leaderboard", "/leaderboard?view=private", "/submit",
         "/submissions", "/login", "/api/competition", "/api/leaderboard"]  # fmt: skip
API = ["/api/me", "/api/submissions", "/api/leaderboard", "/api/files", "/api/competition"]


def designed(key: pd.DataFrame, sample: pd.DataFrame, public_right: int, private_wrong: int):
    """Labels right on `public_right` public rows and wrong on `private_wrong` private rows, so
    the private score is a value no public number on the page can equal."""
    truth = key.set_index("id").loc[sample["id"]]
    labels = truth["target"].astype(int).to_numpy().copy()
    wrong = (labels + 1) % 10
    public = np.flatnonzero(truth["usage"].to_numpy() == "Public")
    private = np.flatnonzero(truth["usage"].to_numpy() == "Private")
    labels[public[public_right:]] = wrong[public[public_right:]]
    labels[private[:private_wrong]] = wrong[private[:private_wrong]]
    out = sample.copy()
    out["label"] = labels
    return out.to_csv(index=False).encode()


def crawl(url: str, token: str | None) -> list[tuple[str, str]]:
    """(path, body) of every participant page and API answer, logged in with token if given."""
    bodies = []
    with httpx.Client(base_url=url) as client:
        if token:
            page = client.get("/login")
            csrf = re.search(r'name=csrf value="([^"]+)"', page.text).group(1)
            assert client.post("/login", data={"token": token, "csrf": csrf}).status_code == 303
        for path in PAGES:
            response = client.get(path, follow_redirects=True)  # anonymous: to /login
            assert response.status_code == 200, path
            bodies.append((path, response.text))
        if token:
            headers = {"Authorization": f"Bearer {token}"}
            for path in API:
                response = client.get(path, headers=headers)
                assert response.status_code == 200, path
                bodies.append((path, response.text))
    return bodies


def leaks(bodies, privates: list[float]) -> list[str]:
    found = []
    for path, body in bodies:
        for value in privates:
            if f"{value:.5f}" in body or json.dumps(value) in body:
                found.append(f"{path} shows {value}")
        if path.startswith("/api/") and "private" in body.lower():
            found.append(f"{path} has a private field")
        if not path.startswith("/api/") and re.search(r"<th[^>]*>Private", body):
            found.append(f"{path} has a Private column")
    return found


@pytest.mark.slow
def test_private_scores_stay_hidden_until_reveal(tmp_path, kit_home):
    made = hosted_digits(tmp_path, limit=300)
    hostdir = made["hostdir"]
    store = Store.open(hostdir)
    key = pd.DataFrame(store.read_answers(), columns=["id", "target", "usage"])
    store.close()
    sample = pd.read_csv(hostdir / "public" / "sample_submission.csv", dtype=str)
    alice, bob = admin.add_team(hostdir, "alice"), admin.add_team(hostdir, "bob")
    admin.add_baseline(hostdir, hostdir / "public" / "sample_submission.csv", name="zeros")
    server = Server(hostdir, {"KIT_HOME": str(kit_home)})
    try:
        url = server.url
        uploads = [(alice, designed(key, sample, 3, 0)), (alice, designed(key, sample, 6, 1)),
                   (bob, designed(key, sample, 5, 2))]  # fmt: skip
        ids = []
        for token, data in uploads:
            status, body = upload(url, token, data)
            assert status == 201, body
            ids.append(body["id"])
        privates = [row["private_score"] for row in Store.open(hostdir).all_submissions()
                    if row["role"] == "team"]  # fmt: skip
        assert len(privates) == 3 and min(privates) > 0.9
        for state in ("open", "frozen"):
            if state == "frozen":  # the host freezes from the host page's form
                with httpx.Client(base_url=url) as host:
                    page = host.get("/login")
                    csrf = re.search(r'name=csrf value="([^"]+)"', page.text).group(1)
                    host.post("/login", data={"token": made["host_token"], "csrf": csrf})
                    sent = host.post("/host/state", data={"state": "frozen", "csrf": csrf})
                    assert sent.status_code == 303
                assert upload(url, bob, uploads[2][1])[0] == 403
            for token in (alice, bob, None):
                bodies = crawl(url, token)
                assert not leaks(bodies, privates), leaks(bodies, privates)
                assert any(f"id=state>{state}<" in body for _, body in bodies)

        # the team's chosen final decides its private rank: alice picks her worse public one
        finals = json.dumps({"ids": [ids[0]]}).encode()
        response = httpx.post(url + "/api/finals", content=finals,
                              headers={"Authorization": f"Bearer {alice}"})  # fmt: skip
        assert response.status_code == 200
        runner = CliRunner()
        assert runner.invoke(cli, ["host", "reveal", str(hostdir)]).exit_code == 0
        board = httpx.get(url + "/api/leaderboard").json()
        assert board["state"] == "revealed"
        rows = {row["team"]: row for row in board["rows"]}
        assert rows["alice"]["private_score"] == pytest.approx(1.0)  # ids[0]: no private error
        assert rows["alice"]["private_rank"] == 1 and rows["bob"]["private_rank"] == 2
        assert rows["alice"]["rank"] == 1 and rows["alice"]["rank_change"] == 0
        assert rows["zeros"]["baseline"] and rows["zeros"]["rank"] is None
        page = httpx.get(url + "/leaderboard").text
        assert "(host baseline)" in page and "id=noise" in page and "Private" in page
        assert (
            "private_score"
            in httpx.get(url + "/api/submissions", headers={"Authorization": f"Bearer {bob}"}).text
        )

        out = tmp_path / "standings.csv"
        assert (
            runner.invoke(cli, ["host", "export", str(hostdir), "--out", str(out)]).exit_code == 0
        )
        standings = pd.read_csv(out)
        assert list(standings["team"][:2]) == ["alice", "bob"]
        assert standings.loc[standings["team"] == "alice", "submission_id"].item() == ids[0]

        # the host fixes the key (every label moves): rescore changes every stored score
        fixed = key.copy()
        fixed["target"] = ((fixed["target"].astype(int) + 1) % 10).astype(str)
        solution = tmp_path / "fixed.csv"
        fixed.rename(columns={"target": "label", "usage": "Usage"}).to_csv(solution, index=False)
        short = tmp_path / "short.csv"
        fixed.iloc[1:].rename(columns={"target": "label", "usage": "Usage"}).to_csv(
            short, index=False
        )
        result = runner.invoke(cli, ["host", "rescore", str(hostdir), "--solution", str(short)])
        assert result.exit_code == 2 and "1 id(s) differ" in result.output  # nothing changed
        result = runner.invoke(cli, ["host", "rescore", str(hostdir), "--solution", str(solution)])
        assert result.exit_code == 0 and "4 submission(s) rescored" in result.output
        after = {r["team"]: r for r in httpx.get(url + "/api/leaderboard").json()["rows"]}
        assert after["alice"]["private_score"] < 0.2 and after["zeros"]["public_score"] != rows[
            "zeros"]["public_score"]  # fmt: skip
    finally:
        server.stop()
