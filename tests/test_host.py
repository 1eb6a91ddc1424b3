"""kit host against a real uvicorn server on loopback: the API, the real CLI, pages, security."""

from __future__ import annotations

import concurrent.futures as futures
import io
import json
import os
import re
import stat
import uuid
import zipfile

import httpx
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from host_server import Server, hosted_digits, prediction, request, upload

from kit.cli import cli
from kit.host import admin, bootstrap
from kit.host.auth import hash_token
from kit.host.store import Store
from kit.metrics import get_metric
from kit.submission import validate_submission

LIMIT = 5  # the digits template's daily_limit


@pytest.fixture(scope="module")
def hosted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("host")
    home = folder / "kit-home"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KIT_HOME", str(home))
        made = hosted_digits(folder, limit=300)
    server = Server(made["hostdir"], {"KIT_HOME": str(home)})
    try:
        yield {**made, "url": server.url, "server": server}
    finally:
        server.stop()


def new_team(hosted, name=None) -> str:
    return admin.add_team(hosted["hostdir"], name or f"t-{uuid.uuid4().hex[:8]}")


def sample(hosted):
    return hosted["hostdir"] / "public" / "sample_submission.csv"


def key_frame(hosted) -> pd.DataFrame:
    store = Store.open(hosted["hostdir"])
    try:
        return pd.DataFrame(store.read_answers(), columns=["id", "target", "usage"])
    finally:
        store.close()


def test_init_keeps_secrets_private(hosted):
    hostdir = hosted["hostdir"]
    assert stat.S_IMODE(os.stat(hostdir / "host.sqlite").st_mode) == 0o600
    token = new_team(hosted, "secret-keepers")
    raw = (hostdir / "host.sqlite").read_bytes()
    for wal in hostdir.glob("host.sqlite-*"):
        raw += wal.read_bytes()
    assert token.encode() not in raw  # only the hash is at rest
    assert hash_token(token).encode() in raw
    # the participant bundle never holds the answer key
    key = key_frame(hosted)
    truth = dict(zip(key["id"], key["target"], strict=True))
    with zipfile.ZipFile(hostdir / "public" / admin.BUNDLE_NAME) as bundle:
        names = bundle.namelist()
        assert "sample_submission.csv" in names and "train.csv" in names
        assert not [n for n in names if "solution" in n.lower()]
        for name in (n for n in names if n.endswith(".csv")):
            frame = pd.read_csv(io.BytesIO(bundle.read(name)), dtype=str)
            if "id" not in frame.columns:
                continue
            known = frame[frame["id"].isin(truth)]
            for column in frame.columns.drop("id"):
                agree = (known[column] == known["id"].map(truth)).mean() if len(known) else 0
                assert agree < 0.5, f"{name}:{column} reveals test labels"


