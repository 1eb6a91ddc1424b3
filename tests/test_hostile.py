"""Hostile and careless input, command by command: each case ends in one clear line (exit 2, or 1
for a bug in kit), no traceback, nothing executed, nothing written outside the competition, and
the competition tree unchanged unless the case documents what changes.

One competition (60 digits, a trained, predicted and blended run r1, the answer key) is prepared
per module and copied per case. In-process CliRunner calls where the library is what is tested,
real `kit` processes where the CLI itself (exit code, stderr) is what breaks. The SIGKILL, mount
and concurrency cases live in test_hostile_slow.py.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from pathlib import Path

import pandas as pd
import pytest
from hostile_support import (
    SETS,
    assert_one_line,
    assert_unchanged,
    bomb_png,
    copy_prepared,
    garbage_idat_png,
    invoke,
    plant_pickle,
    prepare,
    run_kit,
    snapshot,
    with_sets,
)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepare(tmp_path_factory.mktemp("hostile"))


@pytest.fixture
def comp(prepared, tmp_path, kit_home) -> Path:
    return copy_prepared(prepared, tmp_path, kit_home)


def refused(comp: Path, command: list, fragment: str, code: int = 2, ignore=()) -> str:
    """Run command in-process on comp: one line holding fragment, and the tree unchanged."""
    before = snapshot(comp, ignore)
    line = assert_one_line(invoke(*with_sets(command, comp)), fragment, code)
    assert_unchanged(before, snapshot(comp, ignore))
    return line


# ----------------------------------------------------------------------------- 1. names
ESCAPES = [
    "../../escaped",
    "../escaped",
    "a/b",
    "..",
    ".",
    ".hidden",
    "-rf",
    "x" * 65,
    "name with space",
    "semi;colon",
    "new\nline",
    "star*",
    "ends.",
    "back\\slash",
]


@pytest.mark.parametrize("name", ESCAPES, ids=lambda n: repr(n)[:20])
def test_train_name_must_be_a_plain_name(comp, name):
    refused(comp, ["train", "--name", name], "not a plain name")
    assert not (comp.parent / "escaped").exists() and not (comp / "escaped").exists()


@pytest.mark.parametrize("command", [
    ["ensemble", "r1", "--name"],
    ["pseudo", "r1", "--name"],
    ["train", "--name"],
])  # fmt: skip
@pytest.mark.parametrize("form", ["../../escaped", "ABSOLUTE", "sub/../../escaped"])
def test_names_never_escape_the_competition(comp, command, form):
    target = Path("/tmp") / f"kit-hostile-{uuid.uuid4().hex}"
    name = str(target) if form == "ABSOLUTE" else form
    refused(comp, [*command, name], "not a plain name")
    assert not target.exists() and not Path(f"{target}.csv").exists()
    assert not (comp.parent.parent / "escaped").exists()


@pytest.mark.parametrize("command", [
    ["predict"], ["kernel", "build"], ["runs", "show"], ["ensemble", "--name", "x"],
    ["pseudo", "--name", "x"],
])  # fmt: skip
@pytest.mark.parametrize("run", ["../runs/r1", "ABSOLUTE"])
def test_run_arguments_are_names_not_paths(comp, command, run):
    run = str(comp / "runs" / "r1") if run == "ABSOLUTE" else run
    if command[0] == "runs":  # `kit runs -C DIR show RUN`
        before = snapshot(comp)
        result = invoke("runs", "-C", comp, "show", run)
        assert_one_line(result, "not a plain name")
        assert_unchanged(before, snapshot(comp))
        return
    refused(comp, [*command, run], "not a plain name")


def test_a_symlinked_run_folder_cannot_redirect_reads_or_writes(comp, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "config.toml").write_text((comp / "runs" / "r1" / "config.toml").read_text())
    (comp / "runs" / "evil").symlink_to(outside)
    refused(comp, ["predict", "evil"], "outside")
    refused(comp, ["train", "--name", "evil"], "outside")
    assert [p.name for p in outside.iterdir()] == ["config.toml"]


def test_a_symlinked_blends_folder_is_refused(comp, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (comp / "blends").rename(tmp_path / "blends-moved")
    (comp / "blends").symlink_to(outside)
    refused(comp, ["ensemble", "r1", "--name", "b2"], "outside")
    assert list(outside.iterdir()) == []


# ----------------------------------------------------------------- 2. checkpoints never unpickle
@pytest.mark.parametrize("wrap", ["dict", "numpy", "bare"])
def test_a_crafted_best_pt_never_runs_on_predict(comp, tmp_path, wrap):
    marker = tmp_path / f"PWNED-{wrap}"
    for fold in range(3):
        plant_pickle(comp / "runs" / "r1" / f"fold{fold}" / "best.pt", marker, wrap)
    before = snapshot(comp)
    command = with_sets(["predict", "r1"], comp)
    # the real CLI, as a player runs it, once; the other forms in-process
    result = run_kit(*command) if wrap == "dict" else invoke(*command)
    assert_one_line(result, "will not load it")
    assert not marker.exists(), "unpickling ran the planted code"
    assert_unchanged(before, snapshot(comp))


def test_a_crafted_last_pt_never_runs_on_resume(comp, tmp_path):
    marker = tmp_path / "PWNED"
    fold = comp / "runs" / "r1" / "fold1"
    (fold / "result.json").unlink()  # fold 1 unfinished: resume reads its last.pt
    plant_pickle(fold / "last.pt", marker)
    result = invoke(*with_sets(["train", "--resume", "r1"], comp))
    assert_one_line(result, "will not load it")
    assert not marker.exists()


def test_a_crafted_pretrained_file_never_runs_and_leaves_no_run(comp, tmp_path):
    marker = tmp_path / "PWNED"
    weights = plant_pickle(comp / "weights.pt", marker, "bare")
    refused(comp, ["train", "--name", "pre", f"--set=model.pretrained_file={weights}"],
            "model.pretrained_file")  # fmt: skip
    assert not marker.exists()


def test_a_torn_checkpoint_names_the_file(comp):
    path = comp / "runs" / "r1" / "fold0" / "best.pt"
    path.write_bytes(path.read_bytes()[:100])
    refused(comp, ["predict", "r1"], "fold0/best.pt")


def test_a_checkpoint_without_weights_is_refused(comp):
    import torch

    torch.save({"hello": 1}, comp / "runs" / "r1" / "fold2" / "best.pt")
    refused(comp, ["predict", "r1"], "not a kit fold checkpoint")


# ---------------------------------------------------------------------- 4. transform allowlist
@pytest.mark.parametrize("spec", [
    '{ name = "__class__" }',
    '{ name = "__init__" }',
    '{ name = "Lambda", image = "os.system" }',
    '{ name = "Compose", transforms = [] }',
    '{ name = "BasicTransform" }',
    '{ name = "core" }',
    '{ name = "os" }',
    '{ name = "random" }',
    '{ name = 42 }',
])  # fmt: skip
def test_only_albumentations_transforms_are_built(comp, spec):
    line = refused(comp, ["train", "--name", "t", f"--set=augment.train=[{spec}]"], "augment.train")
    assert "transform" in line
    assert not (comp / "runs" / "t").exists()


# --------------------------------------------------------------------- 6. one normalisation
def test_labels_written_09_validate_and_score_as_9(comp):
    path = comp / "submissions" / "r1.csv"
    frame = pd.read_csv(path, dtype=str)
    padded = frame.assign(label=frame["label"].str.zfill(2))
    padded_path = comp / "padded.csv"
    padded.to_csv(padded_path, index=False)
    assert invoke(*with_sets(["validate", padded_path], comp)).exit_code == 0
    plain = invoke(*with_sets(["submit", path, "-m", "plain", "--run", "r1"], comp))
    zeroed = invoke(*with_sets(["submit", padded_path, "-m", "padded", "--run", "r1"], comp))
    assert plain.exit_code == 0 and zeroed.exit_code == 0, plain.output + zeroed.output
    score = [line for line in plain.output.splitlines() if "public" in line][0].split()[-1]
    assert score in zeroed.output


# ----------------------------------------------------- 12, 13. submissions: size, shape, sources
def test_a_directory_as_submission_is_one_line(comp):
    refused(comp, ["validate", comp / "submissions"], "not a file")
    refused(comp, ["submit", comp / "submissions", "-m", "x"], "not a file")


def test_a_huge_submission_is_refused_before_parsing(comp):
    huge = comp / "huge.csv"
    with open(huge, "wb") as handle:  # sparse: 200 MB on paper, nothing on disk
        handle.write(b"id,label\n")
        handle.truncate(200 * 1024 * 1024)
    refused(comp, ["validate", huge], "far larger than sample_submission")
    refused(comp, ["submit", huge, "-m", "huge"], "far larger than sample_submission")


def test_validate_and_submit_need_no_training_images(comp):
    import shutil

    shutil.rmtree(comp / "data" / "train")
    assert invoke(*with_sets(["validate", comp / "submissions" / "r1.csv"], comp)).exit_code == 0
    result = invoke(*with_sets(["submit", comp / "submissions" / "r1.csv", "-m", "no images"],
                               comp))  # fmt: skip
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("content", [None, "", "id,label\n", "\x00\x01\x02garbage\xff" * 10])
def test_a_missing_or_empty_sample_submission_is_one_line(comp, content):
    sample = comp / "data" / "sample_submission.csv"
    if content is None:
        sample.unlink()
    else:
        sample.write_bytes(content.encode("latin-1"))
    refused(comp, ["validate", comp / "submissions" / "r1.csv"], "sample_submission")


@pytest.mark.parametrize("text, fragment", [
    ("", "not a readable CSV"),
    ("\xff\xfe\x00binary\x00" * 50, "not a readable CSV"),
    ("id,label\n" + "a,1\n" * 3, "rows; expected"),
    (",".join(f"c{i}" for i in range(100_000)) + "\n", "100,000 columns"),
    ("id,label\n" + "".join(f"{'x' * 5000}{i},1\n" for i in range(12)), "missing"),
])  # fmt: skip
def test_malformed_submissions_get_short_lines(comp, text, fragment):
    path = comp / "bad.csv"
    path.write_bytes(text.encode("latin-1"))
    before = snapshot(comp)
    result = invoke(*with_sets(["validate", path], comp))
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert all(line.startswith("Error: ") and len(line) < 1200 for line in lines), lines
    assert any(fragment in line for line in lines), lines
    assert_unchanged(before, snapshot(comp))


# ----------------------------------------------------------------------- 8. unfinished runs
def test_predict_refuses_an_unfinished_run(comp):
    (comp / "runs" / "r1" / "fold1" / "result.json").unlink()
    refused(comp, ["predict", "r1"], "kit train --resume r1")


def test_predict_refuses_a_run_with_no_finished_fold(comp):
    for fold in range(3):
        (comp / "runs" / "r1" / f"fold{fold}" / "result.json").unlink()
    refused(comp, ["predict", "r1"], "no finished fold")


def test_predict_finished_folds_uses_only_those(comp):
    (comp / "runs" / "r1" / "fold1" / "result.json").unlink()
    result = invoke(*with_sets(["predict", "r1", "--finished-folds"], comp))
    assert result.exit_code == 0, result.output
    folds = pd.read_csv(comp / "runs" / "r1" / "test_folds.csv")["fold"].unique().tolist()
    assert sorted(folds) == [0, 2]


def test_ensemble_refuses_an_unfinished_run(comp):
    metrics_path = comp / "runs" / "r1" / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics.update(complete=False, missing_folds=[1, 2])
    metrics_path.write_text(json.dumps(metrics))
    refused(comp, ["ensemble", "r1", "--name", "b"], "unfinished")
    result = invoke(*with_sets(["ensemble", "r1", "--name", "b", "--finished-folds"], comp))
    assert result.exit_code == 0, result.output


def test_runs_lists_interrupted_and_failed_runs_with_their_state(comp):
    import shutil

    shutil.copytree(comp / "runs" / "r1", comp / "runs" / "cut")
    (comp / "runs" / "cut" / "fold2" / "result.json").unlink()
    metrics = json.loads((comp / "runs" / "cut" / "metrics.json").read_text())
    (comp / "runs" / "cut" / "metrics.json").write_text(
        json.dumps({**metrics, "complete": False, "missing_folds": [2]})
    )
    (comp / "runs" / "dead").mkdir()
    shutil.copy(comp / "runs" / "r1" / "config.toml", comp / "runs" / "dead")
    from kit.competition import Competition
    from kit.ledger import list_runs

    table = list_runs(Competition.load(comp, SETS)).set_index("run")
    assert table.loc["r1", "state"] == "finished"
    assert table.loc["cut", "state"] == "interrupted"
    assert table.loc["dead", "state"] == "failed"
    shown = invoke("runs", "-C", comp)
    assert shown.exit_code == 0 and "interrupted" in shown.output, shown.output


# ------------------------------------------------------------------------------ 7. dead runs
@pytest.mark.parametrize("setting, fragment", [
    ("model.name=not_a_model", "model.name"),
    ("model.pretrained_file=missing.pt", "not found"),
    ("model.pretrained_file=kit.toml", "model.pretrained_file"),
    ('augment.train=[{ name = "Affine", rotate = "sideways" }]', "augment.train"),
    ('augment.train=[{ name = "Afine" }]', "did you mean"),
])  # fmt: skip
def test_a_late_error_leaves_no_run_behind(comp, setting, fragment):
    refused(comp, ["train", "--name", "late", f"--set={setting}"], fragment)
    assert not (comp / "runs" / "late").exists()


def test_a_run_that_died_before_its_first_epoch_does_not_block_its_name(comp):
    dead = comp / "runs" / "again"
    dead.mkdir()
    (dead / "config.toml").write_text((comp / "runs" / "r1" / "config.toml").read_text())
    result = invoke(*with_sets(["train", "--name", "again", "--folds", "0"], comp))
    assert result.exit_code == 0, result.output
    assert (dead / "fold0" / "result.json").exists()


def test_a_run_with_progress_still_blocks_its_name(comp):
    refused(comp, ["train", "--name", "r1"], "exists")


# ------------------------------------------------------------------------ 10. one line each
def write(path: Path, data: bytes | str) -> None:
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


TRAIN_CSV = [
    (b"", "is empty"),
    (b"id,label\n", "no rows"),
    (bytes(range(256)) * 20, "train.csv"),
    ("id,label\n" + "".join(f"{i},{'' if i == 3 else i % 10}\n" for i in range(48)), "no label"),
    ("id,label\n" + "".join(f"{i},99999999999999999999\n" for i in range(48)), "train.csv"),
    (",".join(f"col{i}" for i in range(1_000_000)) + "\n1\n", "1,000,000 columns"),
    (",".join(f"col{i}" for i in range(3000)) + "\n" + ",".join("1" * 3000) + "\n", "lacks column"),
    ('id,label\n"unterminated,1\n', "train.csv"),
]


@pytest.mark.parametrize(
    "content, fragment", TRAIN_CSV, ids=[f"train_csv{i}" for i in range(len(TRAIN_CSV))]
)
def test_a_broken_train_csv_is_one_short_line(comp, content, fragment):
    table = comp / "data" / "train.csv"
    write(table, content)
    refused(comp, ["train", "--name", "b"], fragment, ignore=("cache",))
    refused(comp, ["folds", "--force"], fragment, ignore=("cache",))


def test_a_non_utf8_file_name_is_one_line(comp):
    folder = comp / "data" / "train"
    target = Path(os.fsdecode(os.fsencode(folder) + b"/caf\xe9.png"))
    target.write_bytes(next(folder.glob("*.png")).read_bytes())
    refused(comp, ["folds", "--force", "--set=data.layout=folder_per_class"], "not UTF-8",
            ignore=("cache",))  # fmt: skip


@pytest.mark.parametrize(
    "content", [b"not toml = = =", b"\xff\xfe\x00", b"[train]\nepochs = 1\n" * 2]
)
def test_a_broken_kit_toml_is_one_line(comp, content):
    write(comp / "kit.toml", content)
    refused(comp, ["folds", "--force"], "kit.toml")


@pytest.mark.parametrize("damage", ["garbage", "empty-folds", "no-fold-column"])
def test_a_broken_folds_csv_is_one_line(comp, damage):
    path = comp / "folds.csv"
    if damage == "garbage":
        write(path, bytes(range(256)) * 4)
    elif damage == "empty-folds":
        write(path, "")
    else:
        write(path, "id,target\n1,2\n")
    result = invoke(*with_sets(["train", "--name", "f"], comp))
    assert_one_line(result, "folds")
    assert not (comp / "runs" / "f").exists()


def test_a_damaged_leaderboard_is_one_line(comp, kit_home):
    write(kit_home / "leaderboard.sqlite", b"this is not a database" * 100)
    refused(comp, ["submit", comp / "submissions" / "r1.csv", "-m", "x"], "database")


def test_a_damaged_run_ledger_is_one_line(comp):
    write(comp / "runs" / "ledger.sqlite", b"SQLite format 3\x00" + b"\x07" * 2000)
    refused(comp, ["runs"], "database")


def test_a_bug_in_kit_is_one_line_with_the_saved_traceback(comp, kit_home, monkeypatch):
    import kit.submission

    def broken(*args, **kwargs):
        return 1 / 0

    monkeypatch.setattr(kit.submission, "check_submission", broken)
    result = invoke(*with_sets(["validate", comp / "submissions" / "r1.csv"], comp))
    line = assert_one_line(result, "internal error in kit (ZeroDivisionError", code=1)
    saved = Path(line.split("the traceback is in ")[1].split(";")[0])
    assert saved.is_file() and kit_home in saved.parents
    assert "ZeroDivisionError" in saved.read_text()
    debug = invoke("--debug", *with_sets(["validate", comp / "submissions" / "r1.csv"], comp))
    assert debug.exit_code == 1 and "Traceback" in debug.stderr


# ----------------------------------------------------------------------------- 11. images
def training_image(comp: Path, k: int = 3) -> Path:
    return sorted((comp / "data" / "train").glob("*.png"))[k]


def test_a_png_that_passes_verify_but_cannot_decode_names_the_file(comp):
    image = garbage_idat_png(training_image(comp))
    line = refused(comp, ["train", "--name", "g"], image.name, ignore=("cache",))
    assert "--skip-bad" in line and "decode" in line


def test_skip_bad_leaves_an_undecodable_png_out_and_counts_it(comp):
    garbage_idat_png(training_image(comp))
    result = invoke(*with_sets(["train", "--name", "s", "--skip-bad", "--folds", "0"], comp))
    assert result.exit_code == 0, result.output
    assert "skipping 1 undecodable image(s)" in result.output


def test_a_decompression_bomb_names_the_file_and_max_pixels(comp):
    image = bomb_png(training_image(comp, 5))
    line = refused(comp, ["train", "--name", "b"], "data.max_pixels", ignore=("cache",))
    assert image.name in line


def test_max_pixels_is_a_setting(comp):
    refused(comp, ["train", "--name", "b", "--set=data.max_pixels=10"], "data.max_pixels",
            ignore=("cache",))  # fmt: skip


def test_a_corrupt_test_image_fails_predict_naming_it(comp):
    test_image = sorted((comp / "data" / "test").glob("*.png"))[0]
    garbage_idat_png(test_image)
    refused(comp, ["predict", "r1"], test_image.name, ignore=("cache",))


# ----------------------------------------------------------------------------- 3. leaderboard
def test_the_leaderboard_and_kit_home_are_private(comp, kit_home):
    assert invoke(*with_sets(["submit", comp / "submissions" / "r1.csv", "-m", "m"], comp))
    assert (kit_home / "leaderboard.sqlite").stat().st_mode & 0o777 == 0o600
    assert kit_home.stat().st_mode & 0o777 == 0o700


def test_download_cannot_silently_raise_the_daily_limit(comp, kit_home):
    before = snapshot(comp)
    result = invoke(*with_sets(["download", "--force", "--set=competition.daily_limit=1000"],
                               comp))  # fmt: skip
    assert_one_line(result, "--replace-key")
    assert_unchanged(before, snapshot(comp))
    with sqlite3.connect(kit_home / "leaderboard.sqlite") as db:
        (limit,) = db.execute("select daily_limit from competitions").fetchone()
    assert limit == 5


def test_download_cannot_replace_another_competitions_key(comp, kit_home, tmp_path):
    from kit.scaffold import new_competition

    other = new_competition("other", tmp_path / "elsewhere", example="digits")
    assert invoke("download", "-C", other.root, "--limit", "60", "--quiet").exit_code == 0
    with sqlite3.connect(kit_home / "leaderboard.sqlite") as db:
        rows = db.execute("select count(*) from answers where competition='other'").fetchone()
    result = invoke(*with_sets(["download", "--force", "--set=competition.name=other"], comp))
    assert_one_line(result, "registered")
    with sqlite3.connect(kit_home / "leaderboard.sqlite") as db:
        after = db.execute("select count(*) from answers where competition='other'").fetchone()
    assert after == rows


def test_the_host_can_replace_a_key_explicitly(comp, kit_home):
    result = invoke(*with_sets(["download", "--force", "--replace-key",
                                "--set=competition.daily_limit=7"], comp))  # fmt: skip
    assert result.exit_code == 0, result.output
    with sqlite3.connect(kit_home / "leaderboard.sqlite") as db:
        assert db.execute("select daily_limit from competitions").fetchone() == (7,)


def test_the_daily_limit_holds_across_commands(comp):
    path = comp / "submissions" / "r1.csv"
    for _ in range(5):
        assert invoke(*with_sets(["submit", path, "-m", "m"], comp)).exit_code == 0
    refused(comp, ["submit", path, "-m", "sixth"], "daily limit")


# ----------------------------------------------------------------------- 9. temp files, modes
def test_a_killed_writers_temp_file_is_cleaned_on_the_next_write(comp):
    stale = comp / "submissions" / ".r1.csv.abandoned.tmp"
    stale.write_text("half")
    os.utime(stale, (1, 1))
    result = invoke(*with_sets(["ensemble", "r1", "--name", "r1"], comp))
    assert result.exit_code == 0, result.output
    assert not stale.exists()


def test_artefacts_get_the_umask_mode(comp):
    old = os.umask(0o022)
    try:
        assert invoke(*with_sets(["ensemble", "r1", "--name", "m"], comp)).exit_code == 0
    finally:
        os.umask(old)
    assert (comp / "submissions" / "m.csv").stat().st_mode & 0o777 == 0o644
    assert (comp / "blends" / "m" / "card.json").stat().st_mode & 0o777 == 0o644


def test_ctrl_c_prints_one_line_and_exits_130(comp, monkeypatch):
    import kit.submission

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(kit.submission, "check_submission", interrupted)
    result = invoke(*with_sets(["validate", comp / "submissions" / "r1.csv"], comp))
    assert_one_line(result, "interrupted", code=130)


# ------------------------------------------------- config values (validated at load, by config.py)
@pytest.mark.parametrize("setting, field", [
    ("train.lr=nan", "train.lr"),
    ("train.lr=inf", "train.lr"),
    ("train.label_smoothing=2", "train.label_smoothing"),
    ("train.image_size=0", "train.image_size"),
    ("model.drop_rate=1.5", "model.drop_rate"),
    ("model.name=resnet_9000", "model.name"),
    ('augment.train=[{ name = "Affine", rotat = 10 }]', "rotat"),
    ("train.epochs=-1", "train.epochs"),
    ("train.batch_size=0", "train.batch_size"),
])  # fmt: skip
def test_config_values_are_refused_before_a_run_exists(comp, setting, field):
    refused(comp, ["train", "--name", "v", f"--set={setting}"], field)
    assert not (comp / "runs" / "v").exists()
