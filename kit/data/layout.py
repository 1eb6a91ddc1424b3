"""The competition's tables: training items (id, path, target [, group]) and test items (id, path).

Where the labels are is declared in kit.toml (`data.layout`), never coded:

- "csv": a row of train_csv per image: `<train_dir>/<id><image_ext>` (an id that already ends with
  image_ext is used as is), the class in target_column, or 0/1 columns (target_columns, multilabel).
- "folder_per_class": `<train_dir>/<class>/<file>`; the id is `<class>/<file>`.
- "path_regex": label_regex searched in the path under train_dir (posix, e.g. `cat.12.jpg` or
  `001_female_Asian_45/mask1.jpg`); its named groups, rewritten by label_maps and label_bins, fill
  label_template.

Test items always come from sample_submission's ids, in its order: `<test_dir>/<id><image_ext>`.
"""

from __future__ import annotations

import bisect
import os
import re
from pathlib import Path

import pandas as pd

from kit.choices import Layout, choices
from kit.competition import Competition
from kit.data.images import find_bad_images, set_max_pixels
from kit.errors import ConfigError, DataError, examples
from kit.fileio import count_header_fields
from kit.task import Task, create_task

LAYOUTS = choices(Layout)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
EXAMPLES = 3  # how many offending names an error shows
MAX_COLUMNS = 10_000  # a table with more columns is refused before it is parsed (hostile input)


def _require_data(competition: Competition, path: Path, what: str) -> None:
    if not path.exists():
        raise DataError(f"{what} {path} not found: run `kit download -C {competition.root}` first")


def _sorted_classes(values: pd.Series) -> list:
    unique = values.dropna().unique().tolist()
    return sorted(unique, key=lambda v: (isinstance(v, str), v))


def image_path(folder: Path, image_id: str, ext: str) -> Path:
    """<folder>/<id><ext>, or <folder>/<id> when the id already carries the extension."""
    name = str(image_id)
    if ext and not name.lower().endswith(ext.lower()):
        name += ext
    return folder / name


def read_csv_table(
    path: Path, what: str, fix: str = "download the data again", **kwargs
) -> pd.DataFrame:
    """pd.read_csv of a competition table; an empty, binary or malformed file is a DataError
    naming it (and a header-only one too: a table kit reads must have rows)."""
    try:
        fields = count_header_fields(path)
    except OSError as error:
        raise DataError(f"{what} {path} cannot be read ({error.strerror or error})") from None
    if fields > MAX_COLUMNS:
        raise DataError(
            f"{what} {path} has {fields:,} columns (kit reads at most {MAX_COLUMNS:,}): "
            "is it the right file? fix data.train_csv / data.sample_submission in kit.toml"
        )
    try:
        table = pd.read_csv(path, **kwargs)
    except pd.errors.EmptyDataError:
        raise DataError(f"{what} {path} is empty: {fix}") from None
    except UnicodeDecodeError:
        raise DataError(f"{what} {path} is not UTF-8 text (a binary file?): {fix}") from None
    except (pd.errors.ParserError, ValueError, OverflowError) as error:
        reason = " ".join(str(error).split())[:160]
        raise DataError(f"{what} {path} cannot be parsed ({reason}): {fix}") from None
    if table.empty:
        raise DataError(
            f"{what} {path} has a header and no rows (columns {examples(table.columns, 8)}): {fix}"
        )
    return table


