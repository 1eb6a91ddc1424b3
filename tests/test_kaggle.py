"""kit.platforms.kaggle with the real kaggle client, against the server of kaggle_server.py.

Nothing here reaches the internet: the client's requests go through HTTP_PROXY to the server,
and HTTPS_PROXY points there too, where any CONNECT is refused and recorded (checked after
every test).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kaggle_server import API_HOST, STORAGE_HOST, KaggleServer, make_zip

from kit.errors import KitError
from kit.platforms import kaggle as kaggle_platform
from kit.platforms import kaggle_client
from kit.platforms.archive import safe_extract

SLUG = "digits-mini"
# Incompressible bytes, so the archive is big enough to cut halfway through.
FILES = {
    "train.csv": b"id,label\n0,3\n1,7\n",
    "sample_submission.csv": b"id,label\n2,0\n",
    "train/0.png": os.urandom(40_000),
    "test/2.png": os.urandom(40_000),
}
BIG = os.urandom(3 * 1024 * 1024)


@pytest.fixture
def server():
    server = KaggleServer(username="kit-user", key="kit-test-key").start()
    server.add_competition(SLUG, dict(FILES), title="Digits Mini")
    yield server
    server.stop()


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def eventually(condition, seconds: float = 3.0) -> bool:
    """condition() once the server's threads caught up, or False after seconds."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def data_files(dest: Path) -> dict[str, bytes]:
    """The files download put in dest, without kit's own bookkeeping."""
    return {
        path.relative_to(dest).as_posix(): path.read_bytes()
        for path in dest.rglob("*")
        if path.is_file() and not path.relative_to(dest).as_posix().startswith(".kit")
    }


# ------------------------------------------------------------------------------ listing
def test_list_files_reports_names_sizes_and_dates(fake_kaggle):
    files = kaggle_platform.list_files(SLUG)
    assert {f["name"]: f["size"] for f in files} == {name: len(b) for name, b in FILES.items()}
    assert {f["creation_date"] for f in files} == {"2024-01-02T03:04:05"}
    assert fake_kaggle.rpc_calls["ListDataFiles"] == 1
    assert {entry.host for entry in fake_kaggle.log} == {API_HOST}


def test_list_files_follows_pages(fake_kaggle, monkeypatch):
    monkeypatch.setattr(kaggle_platform, "PAGE_SIZE", 3)
    assert len(kaggle_platform.list_files(SLUG)) == len(FILES)
    assert fake_kaggle.rpc_calls["ListDataFiles"] == 2


# ------------------------------------------------------------------------------ download
def test_download_extracts_then_skips_when_current(fake_kaggle, tmp_path):
    dest = tmp_path / "data"
    written = kaggle_platform.download(SLUG, dest, progress=False)
    assert sorted(p.relative_to(dest).as_posix() for p in written) == sorted(FILES)
    assert data_files(dest) == FILES
    assert not (dest / kaggle_platform.PARTIAL_DIR).exists()
    manifest = json.loads((dest / kaggle_platform.MANIFEST_NAME).read_text())
    assert manifest["archive"]["last_modified"] == "Tue, 02 Jan 2024 03:04:05 GMT"
    assert fake_kaggle.bodies_served == 1
    # The archive came from the storage host the API redirected to, through the proxy.
    assert [e.method for e in fake_kaggle.requests_to(STORAGE_HOST)] == ["GET"]
    before = {p: p.stat().st_mtime_ns for p in dest.rglob("*") if p.is_file()}

    # A client that only checks headers hangs up at once; wait long for it on a busy machine.
    fake_kaggle.abort_grace_seconds = 5.0
    assert kaggle_platform.download(SLUG, dest, progress=False) == []
    assert eventually(lambda: fake_kaggle.bodies_skipped == 1), "the client did not hang up"
    assert fake_kaggle.bodies_served == 1, "the second download fetched the archive again"
    fake_kaggle.abort_grace_seconds = 0.15
    assert {p: p.stat().st_mtime_ns for p in dest.rglob("*") if p.is_file()} == before

    assert len(kaggle_platform.download(SLUG, dest, force=True, progress=False)) == len(FILES)
    assert fake_kaggle.bodies_served == 2


