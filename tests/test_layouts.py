"""Each common Kaggle layout, built tiny in tmp_path, described by kit.toml alone, run end to end:
folds -> one-epoch training -> prediction -> a submission that `kit validate` accepts."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from kit.cli import cli
from kit.competition import Competition
from kit.data.eda import report_competition
from kit.data.folds import make_folds, read_folds
from kit.data.layout import read_test_items, read_train_items
from kit.infer.ensemble import ensemble_runs
from kit.infer.predict import predict_run
from kit.train.cv import train_run

pytestmark = pytest.mark.slow  # seven end-to-end runs, about 40 s on 2 cores

# one epoch on 16-px images, two folds, one TTA view: the layout is under test, not the model
RECIPE = [
    "train.epochs=1",
    "train.batch_size=8",
    "train.image_size=16",
    "folds.n_splits=2",
    'predict.tta=["identity"]',
    "predict.batch_size=32",
]
RANZCR_LABELS = [
    "ETT - Abnormal", "ETT - Borderline", "ETT - Normal", "NGT - Abnormal", "NGT - Borderline",
    "NGT - Incompletely Imaged", "NGT - Normal", "CVC - Abnormal", "CVC - Borderline",
    "CVC - Normal", "Swan Ganz Catheter Present",
]  # fmt: skip


def save_image(path: Path, seed: int, size: int = 20) -> None:
    """A small RGB image whose colour depends on seed (so classes differ a little); its noise
    depends on the file name too, so no two files are byte-identical copies (kit folds would
    rightly keep copies in one fold)."""
    rng = np.random.default_rng([seed, zlib.crc32(path.name.encode())])
    base = np.array([seed * 37 % 256, seed * 91 % 256, seed * 53 % 256], dtype=np.float32)
    pixels = np.clip(base + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def competition(root: Path, toml: str) -> Competition:
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "kit.toml").write_text(f'[competition]\nname = "{root.name}"\n{toml}')
    return Competition.load(root, RECIPE)


def run_to_submission(comp: Competition) -> pd.DataFrame:
    make_folds(comp)
    train_run(comp, "r1", progress=False)
    predict_run(comp, "r1", progress=False)
    path = ensemble_runs(comp, ["r1"], "r1")["submission"]
    result = CliRunner().invoke(cli, ["validate", "-C", str(comp.root), path])
    assert result.exit_code == 0, result.output
    return pd.read_csv(path, dtype=str)


def test_csv_ids_with_extension_binary_probability(tmp_path):
    """aerial-cactus: train.csv id,has_cactus with ids like 0004be...jpg; P(has_cactus) submitted."""
    root = tmp_path / "cactus"
    ids = [f"{i:032x}.jpg" for i in range(30)]
    for i, name in enumerate(ids):
        save_image(root / "data" / "train" / name, i % 2)
    pd.DataFrame({"id": ids, "has_cactus": [i % 2 for i in range(30)]}).to_csv(
        root / "data" / "train.csv", index=False
    )
    test_ids = [f"{i + 100:032x}.jpg" for i in range(6)]
    for i, name in enumerate(test_ids):
        save_image(root / "data" / "test" / name, i % 2)
    pd.DataFrame({"id": test_ids, "has_cactus": 0.5}).to_csv(
        root / "data" / "sample_submission.csv", index=False
    )
    comp = competition(
        root,
        '[data]\ntarget_column = "has_cactus"\nimage_ext = ".jpg"\n[task]\ntype = "binary"\n'
        '[metric]\nname = "roc_auc"\n'
        '[submission]\ntarget_column = "has_cactus"\nformat = "probability"\n'
        'positive_class = "1"\n',
    )
    assert read_train_items(comp)["path"][0].endswith(f"train/{ids[0]}")  # no doubled .jpg
    submission = run_to_submission(comp)
    assert list(submission.columns) == ["id", "has_cactus"]
    assert submission["id"].tolist() == test_ids
    assert submission["has_cactus"].astype(float).between(0, 1).all()


def test_csv_ids_without_extension_class_index(tmp_path):
    """cassava: image_id,label with train_images/ and test_images/; the label index submitted."""
    root = tmp_path / "cassava"
    ids = [f"{1000 + i}.jpg" for i in range(30)]
    for i, name in enumerate(ids):
        save_image(root / "data" / "train_images" / name, i % 5)
    boxes = {"x0": 2, "y0": 2, "x1": 18, "y1": 16}  # leaf boxes, px: training crops to them
    pd.DataFrame({"image_id": ids, "label": [i % 5 for i in range(30)], **boxes}).to_csv(
        root / "data" / "train.csv", index=False
    )
    save_image(root / "data" / "test_images" / "2216849948.jpg", 3)
    pd.DataFrame({"image_id": ["2216849948.jpg"], "label": 4}).to_csv(
        root / "data" / "sample_submission.csv", index=False
    )
    comp = competition(
        root,
        '[data]\ntrain_dir = "data/train_images"\ntest_dir = "data/test_images"\n'
        'id_column = "image_id"\nimage_ext = ""\nbbox_columns = ["x0", "y0", "x1", "y1"]\n'
        '[submission]\nid_column = "image_id"\n',
    )
    submission = run_to_submission(comp)
    assert list(submission.columns) == ["image_id", "label"]
    assert submission["label"].iloc[0] in {"0", "1", "2", "3", "4"}


def test_ordinal_grades_csv_without_extension(tmp_path):
    """APTOS: id_code,diagnosis 0-4, train_images/{id_code}.png, scored by quadratic kappa."""
    root = tmp_path / "aptos"
    ids = [f"{i:012x}" for i in range(30)]
    for i, name in enumerate(ids):
        save_image(root / "data" / "train_images" / f"{name}.png", i % 5)
    pd.DataFrame({"id_code": ids, "diagnosis": [i % 5 for i in range(30)]}).to_csv(
        root / "data" / "train.csv", index=False
    )
    test_ids = [f"t{i:011x}" for i in range(5)]
    for i, name in enumerate(test_ids):
        save_image(root / "data" / "test_images" / f"{name}.png", i)
    pd.DataFrame({"id_code": test_ids, "diagnosis": 0}).to_csv(
        root / "data" / "sample_submission.csv", index=False
    )
    comp = competition(
        root,
        '[data]\ntrain_dir = "data/train_images"\ntest_dir = "data/test_images"\n'
        'id_column = "id_code"\ntarget_column = "diagnosis"\n'
        'preprocess = [{ name = "CLAHE", p = 1.0 }]\ncache = true\n'
        '[task]\ntype = "ordinal"\n[metric]\nname = "qwk"\n'
        '[submission]\nid_column = "id_code"\ntarget_column = "diagnosis"\n',
    )
    submission = run_to_submission(comp)
    assert set(submission["diagnosis"]) <= {"0", "1", "2", "3", "4"}
    cached = list((root / "cache").rglob("*.u8"))
    assert len(cached) == 30 + 5  # every training and test image preprocessed once
    assert "value" in pd.read_csv(comp.runs_dir / "r1" / "test.csv").columns


def test_folder_per_class_submits_class_names(tmp_path):
    """plant-seedlings: train/<species>/*.png, a flat test/, submission file,species."""
    root = tmp_path / "seedlings"
    species = ["Black-grass", "Charlock", "Common Chickweed"]
    for c, name in enumerate(species):
        for i in range(8):
            save_image(root / "data" / "train" / name / f"{c}{i:08x}.png", c)
    test_files = [f"{i:09x}.png" for i in range(4)]
    for i, name in enumerate(test_files):
        save_image(root / "data" / "test" / name, i % 3)
    pd.DataFrame({"file": test_files, "species": "Charlock"}).to_csv(
        root / "data" / "sample_submission.csv", index=False
    )
    comp = competition(
        root,
        '[data]\nlayout = "folder_per_class"\nimage_ext = ""\n'
        '[submission]\nid_column = "file"\ntarget_column = "species"\nformat = "class_name"\n',
    )
    items = read_train_items(comp)
    assert sorted(items["target"].unique()) == species
    assert read_test_items(comp)["id"].tolist() == test_files
    submission = run_to_submission(comp)
    assert set(submission["species"]) <= set(species)


def test_label_in_the_file_name_by_regex(tmp_path):
    """dogs-vs-cats: train/cat.123.jpg; submission id,label = P(dog)."""
    root = tmp_path / "dogs-vs-cats"
    for i in range(12):
        save_image(root / "data" / "train" / f"cat.{i}.jpg", 0)
        save_image(root / "data" / "train" / f"dog.{i}.jpg", 1)
    for i in range(1, 6):
        save_image(root / "data" / "test" / f"{i}.jpg", i % 2)
    pd.DataFrame({"id": range(1, 6), "label": 0.5}).to_csv(
        root / "data" / "sample_submission.csv", index=False
    )
    comp = competition(
        root,
        "[data]\nlayout = \"path_regex\"\nlabel_regex = '^(?P<label>cat|dog)\\.\\d+\\.jpg$'\n"
        'image_ext = ".jpg"\n[task]\ntype = "binary"\n[metric]\nname = "log_loss"\n'
        '[submission]\nformat = "probability"\npositive_class = "dog"\n',
    )
    items = read_train_items(comp)
    assert items.set_index("id").loc["dog.3.jpg", "target"] == "dog"
    submission = run_to_submission(comp)
    assert list(submission.columns) == ["id", "label"]
    assert submission["label"].astype(float).between(0, 1).all()


def test_multilabel_columns_grouped_by_patient(tmp_path):
    """RANZCR: StudyInstanceUID, 11 binary columns, PatientID; 11 probability columns submitted."""
    root = tmp_path / "ranzcr"
    rng = np.random.default_rng(0)
    n = 48
    uids = [f"1.2.826.0.1.{i}" for i in range(n)]
    labels = (rng.random((n, len(RANZCR_LABELS))) < 0.35).astype(int)
    table = pd.DataFrame(labels, columns=RANZCR_LABELS)
    table.insert(0, "StudyInstanceUID", uids)
    table["PatientID"] = [f"p{i // 3}" for i in range(n)]  # three studies per patient
    (root / "data").mkdir(parents=True)
    table.to_csv(root / "data" / "train.csv", index=False)
    for i, uid in enumerate(uids):
        save_image(root / "data" / "train" / f"{uid}.jpg", i)
    test_uids = [f"1.2.826.9.{i}" for i in range(4)]
    for i, uid in enumerate(test_uids):
        save_image(root / "data" / "test" / f"{uid}.jpg", i)
    sample = pd.DataFrame(0.0, index=range(4), columns=RANZCR_LABELS)
    sample.insert(0, "StudyInstanceUID", test_uids)
    sample.to_csv(root / "data" / "sample_submission.csv", index=False)
    columns = ", ".join(f'"{c}"' for c in RANZCR_LABELS)
    comp = competition(
        root,
        f'[data]\nid_column = "StudyInstanceUID"\ntarget_columns = [{columns}]\n'
        'image_ext = ".jpg"\n[folds]\ngroup_column = "PatientID"\n'
        '[task]\ntype = "multilabel"\n[metric]\nname = "mean_column_auc"\n'
        '[submission]\nid_column = "StudyInstanceUID"\nformat = "probabilities"\n',
    )
    submission = run_to_submission(comp)
    assert list(submission.columns) == ["StudyInstanceUID", *RANZCR_LABELS]
    assert submission[RANZCR_LABELS].astype(float).stack().between(0, 1).all()
    folds = read_folds(comp)
    assert folds.groupby("group")["fold"].nunique().max() == 1  # no patient in two folds
    report = report_competition(comp, max_images=8)  # the EDA reads multi-label rows too
    assert report["n_classes"] == len(RANZCR_LABELS)
    assert "CVC - Normal" in Path(report["report"]).read_text()


MASK_CLASSES = [
    f"{mask}_{gender}_{age}"
    for mask in ("wear", "incorrect", "not_wear")
    for gender in ("male", "female")
    for age in ("young", "middle", "old")
]


def test_folder_per_person_label_factorised_from_names(tmp_path):
    """Mask wearing: train/images/{id}_{gender}_{race}_{age}/{mask1..5,incorrect_mask,normal};
    18 classes = mask x gender x age band, submitted as ImageID,ans; folds grouped by person."""
    root = tmp_path / "mask"
    person = 0
    for gender in ("male", "female"):
        for age in (20, 45, 60):
            for _ in range(2):
                folder = root / "data" / "train" / "images" / f"{person:06d}_{gender}_Asian_{age}"
                names = [f"mask{k}" for k in range(1, 6)] + ["incorrect_mask", "normal"]
                for k, name in enumerate(names):
                    ext = ("jpg", "png", "jpeg")[k % 3]
                    save_image(folder / f"{name}.{ext}", person * 7 + k)
                person += 1
    test_ids = [f"{i:040x}.jpg" for i in range(5)]
    for i, name in enumerate(test_ids):
        save_image(root / "data" / "eval" / "images" / name, i)
    pd.DataFrame({"ImageID": test_ids, "ans": 0}).to_csv(
        root / "data" / "eval" / "info.csv", index=False
    )
    classes = ", ".join(f'"{c}"' for c in MASK_CLASSES)
    comp = competition(
        root,
        "[data]\n"
        'train_dir = "data/train/images"\ntest_dir = "data/eval/images"\n'
        'sample_submission = "data/eval/info.csv"\nimage_ext = ""\nlayout = "path_regex"\n'
        "label_regex = '^(?P<person>\\d+)_(?P<gender>male|female)_\\w+_(?P<age>\\d+)/"
        "(?P<mask>mask\\d|incorrect_mask|normal)\\.\\w+$'\n"
        'label_template = "{mask}_{gender}_{age}"\n'
        "label_maps = [\n"
        '  { group = "mask", match = "mask\\\\d", to = "wear" },\n'
        '  { group = "mask", match = "incorrect_mask", to = "incorrect" },\n'
        '  { group = "mask", match = "normal", to = "not_wear" },\n]\n'
        'label_bins = [{ group = "age", edges = [30, 60], names = ["young", "middle", "old"] }]\n'
        f"classes = [{classes}]\n"
        "[folds]\ngroup_regex = '^(\\d+)_'\n"
        '[submission]\nid_column = "ImageID"\ntarget_column = "ans"\n',
    )
    items = read_train_items(comp)
    assert len(items) == 12 * 7
    first = items.set_index("id")
    assert first.loc["000000_male_Asian_20/mask3.jpeg", "target"] == "wear_male_young"
    assert first.loc["000005_male_Asian_60/normal.jpg", "target"] == "not_wear_male_old"
    assert (
        first.loc["000003_male_Asian_45/incorrect_mask.jpeg", "target"] == "incorrect_male_middle"
    )
    submission = run_to_submission(comp)
    assert list(submission.columns) == ["ImageID", "ans"]
    assert submission["ans"].astype(int).between(0, 17).all()  # index in the 18 classes
    folds = read_folds(comp)
    assert folds.groupby("group")["fold"].nunique().max() == 1  # no person in two folds
