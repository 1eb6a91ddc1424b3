"""Offline kernels: build the package, run it as Kaggle would (no network), push it to the
loopback Kaggle server through the real client, and keep credentials out of every file."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import TINY
from kaggle_server import KaggleServer, route_client_to

from kit.cli import cli
from kit.competition import Competition
from kit.errors import KitError
from kit.kernel import (
    build_kernel,
    build_kit_wheel,
    find_secrets,
    kernel_dir,
    network_isolation,
    rows_differing,
    run_local,
)
from kit.platforms import kaggle_client, kaggle_kernels
from kit.scaffold import new_competition

# One quick run shared by the module: 2 folds, 1 epoch, one TTA view.
RECIPE = [*TINY, "folds.n_splits=2", "predict.tta=['identity']"]
RUN = "r1"
LIMIT = 60  # images of the digits example: enough for 2 folds, quick to train
SLUG = "digits-r1"  # kernel.slug default: <competition>-<run>


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A digits competition with a trained and predicted run (KIT_HOME kept private)."""
    from kit.data.download import download
    from kit.data.folds import make_folds
    from kit.infer.predict import predict_run
    from kit.train.cv import train_run

    base = tmp_path_factory.mktemp("kernel")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KIT_HOME", str(base / "kit-home"))
        competition = new_competition("digits", base / "competitions", example="digits")
        download(competition, limit=LIMIT)
        competition = Competition.load(competition.root, RECIPE)
        make_folds(competition)
        train_run(competition, RUN, progress=False)
        predict_run(competition, RUN, progress=False)
    return competition


@pytest.fixture
def competition(trained, monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "kit-user")
    return Competition.load(trained.root, RECIPE)


@pytest.fixture
def server():
    server = KaggleServer(username="kit-user", key="kit-test-key").start()
    server.add_competition("digits", {"train.csv": b"id,label\n"}, title="Digits")
    yield server
    server.stop()


@pytest.fixture
def fake_kaggle(server, monkeypatch, tmp_path):
    route_client_to(server, monkeypatch, tmp_path / "home")
    monkeypatch.setattr(kaggle_client, "RETRY_DELAYS", (0.01, 0.02))
    # The client keeps resumable-upload state (tokens of *this* server) in the temp folder,
    # keyed by path, size and mtime; a private one per test keeps servers from meeting.
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    yield server
    assert server.connects == [], "something tried to leave over https"


# ------------------------------------------------------------------------------ the wheel
def test_kit_wheel_installs_offline_and_imports(tmp_path):
    wheel = build_kit_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert {"kit/cli.py", "kit/kernel.py", "kit/templates/kernel/inference.py.tmpl"} <= names
    assert not [n for n in names if "__pycache__" in n]
    target = tmp_path / "libs"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
         "--disable-pip-version-check", "--target", str(target), str(wheel)],
        check=True,
    )  # fmt: skip
    probe = "import kit, kit.kernel; print(kit.__file__)"
    done = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(target)!r}); {probe}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert done.stdout.strip() == str(target / "kit" / "__init__.py")


# ------------------------------------------------------------------------------ build
def test_build_writes_the_script_metadata_and_dataset(competition):
    result = build_kernel(competition, RUN)
    folder = kernel_dir(competition, SLUG)
    assert result["kernel_dir"] == str(folder) and result["kernel"] == f"kit-user/{SLUG}"
    text = (folder / "kernel-metadata.json").read_text()
    assert '"enable_internet": false' in text  # written, not left to the client's default
    metadata = json.loads(text)
    assert metadata["id"] == f"kit-user/{SLUG}" and metadata["code_file"] == "inference.py"
    assert metadata["competition_sources"] == ["digits"]
    assert metadata["dataset_sources"] == [f"kit-user/{SLUG}-data"]
    assert metadata["enable_gpu"] is False and metadata["kernel_type"] == "script"
    dataset = folder / "dataset"
    files = {p.name for p in dataset.iterdir()}
    assert {"dataset-metadata.json", "kit-kernel.json", "kit-0.1.0-py3-none-any.whl",
            "config.toml", "kit.toml", "run.json", "folds.csv", "fold0.pt", "fold1.pt"} <= files  # fmt: skip
    assert not {"log.jsonl", "test.csv", "oof_tta.csv"} & files
    run_dir = competition.run_dir(RUN)
    assert (dataset / "fold1.pt").read_bytes() == (run_dir / "fold1" / "best.pt").read_bytes()
    assert (dataset / "config.toml").read_text() == (run_dir / "config.toml").read_text()
    assert json.loads((dataset / "dataset-metadata.json").read_text())["id"] == (
        f"kit-user/{SLUG}-data"
    )
    compile((folder / "inference.py").read_text(), "inference.py", "exec")
    assert not list(folder.parent.glob(".*"))  # no staging folder left behind