def test_download_again_when_the_data_changes(fake_kaggle, tmp_path):
    dest = tmp_path / "data"
    kaggle_platform.download(SLUG, dest, progress=False)
    competition = fake_kaggle.competitions[SLUG]
    competition.files = {"train.csv": b"id,label\n0,1\n", "extra.csv": b"x\n"}
    competition.updated = datetime(2024, 6, 1, tzinfo=UTC)
    (dest / "test" / "2.png").unlink()  # the old version's file; the new one drops test/

    written = kaggle_platform.download(SLUG, dest, progress=False)
    assert len(written) == 2
    assert data_files(dest) == {"train.csv": b"id,label\n0,1\n", "extra.csv": b"x\n"}


def test_download_re_fetches_when_a_file_went_missing(fake_kaggle, tmp_path):
    dest = tmp_path / "data"
    kaggle_platform.download(SLUG, dest, progress=False)
    (dest / "train.csv").unlink()
    assert len(kaggle_platform.download(SLUG, dest, progress=False)) == len(FILES)
    assert data_files(dest) == FILES


def add_big_file(server: KaggleServer) -> int:
    """Make the archive bigger than the client's 1 MiB download chunk; return its size.

    The client writes whole chunks, so a cut inside the first chunk leaves nothing to resume.
    """
    server.competitions[SLUG].files["train/big.bin"] = BIG
    return len(server.competitions[SLUG].data_zip())


