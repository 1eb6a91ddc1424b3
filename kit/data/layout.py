"""The competition's tables: training items (id, path, target) and test items (id, path)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from kit.competition import Competition
from kit.errors import DataError


def _require_data(competition: Competition, path: Path, what: str) -> None:
    if not path.exists():
        raise DataError(f"{what} {path} not found: run `kit download -C {competition.root}` first")


def _sorted_classes(values: pd.Series) -> list:
    unique = values.unique().tolist()
    return sorted(unique, key=lambda v: (isinstance(v, str), v))


def read_train_items(competition: Competition) -> pd.DataFrame:
    """id, path, target for every training image, in train_csv's order."""
    data = competition.config.data
    csv = competition.path(data.train_csv)
    _require_data(competition, csv, "training table")
    table = pd.read_csv(csv, dtype={data.id_column: str})
    missing = [c for c in (data.id_column, data.target_column) if c not in table.columns]
    if missing:
        raise DataError(
            f"{csv} lacks column(s) {', '.join(missing)} (has {', '.join(table.columns)}): "
            "set data.id_column / data.target_column in kit.toml"
        )
    image_dir = competition.path(data.train_dir)
    _require_data(competition, image_dir, "training images folder")
    items = pd.DataFrame(
        {
            "id": table[data.id_column].astype(str),
            "path": [str(image_dir / f"{i}{data.image_ext}") for i in table[data.id_column]],
            "target": table[data.target_column],
        }
    )
    _check_files(items, csv)
    if items["id"].duplicated().any():
        dup = items.loc[items["id"].duplicated(), "id"].head(3).tolist()
        raise DataError(f"{csv}: duplicate ids such as {', '.join(dup)}; each image once")
    return items


def read_test_items(competition: Competition) -> pd.DataFrame:
    """id, path for every test image, in sample_submission's order."""
    data, submission = competition.config.data, competition.config.submission
    sample_csv = competition.path(data.sample_submission)
    _require_data(competition, sample_csv, "sample submission")
    sample = pd.read_csv(sample_csv, dtype={submission.id_column: str})
    if submission.id_column not in sample.columns:
        raise DataError(
            f"{sample_csv} has no column '{submission.id_column}': set submission.id_column"
        )
    image_dir = competition.path(data.test_dir)
    _require_data(competition, image_dir, "test images folder")
    ids = sample[submission.id_column].astype(str)
    items = pd.DataFrame(
        {"id": ids, "path": [str(image_dir / f"{i}{data.image_ext}") for i in ids]}
    )
    _check_files(items, sample_csv)
    return items


def class_list(items: pd.DataFrame) -> list:
    """The sorted class labels; their order fixes the p_<class> columns of every prediction."""
    return _sorted_classes(items["target"])


def _check_files(items: pd.DataFrame, table: Path) -> None:
    missing = [p for p in items["path"] if not Path(p).exists()]
    if missing:
        examples = ", ".join(Path(p).name for p in missing[:3])
        raise DataError(
            f"{table}: {len(missing)} listed image(s) not found, e.g. {examples}; "
            "check data.image_ext and the image folders in kit.toml"
        )
