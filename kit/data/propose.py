"""`kit new NAME --data PATH`: data already on disk (a course's zip, a manual download) is copied
or linked into data/, and the [data], [task] and [submission] sections are proposed from what is
found there: a CSV whose id column matches the image file names (its target column or 0/1 label
columns, the image extension), or a folder per class; the test folder; sample_submission and the
submission format its values imply.

Every inference is returned with the evidence for it, and the guesses the user must confirm are
listed apart: kit writes them into kit.toml, but only the user knows the competition's rules.
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from kit.errors import DataError
from kit.platforms.archive import safe_extract

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
SAMPLE_ROWS = 2000  # rows of a CSV read to match ids and judge columns


@dataclass
class Proposal:
    """Values for kit.toml ({section: {key: value}}), what they rest on, and what to confirm."""

    values: dict[str, dict] = field(default_factory=dict)
    found: list[str] = field(default_factory=list)  # one line per inference, with its evidence
    confirm: list[str] = field(default_factory=list)  # guesses the user must check

    def set(self, section: str, key: str, value, why: str) -> None:
        self.values.setdefault(section, {})[key] = value
        self.found.append(f"{section}.{key} = {value!r}: {why}")


def bring_data(source: Path, data_dir: Path, *, link: bool = False) -> None:
    """Copy source (a folder, or a .zip) into data_dir; link=True makes data_dir a symlink."""
    source = Path(source).resolve()
    if not source.exists():
        raise DataError(f"--data {source}: not found; give the folder or .zip with the data")
    if data_dir.exists() and any(data_dir.iterdir()):
        raise DataError(f"{data_dir} is not empty: remove it or leave out --data")
    if data_dir.exists():
        data_dir.rmdir()
    if source.is_file():
        if source.suffix.lower() != ".zip":
            raise DataError(f"--data {source}: give a folder or a .zip archive")
        if link:
            raise DataError("--link needs a folder: an archive is always extracted into data/")
        data_dir.mkdir(parents=True)
        safe_extract(source, data_dir)
        _lift_single_folder(data_dir)
    elif link:
        data_dir.symlink_to(source, target_is_directory=True)
    else:
        shutil.copytree(source, data_dir)


def _lift_single_folder(data_dir: Path) -> None:
    """A zip that holds one top folder (course.zip/course/...) is unpacked one level up."""
    entries = [p for p in data_dir.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and entries[0].is_dir():
        inner = entries[0]
        for child in inner.iterdir():
            child.rename(data_dir / child.name)
        inner.rmdir()


def propose_data_section(root: Path, data_dir: Path) -> Proposal:
    """Look at data_dir (under the competition root) and propose kit.toml values."""
    proposal = Proposal()
    rel = lambda path: Path(path).relative_to(root).as_posix()  # noqa: E731
    csvs = sorted(p for p in data_dir.rglob("*.csv") if not p.name.startswith("."))
    folders = _image_folders(data_dir)
    sample = next(
        (p for p in csvs if "sample" in p.name.lower() or "submission" in p.name.lower()), None
    )
    test_dir = next((d for d in folders if d.name.lower().startswith("test")), None)
    train_candidates = [d for d in folders if d != test_dir]
    train_dir = next(
        (d for d in train_candidates if d.name.lower().startswith("train")),
        train_candidates[0] if train_candidates else None,
    )
    if train_dir is None:
        raise DataError(
            f"{data_dir}: no folder of images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))}); "
            "put the training images in data/train/"
        )
    proposal.set("data", "train_dir", rel(train_dir), f"{_count_images(train_dir)} images")
    if test_dir is not None:
        proposal.set("data", "test_dir", rel(test_dir), f"{_count_images(test_dir)} images")
    else:
        proposal.confirm.append("no test folder found: set data.test_dir before `kit predict`")

    tables = [p for p in csvs if p != sample and "test" not in p.name.lower()]
    matched = None
    for csv in sorted(tables, key=lambda p: ("train" not in p.name.lower(), p.name)):
        matched = _match_csv(csv, train_dir)
        if matched:
            break
    classes = None
    if matched:
        csv, id_column, ext, table, share = matched
        proposal.set(
            "data",
            "layout",
            "csv",
            f"{csv.name} names the images ({share:.0%} of ids match a file)",
        )
        proposal.set("data", "train_csv", rel(csv), "the table whose ids match the images")
        proposal.set("data", "id_column", id_column, "its values are the image file names")
        proposal.set("data", "image_ext", ext, "the extension of the matched files")
        classes = _propose_targets(proposal, table, id_column, csv)
    elif _is_folder_per_class(train_dir):
        subfolders = sorted(d.name for d in train_dir.iterdir() if d.is_dir())
        proposal.set(
            "data",
            "layout",
            "folder_per_class",
            f"{train_dir.name}/ holds {len(subfolders)} folders of images",
        )
        proposal.confirm.append(
            f"the classes are the folder names ({_short(subfolders)}); confirm they are labels, "
            "not patients or batches"
        )
        classes = subfolders
    else:
        proposal.confirm.append(
            f"no CSV names the images of {rel(train_dir)} and it has no folder per class: set "
            "data.layout (path_regex with data.label_regex, or csv with data.train_csv)"
        )
    if test_dir is not None and "image_ext" not in proposal.values["data"]:
        suffixes = Counter(
            p.suffix for p in test_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
        )
        ext = suffixes.most_common(1)[0][0]
        proposal.set("data", "image_ext", ext, f"the extension of the files in {test_dir.name}/")
    if sample is not None:
        _propose_submission(proposal, sample, test_dir, classes)
        proposal.set("data", "sample_submission", rel(sample), "its name says sample/submission")
    else:
        proposal.confirm.append(
            "no sample_submission CSV: kit needs one (its ids and order) to write submissions"
        )
    return proposal


def _image_folders(data_dir: Path) -> list[Path]:
    """Folders of images: those holding image files, and folders of class folders (a parent of
    two or more such folders that holds no image itself and whose folders are not train/test)."""
    leaves = sorted(
        {p.parent for p in data_dir.rglob("*") if _is_image(p) and p.parent != data_dir},
        key=lambda p: (len(p.parts), p.as_posix()),
    )
    children: dict[Path, list[Path]] = {}
    for leaf in leaves:
        children.setdefault(leaf.parent, []).append(leaf)
    containers = [
        parent
        for parent, kids in children.items()
        if parent != data_dir
        and len(kids) >= 2
        and not any(_is_image(p) for p in parent.iterdir())
        and not any(k.name.lower().startswith(("train", "test")) for k in kids)
    ]
    found = containers + [leaf for leaf in leaves if leaf.parent not in containers]
    return sorted(found, key=lambda p: (len(p.parts), p.as_posix()))


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _count_images(folder: Path, limit: int | None = None) -> int:
    count = 0
    for path in folder.rglob("*"):
        if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
            count += 1
            if limit and count >= limit:
                break
    return count


def _is_folder_per_class(folder: Path) -> bool:
    subfolders = [d for d in folder.iterdir() if d.is_dir()]
    loose = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    return len(subfolders) >= 2 and not loose


def _match_csv(csv: Path, image_dir: Path):
    """(csv, id column, extension, table, share matched) when a column names image_dir's files."""
    try:
        table = pd.read_csv(csv, dtype=str, nrows=SAMPLE_ROWS)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError):
        return None
    files = [p for p in image_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES]
    stems = {p.relative_to(image_dir).with_suffix("").as_posix(): p.suffix for p in files}
    names = {p.relative_to(image_dir).as_posix(): p.suffix for p in files}
    best = None
    for column in table.columns:
        values = table[column].dropna().astype(str)
        if values.empty:
            continue
        hits = [names.get(v) or stems.get(v) for v in values]
        share = sum(h is not None for h in hits) / len(values)
        if share >= 0.5 and (best is None or share > best[4]):
            ext = Counter(h for h in hits if h).most_common(1)[0][0]
            best = (csv, column, ext, table, share)
    return best