def test_build_reads_gpu_and_slug_from_config(competition):
    configured = Competition.load(
        competition.root, [*RECIPE, "kernel.gpu=true", "kernel.slug=my-digits-kernel"]
    )
    result = build_kernel(configured, RUN)
    metadata = json.loads((Path(result["kernel_dir"]) / "kernel-metadata.json").read_text())
    assert metadata["enable_gpu"] is True and metadata["id"] == "kit-user/my-digits-kernel"
    assert metadata["enable_internet"] is False


def test_build_errors_are_one_line(competition, monkeypatch):
    with pytest.raises(KitError, match="run 'nope' not found"):
        build_kernel(competition, "nope")
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(competition.root / "no-such-dir"))
    with pytest.raises(KitError, match="set kernel.owner"):
        build_kernel(competition, RUN)


# ------------------------------------------------------------------------------ credentials
def test_credentials_never_enter_the_package(competition, fake_kaggle, monkeypatch):
    env_key, file_key = "kit-ENV-SECRET-5b1d9e", "kit-FILE-SECRET-77c0a3"
    monkeypatch.setenv("KAGGLE_KEY", env_key)
    monkeypatch.setenv("KAGGLE_API_TOKEN", "kit-TOKEN-SECRET-31f2")
    path = kaggle_client.credentials_file()
    path.write_text(json.dumps({"username": "kit-user", "key": file_key}))
    path.chmod(0o600)
    result = build_kernel(competition, RUN)
    folder = Path(result["kernel_dir"])
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert len(files) >= 12
    for secret in (env_key, file_key, "kit-TOKEN-SECRET-31f2"):
        assert find_secrets(folder, [secret]) == []
        for file in files:  # the same scan, spelled out, wheel members included
            assert secret.encode() not in file.read_bytes(), file
            if zipfile.is_zipfile(file):
                with zipfile.ZipFile(file) as archive:
                    for member in archive.namelist():
                        assert secret.encode() not in archive.read(member), (file, member)

    # A key that found its way into a run file stops the build, and the old package stays.
    before = (folder / "kernel-metadata.json").read_text()
    notes = competition.run_dir(RUN) / "notes.txt"
    notes.write_text(f"remember: {file_key}\n")
    try:
        with pytest.raises(KitError, match=r"would contain your Kaggle key.*notes.txt") as excinfo:
            build_kernel(competition, RUN)
        assert file_key not in str(excinfo.value)
    finally:
        notes.unlink()
    assert (folder / "kernel-metadata.json").read_text() == before
    assert not (folder / "dataset" / "notes.txt").exists()
    assert not list(folder.parent.glob(".*"))


# ------------------------------------------------------------------------------ run locally
def test_network_isolation_cuts_even_loopback(tmp_path):
    prefix = network_isolation()
    if prefix is None:
        pytest.skip("unshare -n is not available on this machine")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)"
    try:
        reachable = subprocess.run([sys.executable, "-c", probe], capture_output=True)
        isolated = subprocess.run([*prefix, sys.executable, "-c", probe], capture_output=True)
    finally:
        listener.close()
    assert reachable.returncode == 0
    assert isolated.returncode != 0 and b"Error" in isolated.stderr


@pytest.mark.slow
def test_run_local_matches_kit_predict_and_ensemble(competition):
    build_kernel(competition, RUN)
    result = run_local(competition, RUN, require_isolation=network_isolation() is not None)
    assert result["matches"] and result["rows_differing"] == 0
    assert result["isolated"] == (network_isolation() is not None)
    produced = Path(result["submission"]).read_text()
    assert produced == Path(result["expected"]).read_text()
    test_ids = (competition.data_dir / "sample_submission.csv").read_text().splitlines()
    assert len(produced.splitlines()) == len(test_ids) > 10  # header + every test image
    log = Path(result["log"]).read_text()
    libs = Path(result["kernel_dir"]) / "local" / "libs" / "kit"
    assert f"from {libs}" in log  # the kernel used the packaged wheel, not this checkout


def test_submissions_are_compared_row_by_row(tmp_path):
    ours, theirs = tmp_path / "ours.csv", tmp_path / "theirs.csv"
    ours.write_text("id,label\n007,1\nb,2\nc,3\n")
    theirs.write_text("id,label\n007,1\nb,2\nc,3\n")
    assert rows_differing(ours, theirs) == 0
    theirs.write_text("id,label\n7,1\nb,2\nc,4\n")  # ids compare as text: 007 is not 7
    assert rows_differing(ours, theirs) == 2
    theirs.write_text("id,target\n007,1\nb,2\nc,3\n")
    assert rows_differing(ours, theirs) == 3