def read_train_items(competition: Competition, check_files: bool = True) -> pd.DataFrame:
    """id, path, target (+ group, + bbox columns) for every training image; check_files=False
    skips looking for each image file of a csv layout (for commands that read no pixels)."""
    data = competition.config.data
    set_max_pixels(data.max_pixels)
    if data.layout not in LAYOUTS:
        raise ConfigError(
            f"data.layout {data.layout!r} is unknown: use one of {', '.join(LAYOUTS)}"
        )
    image_dir = competition.path(data.train_dir)
    if data.layout == "csv":
        items = _csv_items(competition, image_dir, check_files)
    else:
        _require_data(competition, image_dir, "training images folder")
        files = _image_files(image_dir)
        if not files:
            raise DataError(
                f"{image_dir} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        if data.layout == "folder_per_class":
            items = _folder_items(image_dir, files)
        else:
            items = _regex_items(competition, image_dir, files)
    if items["id"].duplicated().any():
        dup = items.loc[items["id"].duplicated(), "id"]
        raise DataError(
            f"{competition.path(data.train_csv)}: duplicate ids such as {examples(dup)}"
        )
    group_regex = competition.config.folds.group_regex
    if group_regex:
        items["group"] = _regex_groups(group_regex, image_dir, items["path"])
    return items


def _csv_items(competition: Competition, image_dir: Path, check_files: bool = True) -> pd.DataFrame:
    data, folds = competition.config.data, competition.config.folds
    csv = competition.path(data.train_csv)
    _require_data(competition, csv, "training table")
    table = read_csv_table(csv, "training table", dtype={data.id_column: str})
    targets = data.target_columns or [data.target_column]
    wanted = [data.id_column, *targets, *data.bbox_columns]
    if folds.group_column:
        wanted.append(folds.group_column)
    missing = [c for c in wanted if c not in table.columns]
    if missing:
        raise DataError(
            f"{csv} lacks column(s) {examples(missing, 8)} (expected {', '.join(wanted)}; it "
            f"has {examples(table.columns, 8)}): fix data.id_column / data.target_column / "
            "data.target_columns / folds.group_column in kit.toml"
        )
    _require_data(competition, image_dir, "training images folder")
    ids = table[data.id_column].astype(str)
    items = pd.DataFrame(
        {"id": ids, "path": [str(image_path(image_dir, i, data.image_ext)) for i in ids]}
    )
    if data.target_columns:
        values = table[data.target_columns]
        if not values.isin([0, 1]).all().all():
            bad = [c for c in data.target_columns if not values[c].isin([0, 1]).all()]
            raise DataError(f"{csv}: target column(s) {', '.join(bad)} must hold only 0 or 1")
        items["target"] = [list(row) for row in values.astype(int).itertuples(index=False)]
    else:
        items["target"] = table[data.target_column]
        empty = items["target"].isna()
        if empty.any():
            raise DataError(
                f"{csv}: {int(empty.sum())} row(s) have no {data.target_column}, e.g. id "
                f"{examples(ids[empty])}: fill in the labels or remove the rows"
            )
    if folds.group_column:
        items["group"] = table[folds.group_column].astype(str)
    for column in data.bbox_columns:
        items[column] = pd.to_numeric(table[column], errors="raise")
    if check_files:
        _check_files(items, csv, image_dir, data.image_ext)
    return items


def _image_files(folder: Path) -> list[Path]:
    # hidden files (._x.jpg from macOS archives) are not images of the competition
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )
    undecodable = [p for p in files if not _utf8(str(p.relative_to(folder)))]
    if undecodable:  # ids and tables are UTF-8 text: such a name cannot be written to them
        shown = [repr(os.fsencode(p.relative_to(folder)))[2:-1] for p in undecodable]
        raise DataError(
            f"{folder}: {len(undecodable)} file name(s) are not UTF-8, e.g. {examples(shown)}: "
            "rename them (e.g. `convmv -f latin1 -t utf8 -r --notest DIR`)"
        )
    return files


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _folder_items(image_dir: Path, files: list[Path]) -> pd.DataFrame:
    relative = [p.relative_to(image_dir) for p in files]
    loose = [str(r) for r in relative if len(r.parts) != 2]
    if loose:
        raise DataError(
            f"{image_dir}: layout folder_per_class wants <class>/<file>, found {examples(loose)}; "
            "move the files or set data.layout"
        )
    return pd.DataFrame(
        {
            "id": [r.as_posix() for r in relative],
            "path": [str(p) for p in files],
            "target": [r.parts[0] for r in relative],
        }
    )


def _regex_items(competition: Competition, image_dir: Path, files: list[Path]) -> pd.DataFrame:
    data = competition.config.data
    if not data.label_regex:
        raise ConfigError('data.layout "path_regex" needs data.label_regex (named groups)')
    pattern = _compile(data.label_regex, "data.label_regex")
    relative = [p.relative_to(image_dir).as_posix() for p in files]
    matches = [pattern.search(r) for r in relative]
    unmatched = [r for r, m in zip(relative, matches, strict=True) if m is None]
    if len(unmatched) == len(relative):
        raise DataError(
            f"data.label_regex {data.label_regex!r} matches no file under {image_dir} "
            f"(paths look like {examples(relative)}): fix the regex in kit.toml"
        )
    if unmatched:
        raise DataError(
            f"data.label_regex matches no label in {len(unmatched)} of {len(relative)} files "
            f"under {image_dir}, e.g. {examples(unmatched)}: widen the regex or remove the files"
        )
    labels = [_label(m.groupdict(), data) for m in matches]
    return pd.DataFrame({"id": relative, "path": [str(p) for p in files], "target": labels})


def _compile(regex: str, field: str) -> re.Pattern:
    try:
        return re.compile(regex)
    except re.error as error:
        raise ConfigError(f"{field} {regex!r} is not a valid regex ({error})") from None