def test_cut_download_resumes_with_a_range_request(fake_kaggle, tmp_path):
    archive_size = add_big_file(fake_kaggle)
    fake_kaggle.cut_after_bytes, fake_kaggle.cuts_left = archive_size // 2, 1
    dest = tmp_path / "data"
    kaggle_platform.download(SLUG, dest, progress=False)
    assert len(fake_kaggle.ranges) == 1
    resumed_from = int(fake_kaggle.ranges[0].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_from <= archive_size // 2
    assert data_files(dest) == {**FILES, "train/big.bin": BIG}


def test_cut_download_leaves_nothing_half_written_and_resumes_next_run(
    fake_kaggle, tmp_path, monkeypatch
):
    archive_size = add_big_file(fake_kaggle)
    fake_kaggle.cut_after_bytes, fake_kaggle.cuts_left = archive_size * 3 // 4, 1
    monkeypatch.setattr(kaggle_client, "RETRY_DELAYS", ())
    dest = tmp_path / "data"
    with pytest.raises(KitError) as excinfo:
        kaggle_platform.download(SLUG, dest, progress=False)
    assert "run again to resume" in one_line_error(excinfo)
    assert data_files(dest) == {}
    assert not (dest / kaggle_platform.MANIFEST_NAME).exists()
    partial_size = (dest / kaggle_platform.PARTIAL_DIR / f"{SLUG}.zip").stat().st_size
    assert 0 < partial_size <= archive_size * 3 // 4

    kaggle_platform.download(SLUG, dest, progress=False)
    assert fake_kaggle.ranges == [f"bytes={partial_size}-"]
    assert data_files(dest) == {**FILES, "train/big.bin": BIG}
    assert not (dest / kaggle_platform.PARTIAL_DIR).exists()


def test_zip_slip_archive_is_refused_with_nothing_extracted(fake_kaggle, tmp_path):
    fake_kaggle.competitions[SLUG].archive = make_zip({"ok.txt": b"fine", "../evil.txt": b"pwned"})
    dest = tmp_path / "data"
    with pytest.raises(KitError) as excinfo:
        kaggle_platform.download(SLUG, dest, progress=False)
    message = one_line_error(excinfo)
    assert "'../evil.txt'" in message and f"{SLUG}.zip" in message
    assert not list(tmp_path.rglob("evil.txt"))
    assert data_files(dest) == {}
    assert not [p for p in tmp_path.iterdir() if ".extract-" in p.name]


# ------------------------------------------------------------------------------ safe_extract
def zip_with(tmp_path: Path, name: str, *, mode: int | None = None, size: int = 4) -> Path:
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as archive:
        info = zipfile.ZipInfo(name)
        if mode is not None:
            info.external_attr = mode << 16
        archive.writestr(info, b"x" * size)
    return path


@pytest.mark.parametrize(
    ("name", "mode", "problem"),
    [
        ("/etc/passwd", None, "absolute path"),
        ("a/../../b", None, "'..' component"),
        ("link", 0o120777, "symlink"),
    ],
)
def test_safe_extract_refuses_unsafe_members(tmp_path, name, mode, problem):
    archive = zip_with(tmp_path, name, mode=mode)
    with pytest.raises(KitError, match=problem) as excinfo:
        safe_extract(archive, tmp_path / "out")
    assert f"'{name}'" in one_line_error(excinfo)
    assert not (tmp_path / "out").exists()


def test_safe_extract_refuses_a_zip_bomb_by_declared_size(tmp_path):
    archive = zip_with(tmp_path, "big.bin", size=10_000)
    with pytest.raises(KitError, match="over the limit"):
        safe_extract(archive, tmp_path / "out", max_total_bytes=9_999)
    assert not (tmp_path / "out").exists()


def test_safe_extract_replaces_folders_whole(tmp_path):
    dest = tmp_path / "out"
    (dest / "train").mkdir(parents=True)
    (dest / "train" / "old.png").write_bytes(b"old")
    archive = tmp_path / "a.zip"
    archive.write_bytes(make_zip({"train/new.png": b"new", "top.csv": b"t"}))
    assert safe_extract(archive, dest) == [dest / "top.csv", dest / "train" / "new.png"]
    assert sorted(p.name for p in (dest / "train").iterdir()) == ["new.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip", "out"]


# ------------------------------------------------------------------------------ errors
def test_wrong_key_gives_credentials_help(fake_kaggle, monkeypatch):
    monkeypatch.setenv("KAGGLE_KEY", "not-the-right-key")
    with pytest.raises(KitError) as excinfo:
        kaggle_platform.list_files(SLUG)
    message = one_line_error(excinfo)
    assert "HTTP 401" in message
    assert "KAGGLE_USERNAME" in message and "kaggle.json" in message and "chmod 600" in message


def test_rules_not_accepted_points_to_the_rules_page(fake_kaggle, tmp_path):
    fake_kaggle.competitions[SLUG].rules_accepted = False
    with pytest.raises(KitError) as excinfo:
        kaggle_platform.download(SLUG, tmp_path / "data", progress=False)
    message = one_line_error(excinfo)
    assert f"accept the rules at https://www.kaggle.com/competitions/{SLUG}/rules" in message
    assert not (tmp_path / "data").exists()


def test_unknown_competition_names_the_slug(fake_kaggle, tmp_path):
    with pytest.raises(KitError) as excinfo:
        kaggle_platform.download("no-such-comp", tmp_path / "data", progress=False)
    assert "check the competition slug 'no-such-comp'" in one_line_error(excinfo)


def test_rate_limit_is_retried_until_it_succeeds(fake_kaggle):
    fake_kaggle.fail("ListDataFiles", 429, 429)
    assert len(kaggle_platform.list_files(SLUG)) == len(FILES)
    assert fake_kaggle.rpc_calls["ListDataFiles"] == 3


def test_server_errors_exhaust_the_retries(fake_kaggle, tmp_path):
    fake_kaggle.fail("*", *[500] * 10)
    with pytest.raises(KitError) as excinfo:
        kaggle_platform.download(SLUG, tmp_path / "data", progress=False)
    tries = len(kaggle_client.RETRY_DELAYS) + 1
    assert f"HTTP 500 after {tries} tries" in one_line_error(excinfo)
    assert fake_kaggle.rpc_calls["DownloadDataFiles"] == tries


def test_missing_credentials_say_how_to_set_them(fake_kaggle, monkeypatch, capfd):
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    with pytest.raises(KitError) as excinfo:
        kaggle_platform.list_files(SLUG)
    message = one_line_error(excinfo)
    assert "no Kaggle credentials" in message and "KAGGLE_API_TOKEN" in message
    assert "Authentication required" not in capfd.readouterr().out  # the client's help page
    assert fake_kaggle.log == []


def test_credentials_from_kaggle_json(fake_kaggle, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    path = kaggle_client.credentials_file()
    path.write_text(json.dumps({"username": fake_kaggle.username, "key": fake_kaggle.key}))
    path.chmod(0o600)
    assert kaggle_client.check_credentials_file() is None
    assert len(kaggle_platform.list_files(SLUG)) == len(FILES)


def test_open_kaggle_json_gets_a_chmod_warning(fake_kaggle):
    path = kaggle_client.credentials_file()
    path.write_text(json.dumps({"username": fake_kaggle.username, "key": fake_kaggle.key}))
    path.chmod(0o644)
    warning = kaggle_client.check_credentials_file()
    assert warning is not None and f"chmod 600 {path}" in warning
    assert fake_kaggle.key not in warning


# ------------------------------------------------------------------------------ submissions
def write_submission(tmp_path: Path) -> Path:
    path = tmp_path / "submission.csv"
    path.write_text("id,label\n2,0\n")
    return path


def test_submit_and_wait_returns_the_public_score(fake_kaggle, tmp_path):
    file = write_submission(tmp_path)
    fake_kaggle.scored_after_polls = 2
    result = kaggle_platform.submit(SLUG, file, "first try", wait=True, poll_seconds=0.01)
    assert result["status"] == "complete"
    assert result["public_score"] == pytest.approx(0.875)
    assert result["description"] == "first try" and result["file_name"] == "submission.csv"
    steps = [(e.method, e.host, e.path.rsplit("/", 1)[-1]) for e in fake_kaggle.log]
    assert steps[:3] == [
        ("POST", API_HOST, "StartSubmissionUpload"),
        ("PUT", STORAGE_HOST, "upload-1"),
        ("POST", API_HOST, "CreateSubmission"),
    ]
    assert fake_kaggle.uploads["upload-1"] == file.read_bytes()
    assert fake_kaggle.rpc_calls["ListSubmissions"] == 2


def test_submit_without_wait_is_pending(fake_kaggle, tmp_path):
    result = kaggle_platform.submit(SLUG, write_submission(tmp_path), "quick")
    assert result["status"] == "pending" and result["ref"] == 1000
    assert result["message"] == "Successfully submitted to Digits Mini"
    assert fake_kaggle.rpc_calls["ListSubmissions"] == 0


def test_rejected_upload_raises_and_submits_nothing(fake_kaggle, tmp_path):
    fake_kaggle.reject_uploads = True
    file = write_submission(tmp_path)
    with pytest.raises(KitError) as excinfo:
        kaggle_platform.submit(SLUG, file, "will fail")
    assert f"{file}: Kaggle did not accept the upload" in one_line_error(excinfo)
    assert fake_kaggle.rpc_calls["CreateSubmission"] == 0
    assert fake_kaggle.submissions == []


def test_create_submission_is_not_retried_after_a_server_error(fake_kaggle, tmp_path):
    fake_kaggle.fail("CreateSubmission", 500)
    with pytest.raises(KitError) as excinfo:
        kaggle_platform.submit(SLUG, write_submission(tmp_path), "maybe twice?")
    assert f"check 'kaggle competitions submissions {SLUG}'" in one_line_error(excinfo)
    assert fake_kaggle.rpc_calls["CreateSubmission"] == 1


def test_create_submission_is_retried_after_a_rate_limit(fake_kaggle, tmp_path):
    fake_kaggle.fail("CreateSubmission", 429)
    assert kaggle_platform.submit(SLUG, write_submission(tmp_path), "later")["ref"] == 1000
    assert fake_kaggle.rpc_calls["CreateSubmission"] == 2


def test_submission_wait_times_out_with_a_clear_error(fake_kaggle, tmp_path):
    fake_kaggle.scored_after_polls = 10**6
    with pytest.raises(KitError, match="still being scored"):
        kaggle_platform.submit(
            SLUG, write_submission(tmp_path), "slow", wait=True, poll_seconds=0.01, timeout=0.05
        )


def test_submissions_list_newest_first(fake_kaggle, tmp_path):
    file = write_submission(tmp_path)
    kaggle_platform.submit(SLUG, file, "one")
    kaggle_platform.submit(SLUG, file, "two")
    rows = kaggle_platform.submissions(SLUG)
    assert [(r["ref"], r["description"]) for r in rows] == [(1001, "two"), (1000, "one")]
    assert {r["status"] for r in rows} == {"complete"}
    assert rows[0]["public_score"] == pytest.approx(0.875) and rows[0]["date"]


def test_leaderboard_top_rows_and_your_place_below(fake_kaggle, tmp_path, monkeypatch):
    monkeypatch.setattr(kaggle_platform, "PAGE_SIZE", 10)
    teams = [f"Team {i}" for i in range(1, 31)]
    teams[24] = fake_kaggle.team_name  # the user's team, 25th
    fake_kaggle.competitions[SLUG].leaderboard = [
        {
            "teamId": i,
            "teamName": name,
            "score": f"{1 - i / 100:.3f}",
            "submissionDate": "2024-01-03T00:00:00Z",
        }
        for i, name in enumerate(teams, 1)
    ]
    kaggle_platform.submit(SLUG, write_submission(tmp_path), "for the board")
    rows = kaggle_platform.leaderboard(SLUG, top=5)
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5, 25]
    assert rows[-1] == {
        "rank": 25,
        "team": fake_kaggle.team_name,
        "score": pytest.approx(0.75),
        "date": "2024-01-03T00:00:00",
        "you": True,
    }
    assert not any(r["you"] for r in rows[:5])
    assert fake_kaggle.rpc_calls["GetLeaderboard"] == 3  # stopped at the page holding rank 25


# ------------------------------------------------------------------------------ secrecy
def test_the_key_is_never_written_or_printed(fake_kaggle, tmp_path, monkeypatch, capfd):
    secret = "kit-SECRET-9f4c2a7e1b"
    fake_kaggle.key = secret
    monkeypatch.setenv("KAGGLE_KEY", secret)
    kaggle_platform.download(SLUG, tmp_path / "data")  # with progress, as the CLI runs it
    kaggle_platform.submit(SLUG, write_submission(tmp_path), "secret?", wait=True, poll_seconds=0)
    kaggle_platform.leaderboard(SLUG)
    fake_kaggle.reject_uploads = True
    with pytest.raises(KitError):
        kaggle_platform.submit(SLUG, write_submission(tmp_path), "fails")

    basic = base64.b64encode(f"{fake_kaggle.username}:{secret}".encode())
    out, err = capfd.readouterr()
    for text in (out, err):
        assert secret not in text and basic.decode() not in text
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) > len(FILES)
    for path in written:
        content = path.read_bytes()
        assert secret.encode() not in content and basic not in content, path


