"""Checks that a fold assignment cannot leak: no file, image or group on both sides of a split."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
from PIL import Image

from kit.errors import DataError, examples

# A leak report names a few examples and counts the rest, so one bad folds.csv stays readable.
MAX_EXAMPLES = 3


def hash_bytes(data: bytes) -> str:
    """The content hash kit uses to call two images the same file."""
    # 16 bytes of blake2b: far faster than sha256, and collisions are out of reach for any data set.
    return hashlib.blake2b(data, digest_size=16).hexdigest()


HASH_THREADS = 8  # reading and blake2b both release the GIL, so threads hash in parallel


def _hash_file(path: str) -> str:
    try:
        with open(path, "rb") as file:
            return hash_bytes(file.read())
    except OSError as error:
        raise DataError(
            f"{path}: cannot read ({error.strerror}); restore the file or drop its row"
        ) from None


def file_hashes(paths: Iterable[str]) -> list[str]:
    """Content hash of each file, in the order given (files hashed in parallel threads)."""
    paths = list(paths)
    if len(paths) < 2 * HASH_THREADS:
        return [_hash_file(p) for p in paths]
    with ThreadPoolExecutor(max_workers=HASH_THREADS) as pool:
        return list(pool.map(_hash_file, paths, chunksize=64))


def audit_folds(items: pd.DataFrame, n_splits: int | None = None) -> list[str]:
    """One line per problem with items' `fold` column; an empty list means the split is clean."""
    missing = [c for c in ("id", "path", "target", "fold") if c not in items.columns]
    if missing:
        raise DataError(f"fold table lacks column(s) {', '.join(missing)}; run `kit folds` first")
    folds = pd.to_numeric(items["fold"], errors="coerce")
    problems = _fold_index_problems(items, folds, n_splits)
    # Rows without a usable fold cannot leak across folds; leave them out of the checks below.
    usable = items.loc[folds.notna() & (folds == folds.round())].copy()
    usable["fold"] = folds[usable.index].astype(int)
    usable["path"] = [os.path.normpath(p) for p in usable["path"]]
    problems += _same_path_problems(usable)
    problems += _same_bytes_problems(usable)
    if "group" in usable.columns:
        problems += _same_group_problems(usable)
    problems += _missing_class_problems(usable)
    return problems


def _fold_index_problems(items: pd.DataFrame, folds: pd.Series, n_splits: int | None) -> list[str]:
    problems = []
    not_integer = folds.isna() | (folds != folds.round())
    if not_integer.any():
        problems.append(
            f"{int(not_integer.sum())} row(s) have no integer fold, e.g. ids "
            f"{examples(items.loc[not_integer, 'id'])}; give every row a fold"
        )
    present = set(folds[~not_integer].astype(int))
    if n_splits is None:
        # Negative indexes are reported as outside the range, so they do not widen it.
        n_splits = max(present, default=-1) + 1
    outside = sorted(f for f in present if not 0 <= f < n_splits)
    if outside:
        problems.append(
            f"fold index(es) {', '.join(map(str, outside))} outside 0..{n_splits - 1}; "
            f"number folds 0..{n_splits - 1}"
        )
    empty = [f for f in range(n_splits) if f not in present]
    if empty:
        problems.append(
            f"fold(s) {', '.join(map(str, empty))} of 0..{n_splits - 1} have no rows; "
            "rewrite folds.csv or lower the number of folds"
        )
    return problems


def _spread_problems(items: pd.DataFrame, column: str, what: str, fix: str) -> list[str]:
    """One line when values of `column` (a path, a group) stand in more than one fold."""
    spread = items.groupby(column)["fold"].nunique()
    leaked = spread[spread > 1].index
    if len(leaked) == 0:
        return []
    shown = [
        f"{value} in folds {_fold_list(items.loc[items[column] == value, 'fold'])}"
        for value in leaked[:MAX_EXAMPLES]
    ]
    return [f"{len(leaked)} {what} (leak), e.g. {'; '.join(shown)}; {fix}"]


def _same_path_problems(items: pd.DataFrame) -> list[str]:
    return _spread_problems(
        items, "path", "file(s) listed in more than one fold", "list each file once"
    )


def _same_bytes_problems(items: pd.DataFrame) -> list[str]:
    # One row per file: a file listed twice is the same-path problem, not a second copy of it.
    files = items.drop_duplicates("path").copy()
    files["hash"] = file_hashes(files["path"])
    # one vectorised pass over the rows; only the leaking groups (few) are looked at one by one
    spread = files.groupby("hash", sort=False)["fold"].nunique()
    leaking = spread.index[spread > 1]
    if len(leaking) == 0:
        return []
    copies = files[files["hash"].isin(leaking[:MAX_EXAMPLES])]
    leaked = [rows for _, rows in copies.groupby("hash", sort=False)]
    leaked += [None] * (len(leaking) - len(leaked))  # counted, not shown
    shown = [
        " = ".join(f"{row.id} (fold {row.fold})" for row in rows.itertuples())
        for rows in leaked[:MAX_EXAMPLES]
        if rows is not None
    ]
    return [
        f"{len(leaked)} set(s) of byte-identical images span more than one fold (leak), e.g. "
        f"{'; '.join(shown)}; give copies one group so they share a fold, or drop the copies"
    ]


