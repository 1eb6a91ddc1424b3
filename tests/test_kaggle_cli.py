"""The Kaggle commands end to end: `kit new --kaggle`, `kit download`, `kit submit`,
`kit leaderboard`, `kit submissions`, through the real kaggle client and the loopback server of
kaggle_server.py (nothing reaches the internet)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tomllib

import pytest
from click.testing import CliRunner
from kaggle_server import KaggleServer, make_zip

from kit.cli import cli
from kit.platforms import kaggle_client

SLUG = "digits-mini"


@pytest.fixture
def hosted(digits):
    """The digits fixture's data, as Kaggle would serve it (no DATA.json: kit's own file)."""
    root = digits.data_dir
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name != "DATA.json"
    }


@pytest.fixture
def server(hosted):
    server = KaggleServer(username="kit-user", key="kit-test-key").start()
    server.add_competition(SLUG, hosted, title="Digits Mini")
    yield server
    server.stop()


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def root(tmp_path, runner):
    """`kit new mini --kaggle digits-mini`, as a user would type it."""
    done = runner.invoke(cli, ["new", "mini", "--kaggle", SLUG, "--parent", str(tmp_path)])
    assert done.exit_code == 0, done.output
    return tmp_path / "mini"


def kit(runner, root, *args):
    return runner.invoke(cli, [*args[:1], "-C", str(root), *args[1:]])


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


# ------------------------------------------------------------------------------ kit new --kaggle
def test_new_kaggle_scaffolds_a_kaggle_competition(root, runner, tmp_path):
    config = tomllib.loads((root / "kit.toml").read_text())
    assert config["competition"]["platform"] == "kaggle"
    assert config["competition"]["source"] == SLUG
    assert config["competition"]["name"] == "mini"
    assert "[kernel]" in (root / "kit.toml").read_text()

    bad = runner.invoke(cli, ["new", "x", "--kaggle", "Not A Slug", "--parent", str(tmp_path)])
    assert "is not a Kaggle competition slug" in one_line_error(bad)
    both = runner.invoke(
        cli, ["new", "y", "--kaggle", SLUG, "--example", "digits", "--parent", str(tmp_path)]
    )
    assert "exclude each other" in one_line_error(both)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


# ------------------------------------------------------------------------------ kit download
def test_download_extracts_then_skips_and_warns_about_open_credentials(
    fake_kaggle, root, runner, hosted
):
    first = kit(runner, root, "download")
    assert first.exit_code == 0, first.output
    assert f"ready ({len(hosted)} files extracted)" in first.stdout
    assert "Downloading" in first.stdout  # the client's progress output
    data = root / "data"
    for name, content in hosted.items():
        assert (data / name).read_bytes() == content
    assert "Warning" not in first.stderr

    path = kaggle_client.credentials_file()
    path.write_text(json.dumps({"username": "kit-user", "key": "kit-test-key"}))
    path.chmod(0o644)
    again = kit(runner, root, "download", "--quiet")
    assert again.exit_code == 0, again.output
    assert "already current" in again.stdout
    assert f"chmod 600 {path}" in again.stderr and "kit-test-key" not in again.output
    assert fake_kaggle.bodies_served == 1


def test_download_list_shows_files_and_fetches_nothing(fake_kaggle, root, runner, hosted):
    done = kit(runner, root, "download", "--list")
    assert done.exit_code == 0, done.output
    lines = done.stdout.splitlines()
    assert len(lines) == len(hosted)
    size = len(hosted["train.csv"])
    assert f"train.csv  {size:,} bytes  2024-01-02T03:04:05" in lines
    assert fake_kaggle.bodies_served == 0 and not (root / "data").exists()


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("rules", f"accept the rules at https://www.kaggle.com/competitions/{SLUG}/rules"),
        ("key", "KAGGLE_API_TOKEN"),
        ("slug", "check the competition slug 'no-such-slug'"),
        ("500", "HTTP 500 after 4 tries"),
        ("zip-slip", "refusing to extract"),
    ],
)
def test_download_failures_are_one_line(fake_kaggle, root, runner, monkeypatch, fault, expected):
    overrides = []
    if fault == "rules":
        fake_kaggle.competitions[SLUG].rules_accepted = False
    elif fault == "key":
        monkeypatch.setenv("KAGGLE_KEY", "wrong-key")
    elif fault == "slug":
        overrides = ["--set", "competition.source=no-such-slug"]
    elif fault == "500":
        fake_kaggle.fail("DownloadDataFiles", 500, 500, 500, 500)
    else:
        fake_kaggle.competitions[SLUG].archive = make_zip({"../escaped.txt": b"x"})
    message = one_line_error(kit(runner, root, "download", "--quiet", *overrides))
    assert expected in message
    assert not (root / "escaped.txt").exists() and not (root.parent / "escaped.txt").exists()
    assert "kit-test-key" not in message


def test_download_retries_a_rate_limit_then_succeeds(fake_kaggle, root, runner):
    fake_kaggle.fail("DownloadDataFiles", 429)
    done = kit(runner, root, "download", "--quiet")
    assert done.exit_code == 0, done.output
    assert fake_kaggle.rpc_calls["DownloadDataFiles"] == 2


# ------------------------------------------------------------------------------ kit submit
@pytest.fixture
def downloaded(fake_kaggle, root, runner):
    assert kit(runner, root, "download", "--quiet").exit_code == 0
    submission = root / "submissions" / "first.csv"
    submission.parent.mkdir()
    shutil.copyfile(root / "data" / "sample_submission.csv", submission)
    return submission


def test_submit_validates_before_anything_is_uploaded(fake_kaggle, downloaded, root, runner):
    lines = downloaded.read_text().splitlines()
    downloaded.write_text("\n".join(lines[:-1] + ["nope,11"]) + "\n")
    done = kit(runner, root, "submit", str(downloaded), "-m", "broken")
    assert done.exit_code == 2 and "Traceback" not in done.output
    assert "id(s) missing" in done.stderr and "outside the class set" in done.stderr
    assert fake_kaggle.rpc_calls["StartSubmissionUpload"] == 0
    assert not (root / "submissions" / "history.jsonl").exists()


def test_submit_wait_shows_the_score_and_records_the_ledger(fake_kaggle, downloaded, root, runner):
    done = kit(runner, root, "submit", str(downloaded), "-m", "first", "--wait", "--run", "r1")
    assert done.exit_code == 0, done.output
    assert "submitted" in done.stdout and "(ref 1000): public score 0.87500" in done.stdout
    assert fake_kaggle.uploads["upload-1"] == downloaded.read_bytes()
    (entry,) = [json.loads(line) for line in (root / "submissions" / "history.jsonl").open()]
    assert entry["runs"] == ["r1"] and entry["ref"] == 1000 and entry["public_score"] == 0.875
    assert entry["platform"] == "kaggle" and entry["message"] == "first"
    assert entry["status"] == "complete" and len(entry["sha256"]) == 64
    with sqlite3.connect(root / "runs" / "ledger.sqlite") as db:  # the run ledger, kit/ledger.py
        rows = db.execute("select run, file, platform, public_score from submissions").fetchall()
    assert rows == [("r1", str(downloaded), "kaggle", 0.875)]

    later = kit(runner, root, "submit", str(downloaded), "-m", "second")
    assert later.exit_code == 0 and "(ref 1001): pending" in later.stdout


def test_rejected_upload_fails_and_records_nothing(fake_kaggle, downloaded, root, runner):
    fake_kaggle.reject_uploads = True
    message = one_line_error(kit(runner, root, "submit", str(downloaded), "-m", "rejected"))
    assert "did not accept the upload, so nothing was submitted" in message
    assert fake_kaggle.submissions == []
    assert not (root / "submissions" / "history.jsonl").exists()


# ------------------------------------------------------------------------------ boards
def test_leaderboard_shows_the_top_and_your_place(fake_kaggle, downloaded, root, runner):
    teams = [f"Team {i}" for i in range(1, 31)]
    teams[24] = fake_kaggle.team_name
    fake_kaggle.competitions[SLUG].leaderboard = [
        {"teamId": i, "teamName": name, "score": f"{1 - i / 100:.3f}",
         "submissionDate": "2024-01-03T00:00:00Z"}
        for i, name in enumerate(teams, 1)
    ]  # fmt: skip
    assert kit(runner, root, "submit", str(downloaded), "-m", "board").exit_code == 0
    done = kit(runner, root, "leaderboard", "--top", "3")
    assert done.exit_code == 0, done.output
    lines = done.stdout.splitlines()
    assert "Team 1" in lines[1] and "Team 3" in lines[3] and "Team 4" not in done.stdout
    assert fake_kaggle.team_name in lines[4] and "0.75" in lines[4]
    assert lines[-1] == "your place: rank 25"
    rows = json.loads(kit(runner, root, "leaderboard", "--top", "3", "--json").stdout)
    assert [r["rank"] for r in rows] == [1, 2, 3, 25] and rows[-1]["you"] is True


def test_submissions_lists_yours_newest_first(fake_kaggle, downloaded, root, runner):
    assert kit(runner, root, "submissions").stdout.strip() == "no submissions yet"
    for message in ("one", "two"):
        assert kit(runner, root, "submit", str(downloaded), "-m", message).exit_code == 0
    rows = json.loads(kit(runner, root, "submissions", "--json").stdout)
    assert [(r["ref"], r["description"]) for r in rows] == [(1001, "two"), (1000, "one")]
    table = kit(runner, root, "submissions").stdout
    assert "two" in table.splitlines()[1] and "0.875" in table

    path = kaggle_client.credentials_file()  # group-readable: every Kaggle command warns
    path.write_text(json.dumps({"username": "kit-user", "key": "kit-test-key"}))
    path.chmod(0o640)
    for command in (["submissions"], ["leaderboard"]):
        done = kit(runner, root, *command)
        assert done.exit_code == 0 and f"chmod 600 {path}" in done.stderr


def test_kaggle_commands_without_credentials_say_how_to_set_them(
    fake_kaggle, root, runner, monkeypatch
):
    for name in [n for n in os.environ if n.startswith("KAGGLE_") and n != "KAGGLE_CONFIG_DIR"]:
        if name != "KAGGLE_API_ENVIRONMENT":
            monkeypatch.delenv(name)
    for command in (["download", "--quiet"], ["leaderboard"], ["submissions"]):
        message = one_line_error(kit(runner, root, *command))
        assert "no Kaggle credentials found" in message and "chmod 600" in message
    assert fake_kaggle.log == []