def _label(groups: dict, data) -> str:
    values = dict(groups)
    for rule in data.label_maps:
        name, match, to = rule.get("group"), rule.get("match"), rule.get("to")
        if name not in values or match is None or to is None:
            raise ConfigError(
                f"data.label_maps entry {rule}: needs group (a named group of label_regex), "
                "match (a regex) and to"
            )
        if values[name] is not None and re.fullmatch(str(match), values[name]):
            values[name] = str(to)
    for rule in data.label_bins:
        name, edges, names = rule.get("group"), rule.get("edges"), rule.get("names")
        if name not in values or not edges or not names or len(names) != len(edges) + 1:
            raise ConfigError(
                f"data.label_bins entry {rule}: needs group, edges and len(edges) + 1 names"
            )
        try:
            number = float(values[name])
        except (TypeError, ValueError):
            raise DataError(
                f"data.label_bins: group {name} is {values[name]!r}, not a number"
            ) from None
        values[name] = str(names[bisect.bisect_right(edges, number)])
    try:
        return data.label_template.format(**values)
    except (KeyError, IndexError) as error:
        raise ConfigError(
            f"data.label_template {data.label_template!r} names {error}, which label_regex "
            f"has no named group for (groups: {', '.join(values)})"
        ) from None


def _regex_groups(regex: str, image_dir: Path, paths: pd.Series) -> list[str]:
    pattern = _compile(regex, "folds.group_regex")
    relative = [_relative(Path(p), image_dir) for p in paths]
    matches = [pattern.search(r) for r in relative]
    unmatched = [r for r, m in zip(relative, matches, strict=True) if m is None]
    if unmatched:
        what = "no file" if len(unmatched) == len(relative) else f"{len(unmatched)} file(s)"
        raise DataError(
            f"folds.group_regex {regex!r} matches {what} under {image_dir}, e.g. "
            f"{examples(unmatched)}: fix the regex so every path yields a group"
        )
    return [m.group(1) if m.groups() else m.group(0) for m in matches]


def _relative(path: Path, folder: Path) -> str:
    try:
        return path.relative_to(folder).as_posix()
    except ValueError:
        return path.as_posix()


def read_test_items(competition: Competition) -> pd.DataFrame:
    """id, path for every test image, in sample_submission's order."""
    data, submission = competition.config.data, competition.config.submission
    set_max_pixels(data.max_pixels)
    sample_csv = competition.path(data.sample_submission)
    _require_data(competition, sample_csv, "sample submission")
    sample = read_csv_table(sample_csv, "sample submission", dtype={submission.id_column: str})
    if submission.id_column not in sample.columns:
        raise DataError(
            f"{sample_csv} has no column '{submission.id_column}' (it has "
            f"{examples(sample.columns, 8)}): set submission.id_column in kit.toml"
        )
    image_dir = competition.path(data.test_dir)
    _require_data(competition, image_dir, "test images folder")
    ids = sample[submission.id_column].astype(str)
    items = pd.DataFrame(
        {"id": ids, "path": [str(image_path(image_dir, i, data.image_ext)) for i in ids]}
    )
    _check_files(items, sample_csv, image_dir, data.image_ext)
    bad = find_bad_images(items["path"])
    if bad:  # every test image needs a prediction, so these cannot be skipped
        shown = "; ".join(f"{Path(path).name} ({why})" for path, why in list(bad.items())[:3])
        more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
        raise DataError(
            f"{image_dir}: {len(bad)} test image(s) cannot be decoded: {shown}{more}; "
            "download the data again"
        )
    return items


def class_list(items: pd.DataFrame) -> list:
    """The sorted class labels; their order fixes the p_<class> columns of every prediction.

    Multi-label rows (0/1 lists) give their positions; competition_task names them.
    """
    first = items["target"].iloc[0] if len(items) else None
    if isinstance(first, (list, tuple)):
        return list(range(len(first)))
    return _sorted_classes(items["target"])


def competition_task(competition: Competition, items: pd.DataFrame) -> tuple[pd.DataFrame, Task]:
    """The task of the training items, with targets as Task.encode reads them.

    data.classes fixes the class order (and so class_index); multilabel takes its labels from
    data.target_columns.
    """
    data = competition.config.data
    task = create_task(
        competition.config.task.type,
        items["target"],
        label_columns=data.target_columns,
        classes=data.classes,
    )
    if data.classes:  # data.classes are text: targets are compared as text
        items = items.assign(target=items["target"].astype(str))
    return items, task


def _check_files(items: pd.DataFrame, table: Path, image_dir: Path, ext: str) -> None:
    exists = [Path(p).exists() for p in items["path"]]
    if all(exists):
        return
    missing = items.loc[[not e for e in exists], "id"].tolist()
    suffixes = sorted({p.suffix for p in image_dir.iterdir() if p.is_file()})[:5]
    found = f"the folder holds {', '.join(suffixes)} files" if suffixes else "the folder is empty"
    raise DataError(
        f"{table}: {len(missing)} id(s) match no file in {image_dir} as <id>{ext}, e.g. "
        f"{examples(missing)} ({found}): fix data.image_ext or the image folders in kit.toml"
    )