# ------------------------------------------------------------------------------ import order
def test_works_when_kaggle_was_imported_before_the_environment_was_set(server, tmp_path):
    """The client reads KAGGLE_API_ENVIRONMENT and KAGGLE_CONFIG_DIR once, at import."""
    home = tmp_path / "home"
    home.mkdir()
    script = f"""
import json, os
import kaggle  # no credentials, production environment: prints help, then carries on
os.environ.update({{
    "KAGGLE_API_ENVIRONMENT": "LOCALHOST", "KAGGLE_USERNAME": {server.username!r},
    "KAGGLE_KEY": {server.key!r}, "KAGGLE_CONFIG_DIR": {str(home / "cfg")!r},
    "HTTP_PROXY": {server.url!r}, "http_proxy": {server.url!r},
    "HTTPS_PROXY": {server.url!r}, "https_proxy": {server.url!r},
}})
from kit.platforms import kaggle as kaggle_platform
print(json.dumps(kaggle_platform.list_files({SLUG!r})))
"""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("KAGGLE_") and "proxy" not in key.lower()
    }
    env.update(HOME=str(home), PYTHONPATH=str(Path(kaggle_platform.__file__).parents[2]))
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout.strip().splitlines()[-1])
    assert {f["name"] for f in listed} == set(FILES)
    assert server.rpc_calls["ListDataFiles"] == 1 and server.connects == []