def _same_group_problems(items: pd.DataFrame) -> list[str]:
    grouped = items.loc[items["group"].notna()]
    fix = "split with a group-aware splitter"
    return _spread_problems(grouped, "group", "group(s) span more than one fold", fix)


def _missing_class_problems(items: pd.DataFrame) -> list[str]:
    # Multi-label rows hold a list of classes; each class in it counts as present.
    labels = items[["fold", "target"]].explode("target").dropna(subset=["target"])
    all_classes = _sorted(labels["target"].unique())
    problems = []
    for fold, rows in labels.groupby("fold"):
        present = set(rows["target"])  # once per fold: O(rows + classes), not O(rows x classes)
        absent = [c for c in all_classes if c not in present]
        if absent:
            problems.append(
                f"fold {fold}: validation part has no example of class(es) "
                f"{examples(absent, 8)}; stratify the split or use fewer folds"
            )
    return problems


def _fold_list(folds: pd.Series) -> str:
    return ", ".join(str(f) for f in sorted(set(folds)))


def _sorted(values: Sequence) -> list:
    # Integers before strings, so mixed label types still sort.
    return sorted(values, key=lambda v: (isinstance(v, str), v))


# -------------------------------------------------------------------------- duplicate grouping

# dHash: 8 x 8 brightness gradients of the image shrunk to 9 x 8 grey pixels, as 64 bits. Re-saved,
# rescaled or slightly recompressed copies land within a few bits of each other.
NEAR_DUPLICATE_BITS = 4  # Hamming distance at or below which two images are near-duplicates


def perceptual_hash(path: str) -> int | None:
    """The 64-bit dHash of an image file; None when it cannot be decoded."""
    try:
        with Image.open(path) as image:
            image.draft("L", (64, 64))  # JPEGs decode at a fraction of their size
            grey = np.asarray(image.convert("L").resize((9, 8), Image.BILINEAR), dtype=np.int16)
    except Exception:  # an undecodable file is reported elsewhere; it has no neighbours here
        return None
    bits = (grey[:, 1:] > grey[:, :-1]).reshape(-1)
    return int(sum(1 << i for i, bit in enumerate(bits) if bit))


def near_duplicate_pairs(
    hashes: Sequence[int | None], max_bits: int = NEAR_DUPLICATE_BITS
) -> list[tuple[int, int]]:
    """Index pairs whose hashes differ in at most max_bits bits.

    Pigeonhole: split the 64 bits into max_bits + 1 bands; two hashes within max_bits bits agree
    exactly on at least one band, so only rows sharing a band value are compared.
    """
    bands = max_bits + 1
    width = -(-64 // bands)
    pairs = set()
    for band in range(bands):
        buckets: dict[int, list[int]] = {}
        for row, value in enumerate(hashes):
            if value is not None:
                buckets.setdefault((value >> (band * width)) & ((1 << width) - 1), []).append(row)
        for rows in buckets.values():
            for i, a in enumerate(rows):
                for b in rows[i + 1 :]:
                    if (a, b) not in pairs and (hashes[a] ^ hashes[b]).bit_count() <= max_bits:
                        pairs.add((a, b))
    return sorted(pairs)


def duplicate_groups(
    paths: Sequence[str],
    declared: Sequence | None = None,
    *,
    names: Sequence[str] | None = None,
    near: bool = False,
) -> tuple[list[str], dict]:
    """A group per row that joins byte-identical files (and with near=True perceptual-hash
    neighbours) with each other and with their declared groups (a patient, a person).

    Returns the group of each row (its declared name; for a group without one, the name of its
    first row in `names`, default the paths; a merged group joins its declared names by '+') and
    counts of what was merged.
    """
    n = len(paths)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(a: int, b: int) -> bool:
        ra, rb = find(a), find(b)
        if ra == rb:
            return False
        parent[max(ra, rb)] = min(ra, rb)
        return True

    first_of: dict = {}
    if declared is not None:
        for row, group in enumerate(declared):
            if group is not None and group == group:  # NaN: no declared group
                union(first_of.setdefault(group, row), row)
    joined_by_bytes = joined_by_near = 0
    first_of_hash: dict[str, int] = {}
    for row, digest in enumerate(file_hashes(paths)):
        joined_by_bytes += union(first_of_hash.setdefault(digest, row), row)
    if near:
        for a, b in near_duplicate_pairs([perceptual_hash(p) for p in paths]):
            joined_by_near += union(a, b)
    roots = [find(i) for i in range(n)]
    row_names = [str(v) for v in (names if names is not None else paths)]
    members: dict[int, set] = {}
    for row, root in enumerate(roots):
        name = declared[row] if declared is not None else None
        members.setdefault(root, set())
        if name is not None and name == name:
            members[root].add(str(name))
    names = {
        root: "+".join(sorted(found)) if found else row_names[root]
        for root, found in members.items()
    }
    declared_count = len(first_of)
    merged_declared = (
        declared_count - sum(1 for found in members.values() if found) if declared_count else 0
    )
    counts = {
        "byte_identical_joined": joined_by_bytes,  # rows joined to another row by their bytes
        "near_duplicate_joined": joined_by_near,  # rows joined by perceptual-hash neighbours
        "declared_groups_merged": merged_declared,  # declared groups folded into another one
        "groups": len(members),
    }
    return [names[root] for root in roots], counts