def test_participant_loop_through_the_real_cli(hosted, tmp_path):
    url, token = hosted["url"], new_team(hosted, "cli-team")
    runner = CliRunner()
    root = tmp_path / "mine" / "digits"
    assert runner.invoke(cli, ["new", "digits", "--parent", str(root.parent)]).exit_code == 0
    text = (root / "kit.toml").read_text()
    text = re.sub(r'^platform = "local"', 'platform = "host"', text, flags=re.M)
    text = re.sub(r'^host_url = ""', f'host_url = "{url}"', text, flags=re.M)
    (root / "kit.toml").write_text(text)

    result = runner.invoke(cli, ["login", url, "--token", "kit_wrong"])
    assert result.exit_code == 2 and "refused the token" in result.output
    result = runner.invoke(cli, ["login", url, "--token", token])
    assert result.exit_code == 0, result.output
    tokens = json.loads((tmp_path / "kit-home" / "host-tokens.json").read_text())
    assert tokens[url] == token
    assert stat.S_IMODE(os.stat(tmp_path / "kit-home" / "host-tokens.json").st_mode) == 0o600

    result = runner.invoke(cli, ["download", "-C", str(root)])
    assert result.exit_code == 0, result.output
    assert (root / "data" / "sample_submission.csv").read_bytes() == sample(hosted).read_bytes()
    assert "already current" in runner.invoke(cli, ["download", "-C", str(root)]).output

    good = root / "submissions" / "zeros.csv"
    good.parent.mkdir()
    good.write_bytes(prediction(sample(hosted), "0"))
    assert runner.invoke(cli, ["validate", "-C", str(root), str(good)]).exit_code == 0
    result = runner.invoke(cli, ["submit", "-C", str(root), str(good), "-m", "all zeros"])
    assert result.exit_code == 0, result.output
    assert "public accuracy" in result.output and f"{LIMIT - 1} submission(s) left" in result.output

    mine = json.loads(runner.invoke(cli, ["submissions", "-C", str(root), "--json"]).output)
    assert [row["message"] for row in mine] == ["all zeros"]
    assert not any("private" in k for k in mine[0])
    board = json.loads(runner.invoke(cli, ["leaderboard", "-C", str(root), "--json"]).output)
    row = next(r for r in board if r["team"] == "cli-team")
    assert row["you"] and row["entries"] == 1 and row["public_low"] <= row["public_score"]
    assert not any("private" in k for r in board for k in r)

    other = new_team(hosted)  # $KIT_HOST_TOKEN wins over the saved token
    theirs = runner.invoke(cli, ["submissions", "-C", str(root), "--json"],
                           env={"KIT_HOST_TOKEN": other})  # fmt: skip
    assert theirs.exit_code == 0 and json.loads(theirs.output) == []
    result = runner.invoke(cli, ["finals", "-C", str(root), str(mine[0]["id"])])
    assert result.exit_code == 0 and str(mine[0]["id"]) in result.output
    history = (root / "submissions" / "history.jsonl").read_text()
    assert json.loads(history)["platform"] == "host"


def test_invalid_upload_is_explained_and_not_charged(hosted, tmp_path):
    url, token = hosted["url"], new_team(hosted)
    bad = pd.read_csv(sample(hosted), dtype=str).iloc[3:]
    bad.loc[bad.index[0], "label"] = "eleven"
    path = tmp_path / "bad.csv"
    bad.to_csv(path, index=False)
    expected = validate_submission(path, sample(hosted), id_column="id", target_column="label",
                                   classes=list(range(10)), format="class_index")  # fmt: skip
    status, body = upload(url, token, path.read_bytes())
    assert status == 400 and body["problems"] == expected and body["error"].startswith(expected[0])
    for hostile in (b"\x00\xff\xfe garbage", b"", "id,label\n\u00e9,\u2603\n".encode()):
        assert upload(url, token, hostile)[0] == 400
    status, _, raw = request(url + "/api/me", token=token)
    assert status == 200 and json.loads(raw)["remaining_today"] == LIMIT
    status, body = upload(url, token, prediction(sample(hosted), "1"), message="ones")
    assert status == 201 and body["remaining_today"] == LIMIT - 1
    assert set(body) >= {"id", "public_score", "remaining_today"}


def test_tokens_uploads_and_files_are_guarded(hosted):
    url, token = hosted["url"], new_team(hosted)
    assert upload(url, "kit_not-a-token", prediction(sample(hosted), "0"))[0] == 401
    assert request(url + "/api/submissions")[0] == 401
    # an upload far beyond sample_submission's size is refused before it is read
    huge = prediction(sample(hosted), "0") * 200
    assert upload(url, token, huge)[0] == 413
    # only the published files, by exact name; never the database or the pages' sources
    for name in ("host.sqlite", "..%2Fhost.sqlite", "%2E%2E%2Fhost.sqlite", "../pages/rules.md"):
        assert request(f"{url}/api/files/{name}", token=token)[0] == 404
    status, _, raw = request(url + "/api/files", token=token)
    assert status == 200 and {f["name"] for f in json.loads(raw)} == {
        "data.zip",
        "sample_submission.csv",
    }