def _propose_targets(proposal: Proposal, table: pd.DataFrame, id_column: str, csv: Path):
    others = [c for c in table.columns if c != id_column]
    binary = [c for c in others if set(table[c].dropna().unique()) <= {"0", "1"}]
    if len(binary) >= 2 and len(binary) >= len(others) - 1:
        proposal.set(
            "data", "target_columns", binary, f"{len(binary)} columns of 0/1 in {csv.name}"
        )
        proposal.set("task", "type", "multilabel", "several 0/1 label columns")
        proposal.set("metric", "name", "mean_column_auc", "a multi-label metric; confirm it")
        proposal.confirm.append(
            "multi-label: check data.target_columns lists exactly the labels, and metric.name"
        )
        return binary
    candidates = sorted(others, key=lambda c: (table[c].nunique(), others.index(c)))
    candidates = [c for c in candidates if 1 < table[c].nunique() <= max(len(table) // 2, 2)]
    if not candidates:
        proposal.confirm.append(f"{csv.name}: no column looks like a label; set data.target_column")
        return None
    target = next(
        (c for c in candidates if c.lower() in ("label", "target", "class")), candidates[0]
    )
    classes = sorted(table[target].dropna().unique())
    proposal.set(
        "data", "target_column", target, f"{len(classes)} distinct values ({_short(classes)})"
    )
    rest = [c for c in candidates if c != target]
    note = f"; other candidates: {', '.join(rest)}" if rest else ""
    proposal.confirm.append(f"the label is column '{target}' of {csv.name}{note}")
    if len(classes) == 2:
        proposal.confirm.append('2 classes: set task.type = "binary" if the metric scores one')
    groupish = [c for c in others if c.lower() in ("patient_id", "patient", "group", "subject")]
    if groupish:
        proposal.confirm.append(
            f"column '{groupish[0]}' looks like a group: set folds.group_column = "
            f'"{groupish[0]}" so its rows share a fold'
        )
    return classes


def _propose_submission(proposal: Proposal, sample: Path, test_dir: Path | None, classes) -> None:
    table = pd.read_csv(sample, dtype=str, nrows=SAMPLE_ROWS)
    id_column = table.columns[0]
    proposal.set("submission", "id_column", id_column, f"the first column of {sample.name}")
    columns = list(table.columns[1:])
    class_names = {str(c) for c in classes or []}
    if len(columns) > 1:
        proposal.set(
            "submission",
            "format",
            "probabilities",
            f"{len(columns)} prediction columns: one per class",
        )
        if class_names and not set(columns) <= class_names:
            proposal.confirm.append(
                f"{sample.name}'s columns ({_short(columns)}) should be the class names"
            )
        return
    if not columns:
        proposal.confirm.append(f"{sample.name} has only an id column: add the prediction column")
        return
    column = columns[0]
    proposal.set("submission", "target_column", column, f"the prediction column of {sample.name}")
    values = table[column].dropna()
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().all() and len(values):
        if (numbers % 1 != 0).any() or (numbers.between(0, 1).all() and len(class_names) == 2):
            proposal.set("submission", "format", "probability", "its values are probabilities")
            proposal.confirm.append(
                "the submission holds one probability: set submission.positive_class"
            )
        else:
            proposal.set("submission", "format", "class_index", "its values are integers")
            proposal.confirm.append(
                "class_index submits a class's position in data.classes; if the labels are "
                'numbers themselves, "class_name" submits them as they are'
            )
    else:
        proposal.set("submission", "format", "class_name", "its values are text")
    if test_dir is not None:
        files = {p.stem for p in test_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES}
        ids = table[id_column].astype(str).map(lambda v: Path(v).stem if Path(v).suffix else v)
        share = ids.isin(files).mean() if len(ids) else 0
        if share < 1:
            proposal.confirm.append(
                f"only {share:.0%} of {sample.name}'s ids name a file in {test_dir.name}/"
            )


def _short(values, limit: int = 5) -> str:
    values = [str(v) for v in values]
    return ", ".join(values[:limit]) + (
        f" (+{len(values) - limit} more)" if len(values) > limit else ""
    )