def test_run_local_needs_a_build_and_a_prediction(competition, tmp_path):
    other = Competition.load(competition.root, [*RECIPE, "kernel.slug=never-built"])
    with pytest.raises(KitError, match="kit kernel build r1"):
        run_local(other, RUN)


# ------------------------------------------------------------------------------ push and submit
def test_push_creates_then_versions_the_dataset_and_pushes_the_kernel(competition, fake_kaggle):
    build_kernel(competition, RUN)
    runner = CliRunner()
    first = runner.invoke(cli, ["kernel", "push", "-C", str(competition.root), RUN])
    assert first.exit_code == 0, first.output
    assert f"dataset kit-user/{SLUG}-data created" in first.output
    dataset_ref = f"kit-user/{SLUG}-data"
    (version,) = fake_kaggle.datasets[dataset_ref]
    uploaded = version["files"]
    assert {"kit-0.1.0-py3-none-any.whl", "fold0.pt", "fold1.pt", "kit-kernel.json"} <= set(
        uploaded
    )
    dataset = kernel_dir(competition, SLUG) / "dataset"
    assert uploaded["fold0.pt"] == (dataset / "fold0.pt").read_bytes()
    assert "dataset-metadata.json" not in uploaded
    (saved,) = fake_kaggle.kernels[f"kit-user/{SLUG}"]
    assert saved["enableInternet"] is False
    assert saved["competitionDataSources"] == ["digits"]
    assert saved["datasetDataSources"] == [dataset_ref]
    assert saved["text"] == (kernel_dir(competition, SLUG) / "inference.py").read_text()

    second = runner.invoke(cli, ["kernel", "push", "-C", str(competition.root), RUN, "-m", "v2"])
    assert second.exit_code == 0, second.output
    assert "versioned" in second.output and "version 2" in second.output
    assert [v["notes"] for v in fake_kaggle.datasets[dataset_ref]] == ["", "v2"]
    assert len(fake_kaggle.kernels[f"kit-user/{SLUG}"]) == 2


def test_push_refused_by_kaggle_is_one_line(competition, fake_kaggle, monkeypatch):
    build_kernel(competition, RUN)
    folder = kernel_dir(competition, SLUG)
    metadata = json.loads((folder / "kernel-metadata.json").read_text())
    metadata["competition_sources"] = ["no-such-competition"]
    (folder / "kernel-metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(
        KitError, match="could not attach kit-user/digits-r1-data, no-such-competition"
    ) as excinfo:
        kaggle_kernels.push_kernel(folder)
    assert "\n" not in str(excinfo.value)
    fake_kaggle.fail("CreateDataset", 403)
    with pytest.raises(KitError, match=r"HTTP 403.*owner"):
        kaggle_kernels.push_dataset(folder / "dataset")


def test_code_submission_of_a_pushed_kernel(competition, fake_kaggle):
    build_kernel(competition, RUN)
    kaggle_kernels.push_dataset(kernel_dir(competition, SLUG) / "dataset")
    kaggle_kernels.push_kernel(kernel_dir(competition, SLUG))
    kaggle_root = _kaggle_twin(competition)
    runner = CliRunner()
    args = ["submit", "-C", str(kaggle_root), "-m", "kernel v1", "--kernel", f"kit-user/{SLUG}"]
    done = runner.invoke(cli, [*args, "--version", "1", "--wait"])
    assert done.exit_code == 0, done.output
    assert "submitted kit-user/digits-r1 (ref 1000): public score 0.87500" in done.output
    (submission,) = fake_kaggle.submissions
    assert submission["kernel"] == f"kit-user/{SLUG}" and submission["kernel_version"] == 1
    assert submission["fileName"] == "submission.csv"
    ledger = [json.loads(line) for line in (kaggle_root / "submissions" / "history.jsonl").open()]
    assert ledger[-1]["kernel"] == f"kit-user/{SLUG}" and ledger[-1]["public_score"] == 0.875

    refused = runner.invoke(cli, [*args, "--version", "9"])
    assert refused.exit_code == 2
    assert "did not accept notebook kit-user/digits-r1 (version 9)" in refused.output
    assert "Traceback" not in refused.output


def _kaggle_twin(competition: Competition) -> Path:
    """A kaggle-platform folder for the server's 'digits' competition, beside the trained one."""
    root = competition.root.parent / "digits-kaggle"
    if not root.exists():
        new_competition("digits-kaggle", competition.root.parent, kaggle="digits")
    return root