def test_a_team_sees_only_its_own(hosted):
    url = hosted["url"]
    first, second = new_team(hosted), new_team(hosted)
    _, mine = upload(url, first, prediction(sample(hosted), "2"), message="first's secret")
    _, _, raw = request(url + "/api/submissions", token=second)
    assert json.loads(raw) == []
    body = json.dumps({"ids": [mine["id"]]}).encode()
    headers = {"Content-Type": "application/json"}
    status, _, raw = request(url + "/api/finals", "POST", token=second, body=body, headers=headers)
    assert status == 400 and "not your submission" in json.loads(raw)["error"]
    three = json.dumps({"ids": [mine["id"], 10**6, 10**6 + 1]}).encode()
    assert request(url + "/api/finals", "POST", token=first, body=three, headers=headers)[0] == 400
    status, _, raw = request(url + "/api/finals", "POST", token=first, body=body, headers=headers)
    assert status == 200 and json.loads(raw)["finals"] == [mine["id"]]


def test_daily_limit_is_exact_under_concurrency_and_retries_count_once(hosted):
    url = hosted["url"]
    teams = [new_team(hosted) for _ in range(4)]
    data = prediction(sample(hosted), "3")
    jobs = [(token, str(uuid.uuid4())) for token in teams for _ in range(LIMIT + 3)]
    with futures.ThreadPoolExecutor(12) as pool:
        results = list(pool.map(lambda job: upload(url, job[0], data, key=job[1]), jobs))
    for token in teams:
        codes = sorted(code for (t, _), (code, _) in zip(jobs, results, strict=True) if t == token)
        assert codes == [201] * LIMIT + [429] * 3
    # one upload retried five times at once with one Idempotency-Key is stored once
    token, key = new_team(hosted), str(uuid.uuid4())
    with futures.ThreadPoolExecutor(5) as pool:
        replies = list(pool.map(lambda _: upload(url, token, data, key=key), range(5)))
    assert {code for code, _ in replies} == {201} and len({b["id"] for _, b in replies}) == 1
    _, _, raw = request(url + "/api/submissions", token=token)
    assert len(json.loads(raw)) == 1
    assert json.loads(request(url + "/api/me", token=token)[2])["remaining_today"] == LIMIT - 1
    status, body = upload(url, token, prediction(sample(hosted), "4"), key=key)
    assert status == 422 and "another file" in body["error"]  # a key names one upload


def login(client: httpx.Client, token: str) -> httpx.Response:
    page = client.get("/login")
    csrf = re.search(r'name=csrf value="([^"]+)"', page.text).group(1)
    return client.post("/login", data={"token": token, "csrf": csrf})


def test_pages_need_csrf_and_a_live_token(hosted):
    token = new_team(hosted, "page-team")
    with httpx.Client(base_url=hosted["url"]) as client:
        assert client.get("/submit").status_code == 303  # not logged in: to /login
        assert client.post("/login", data={"token": token}).status_code == 403  # no csrf
        response = login(client, token)
        assert response.status_code == 303 and response.headers["location"] == "/submissions"
        cookie = response.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie
        page = client.get("/submit")
        assert page.status_code == 200 and "page-team" in page.text
        files = {"file": ("s.csv", prediction(sample(hosted), "4"))}
        forged = client.post("/submit", data={"message": "x", "csrf": "forged"}, files=files)
        assert forged.status_code == 403
        csrf = re.search(r'name=csrf value="([^"]+)"', page.text).group(1)
        sent = client.post("/submit", data={"message": "from the form", "csrf": csrf}, files=files)
        assert sent.status_code == 303 and sent.headers["location"].startswith("/submissions?new=")
        assert "scored" in client.get(sent.headers["location"]).text
        new_id = sent.headers["location"].split("=")[1]
        ticked = client.post("/finals", data={"ids": [new_id], "csrf": csrf})
        assert ticked.status_code == 303
        mine = json.loads(request(hosted["url"] + "/api/submissions", token=token)[2])
        assert [row["final"] for row in mine] == [True]
        # rotating the token ends the session made with the old one
        new_token = admin.rotate_team(hosted["hostdir"], "page-team")
        assert client.get("/submit").status_code == 303
        assert upload(hosted["url"], token, b"id,label\n")[0] == 401
        assert login(client, new_token).status_code == 303
        admin.revoke_team(hosted["hostdir"], "page-team")
        assert client.get("/submissions").status_code == 303


