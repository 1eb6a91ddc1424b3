"""Kaggle datasets and kernels through the official client: `kit kernel push`."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import requests

from kit.platforms.kaggle_client import KaggleError, api, call, failure, http_status

T = TypeVar("T")


def _client_call(ref: str, action: str, kind: str, function: Callable[[], T]) -> T:
    """A client helper that prints and raises ValueError for bad metadata or failed uploads."""
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            return call(ref, action, function, idempotent=False, kind=kind)
        except ValueError as error:
            raise KaggleError(
                f"Kaggle client refused to {action} {kind} '{ref}': {' '.join(str(error).split())}"
            ) from error


def _metadata_id(path: Path) -> str:
    """The "id" of a dataset- or kernel-metadata.json that kit kernel build wrote."""
    try:
        return json.loads(path.read_text())["id"]
    except (OSError, ValueError, KeyError) as error:
        raise KaggleError(
            f"{path}: missing or without an id ({error}); rebuild it with kit kernel build"
        ) from error


def dataset_exists(ref: str) -> bool:
    """True when the dataset "OWNER/SLUG" exists on Kaggle (and you may see it)."""
    kaggle_api = api(ref)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            kaggle_api.dataset_status(ref)
    except requests.HTTPError as error:
        if http_status(error) == 404:
            return False
        raise failure(ref, "read", error, 1, "dataset") from error
    return True


def push_dataset(folder: Path, notes: str = "") -> dict:
    """Create the dataset described by folder/dataset-metadata.json, or add a version to it.

    Uploads every top-level file of folder (sub-folders are not uploaded). Returns ref, url
    and created (False when a new version was added).
    """
    folder = Path(folder)
    ref = _metadata_id(folder / "dataset-metadata.json")
    exists = dataset_exists(ref)
    kaggle_api = api(ref)
    if exists:
        response = _client_call(
            ref,
            "add a version to",
            "dataset",
            lambda: kaggle_api.dataset_create_version(str(folder), notes or "kit", quiet=True),
        )
    else:
        response = _client_call(
            ref, "create", "dataset", lambda: kaggle_api.dataset_create_new(str(folder), quiet=True)
        )
    if response.error:
        raise KaggleError(
            f"Kaggle did not save dataset '{ref}': {' '.join(str(response.error).split())}"
        )
    return {"ref": ref, "url": response.url, "created": not exists}


def push_kernel(folder: Path) -> dict:
    """Push the kernel of folder/kernel-metadata.json; return ref, url and version.

    The client reports most refusals in the response rather than raising; any error or
    source Kaggle could not attach (the kernel would then run without its inputs) is raised.
    """
    folder = Path(folder)
    ref = _metadata_id(folder / "kernel-metadata.json")
    kaggle_api = api(ref)
    response = _client_call(ref, "push", "kernel", lambda: kaggle_api.kernels_push(str(folder)))
    if response.error:
        raise KaggleError(
            f"Kaggle did not save kernel '{ref}': {' '.join(str(response.error).split())}"
        )
    unattached = list(response.invalid_dataset_sources or []) + list(
        response.invalid_competition_sources or []
    )
    if unattached:
        raise KaggleError(
            f"Kaggle saved kernel '{ref}' but could not attach {', '.join(unattached)}: "
            "push the dataset first (kit kernel push does) and check the competition slug"
        )
    return {"ref": ref, "url": response.url, "version": response.version_number}