def test_bootstrap_matches_kit_metrics_and_covers_the_score():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 5, 3000).astype(str)
    predicted = np.where(rng.random(3000) < 0.7, truth, rng.integers(0, 5, 3000).astype(str))
    for name, fn in bootstrap.CONFUSION_METRICS.items():
        labels, codes = np.unique(np.concatenate([truth, predicted]), return_inverse=True)
        k = len(labels)
        confusion = np.bincount(codes[:3000] * k + codes[3000:], minlength=k * k).reshape(1, k, k)
        values = (
            (truth.astype(float), predicted.astype(float)) if name == "qwk" else (truth, predicted)
        )
        assert fn(confusion)[0] == pytest.approx(get_metric(name).from_labels(*values), abs=1e-12)
        low, high = bootstrap.interval(name, truth, predicted)
        assert low < get_metric(name).from_labels(*values) < high
    wide = bootstrap.interval("accuracy", truth[:300], predicted[:300])
    narrow = bootstrap.interval("accuracy", truth, predicted)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]  # fewer public rows, more noise


def test_login_is_rate_limited(hosted):
    token = new_team(hosted)
    with httpx.Client(base_url=hosted["url"]) as client:
        codes = [login(client, "kit_guess").status_code for _ in range(12)]
        assert codes[0] == 401 and codes[-1] == 429
        assert login(client, token).status_code == 429  # locked out, right token or not
        assert request(hosted["url"] + "/api/me", token=token)[0] == 429
    store = Store.open(hosted["hostdir"])
    try:
        with store.engine.begin() as connection:  # let later tests in this module log in
            connection.exec_driver_sql("DELETE FROM login_failures")
    finally:
        store.close()


def test_the_demo_hosts_digits_with_three_teams_and_a_baseline(tmp_path):
    demo = admin.make_demo(tmp_path / "demo", limit=100)
    assert set(demo["tokens"]) == {"host", *admin.DEMO_TEAMS}
    store = Store.open(demo["hostdir"])
    try:
        rows = admin.standings(store, admin.settings(store), private=False)
        assert [(r["team"], r["baseline"]) for r in rows] == [("all-zeros baseline", True)]
        again = admin.make_demo(tmp_path / "demo", limit=100)  # reused, with fresh tokens
        old, new = demo["tokens"]["team-a"], again["tokens"]["team-a"]
        assert store.team_by_token_hash(hash_token(old)) is None
        assert store.team_by_token_hash(hash_token(new))["name"] == "team-a"
    finally:
        store.close()


def test_start_and_end_close_submissions_by_themselves():
    past, future = admin.utc_time("2020-01-01", "--end"), admin.utc_time("2999-01-01T09:00", "--x")
    assert past == "2020-01-01T00:00:00.000+00:00"
    assert admin.state({"state": "open", "end": past}) == "frozen"
    assert admin.state({"state": "open", "start": future}) == "frozen"
    assert admin.state({"state": "open", "start": past, "end": future}) == "open"
    assert admin.state({"state": "revealed", "end": past}) == "revealed"
    with pytest.raises(admin.KitError, match="ISO time"):
        admin.utc_time("next friday", "--end")


def test_labels_are_read_as_kit_validate_reads_them(hosted):
    from kit.host import scoring

    store = Store.open(hosted["hostdir"])
    try:
        values, key = admin.settings(store), scoring.AnswerKey(store.read_answers())
    finally:
        store.close()
    rules = scoring.Rules.from_meta(values, hosted["hostdir"])
    truth = key_frame(hosted).set_index("id")["target"]
    ids = pd.read_csv(sample(hosted), dtype=str)["id"]
    plain = prediction(sample(hosted), truth.loc[ids].to_numpy())
    padded = prediction(sample(hosted), [f" 0{v}" for v in truth.loc[ids]])
    assert scoring.score(plain, rules, key)["public_score"] == 1.0
    assert scoring.score(padded, rules, key) == scoring.score(plain, rules, key)


def test_roster_import_and_the_host_pages(hosted, tmp_path):
    roster = tmp_path / "roster.csv"
    roster.write_text("team,email\nrooks,a@x.org\nrooks,b@x.org\nknights,c@x.org\n")
    out = tmp_path / "tokens.csv"
    result = CliRunner().invoke(cli, ["host", "team", "import", str(hosted["hostdir"]),
                                      str(roster), "--out", str(out)])  # fmt: skip
    assert result.exit_code == 2 and "team size is 1" in result.output  # rooks has two members
    roster.write_text("team,email\nrooks,a@x.org\nknights,c@x.org\n")
    result = CliRunner().invoke(cli, ["host", "team", "import", str(hosted["hostdir"]),
                                      str(roster), "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    tokens = pd.read_csv(out)
    assert list(tokens["team"]) == ["rooks", "knights"]
    for team, token in zip(tokens["team"], tokens["token"], strict=True):
        assert json.loads(request(hosted["url"] + "/api/me", token=token)[2])["team"] == team
    host_pages = ["/host", "/host/teams", "/host/submissions", "/host/export.csv"]
    with httpx.Client(base_url=hosted["url"]) as client:
        assert login(client, tokens["token"][0]).status_code == 303
        assert all(client.get(page).status_code == 303 for page in host_pages)  # not the host
        assert "Private" not in client.get("/leaderboard?view=private").text
    with httpx.Client(base_url=hosted["url"]) as client:
        assert login(client, hosted["host_token"]).headers["location"] == "/host"
        assert "id=to-frozen" in client.get("/host").text
        teams = client.get("/host/teams").text
        assert "rooks" in teams and "a@x.org" in teams
        export = client.get("/host/export.csv")
        assert export.headers["content-type"].startswith("text/csv")
        assert export.text.startswith("private_rank,team,members")
        assert "<th class=num>Private</th>" in client.get("/leaderboard?view=private").text


def test_init_takes_a_solution_file_or_makes_a_stratified_split(digits, tmp_path):
    from kit.errors import KitError

    key = key_frame_of(admin._registered_key(digits.name))
    solution = tmp_path / "solution.csv"
    key.rename(columns={"target": "label"}).drop(columns="usage").to_csv(solution, index=False)
    with pytest.raises(KitError, match="Usage.*--split"):
        admin.init_host(tmp_path / "a", digits.root, solution=solution)
    made = admin.init_host(tmp_path / "b", digits.root, solution=solution, split=True, seed=3)
    store = Store.open(tmp_path / "b")
    try:
        split = key_frame_of(pd.DataFrame(store.read_answers(), columns=["id", "target", "usage"]))
    finally:
        store.close()
    assert made["public_rows"] + made["private_rows"] == len(key)
    for _, rows in split.groupby("target"):  # every label is split half and half
        assert abs((rows["usage"] == "Public").sum() - (rows["usage"] == "Private").sum()) <= 1
    short = key.iloc[1:].rename(columns={"target": "label", "usage": "Usage"})
    short.to_csv(solution, index=False)
    with pytest.raises(KitError, match="ids differ"):
        admin.init_host(tmp_path / "c", digits.root, solution=solution)
    with pytest.raises(KitError, match="already hosts"):
        admin.init_host(tmp_path / "b", digits.root, split=True)


def key_frame_of(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("id", ignore_index=True)
