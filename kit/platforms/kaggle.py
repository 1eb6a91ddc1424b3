"""Kaggle competitions through the official client: data, submissions, leaderboard, notebooks.

With kit/platforms/kaggle_client.py (credentials, the API object, the one retry policy) and
kit/platforms/kaggle_kernels.py (datasets and kernels), the only modules of kit that import
`kaggle` (and `kagglesdk`), always inside functions.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from kit.fileio import write_json
from kit.platforms import downloaded
from kit.platforms.archive import safe_extract
from kit.platforms.kaggle_client import (
    KaggleError,
    api,
    call,
    failure,
    http_status,
    is_transient,
    retrying,
    unreachable,
)

PAGE_SIZE = 100  # rows asked per page of a listing
MAX_PAGES = 50  # listings stop after this many pages (5,000 rows)
MANIFEST_NAME = ".kit-download.json"  # in dest: what the last download extracted, and from what
PARTIAL_DIR = ".kit-partial"  # in dest: the archive while it downloads; kept to resume a cut


def _pages(slug: str, action: str, fetch: Callable[[str], Any], items: str) -> Iterator[Any]:
    """Items of a paged listing; fetch(page_token) returns one page."""
    token = ""
    for _ in range(MAX_PAGES):
        page = call(slug, action, lambda token=token: fetch(token))
        yield from getattr(page, items) or []
        token = page.next_page_token
        if not token:
            return


def _iso(moment) -> str | None:
    return moment.isoformat() if moment is not None else None


def _score(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


# ------------------------------------------------------------------------------ data
def list_files(slug: str) -> list[dict]:
    """The competition's data files: name, size (bytes), creation date (ISO)."""
    from kagglesdk.competitions.types.competition_api_service import ApiListDataFilesRequest

    kaggle_api = api(slug)
    with kaggle_api.build_kaggle_client() as client:

        def fetch(token: str):
            request = ApiListDataFilesRequest()
            request.competition_name, request.page_size, request.page_token = slug, PAGE_SIZE, token
            return client.competitions.competition_api_client.list_data_files(request)

        return [
            {"name": f.name, "size": f.total_bytes, "creation_date": _iso(f.creation_date)}
            for f in _pages(slug, "list the files of", fetch, "files")
        ]


def _identity(response) -> dict:
    """What identifies one version of the data archive, from its response headers."""
    length = response.headers.get("Content-Length")
    return {
        "size": int(length) if length else None,
        "last_modified": response.headers.get("Last-Modified"),
        "etag": response.headers.get("ETag"),
    }


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _is_current(manifest: dict, identity: dict, dest: Path) -> bool:
    """True when dest holds, whole, what the archive with this identity would extract."""
    previous = manifest.get("archive") or {}
    if identity["size"] is None or previous.get("size") != identity["size"]:
        return False
    if identity["etag"] and previous.get("etag"):
        same = identity["etag"] == previous["etag"]
    else:
        modified = identity["last_modified"]
        same = bool(modified) and modified == previous.get("last_modified")
    files = manifest.get("files") or {}
    return same and all(
        (dest / name).is_file() and (dest / name).stat().st_size == size
        for name, size in files.items()
    )


def download(slug: str, dest: Path, *, force: bool = False, progress: bool = True) -> list[Path]:
    """Download and safely extract the competition's data into dest; return the files written.

    Skips the download (returns []) when dest already holds the current version, judged by
    the archive's size and ETag/Last-Modified against dest/.kit-download.json. The archive
    downloads into dest/.kit-partial/; a cut download resumes from there (the client sends a
    Range request once it has proved the partial file belongs to the same archive).
    """
    from kagglesdk.competitions.types.competition_api_service import ApiDownloadDataFilesRequest

    dest = Path(dest)
    manifest_path = dest / MANIFEST_NAME
    manifest = _read_manifest(manifest_path)
    archive = dest / PARTIAL_DIR / f"{slug}.zip"
    action = "download the data of"
    kaggle_api = api(slug)
    with kaggle_api.build_kaggle_client() as client:

        def open_archive():
            request = ApiDownloadDataFilesRequest()
            request.competition_name = slug
            # Follows Kaggle's redirect to the archive; the body streams, unread until needed.
            return client.competitions.competition_api_client.download_data_files(request)

        def fetch(attempt: int):
            response = open_archive()
            try:
                identity = _identity(response)
                if attempt == 0 and not force and _is_current(manifest, identity, dest):
                    return None
                # max_retries=0: kit retries with its own (short, configurable) delays; the
                # client's resume logic still carries a cut download across the attempts.
                kaggle_api.download_file(
                    response,
                    str(archive),
                    client.http_client(),
                    quiet=not progress,
                    resume=True,
                    max_retries=0,
                )
                return identity
            finally:
                response.close()

        def retryable(error: BaseException) -> bool:
            # a cut connection, a short file or disk trouble: the next try resumes the archive
            return is_transient(error) or (
                not http_status(error) and isinstance(error, (OSError, ValueError))
            )

        def give_up(error: BaseException, tries: int) -> BaseException | None:
            if http_status(error):
                return failure(slug, action, error, tries)
            if isinstance(error, (OSError, ValueError)):
                return KaggleError(
                    f"the download of '{slug}' failed after {tries} tries "
                    f"({type(error).__name__}); run again to resume from {archive}"
                )
            return None

        identity = retrying(fetch, retryable=retryable, give_up=give_up)
        if identity is None:
            return []

    written = safe_extract(archive, dest)
    files = {path.relative_to(dest).as_posix(): path.stat().st_size for path in written}
    for stale in set(manifest.get("files") or {}) - set(files):  # gone from the new version
        with contextlib.suppress(OSError):
            (dest / stale).unlink()
    write_json(manifest_path, {"slug": slug, "archive": identity, "files": files})
    shutil.rmtree(dest / PARTIAL_DIR, ignore_errors=True)
    return written


# ------------------------------------------------------------------------------ submissions
def _submission_row(submission) -> dict:
    return {
        "ref": submission.ref,
        "date": _iso(submission.date),
        "file_name": submission.file_name,
        "description": submission.description,
        "status": submission.status.name.lower(),
        "public_score": _score(submission.public_score),
        "private_score": _score(submission.private_score),
        "error": submission.error_description,
    }


def _list_submissions(client, slug: str, max_pages: int = MAX_PAGES) -> list[Any]:
    from kagglesdk.competitions.types.competition_api_service import ApiListSubmissionsRequest

    def fetch(token: str):
        request = ApiListSubmissionsRequest()
        request.competition_name, request.page_size, request.page_token = slug, PAGE_SIZE, token
        return client.competitions.competition_api_client.list_submissions(request)

    pages = _pages(slug, "list your submissions to", fetch, "submissions")
    rows = []
    for submission in pages:  # newest first
        rows.append(submission)
        if len(rows) >= max_pages * PAGE_SIZE:
            break
    return rows


def submissions(slug: str) -> list[dict]:
    """Your submissions, newest first: ref, date, description, status, public score, ..."""
    kaggle_api = api(slug)
    with kaggle_api.build_kaggle_client() as client:
        return [_submission_row(s) for s in _list_submissions(client, slug)]


def _upload(kaggle_api, client, slug: str, file: Path):
    """Steps 1 and 2 of a submission: ask for an upload URL, PUT the file there.

    Done here rather than through the client's competition_submit, which reports a failed
    upload as a returned message and would hide which step failed; the steps, request types
    and upload code are the client's own.
    """
    from kaggle.models.kaggle_models_extended import ResumableUploadResult
    from kagglesdk.competitions.types.competition_api_service import (
        ApiStartSubmissionUploadRequest,
    )

    request = ApiStartSubmissionUploadRequest()
    request.competition_name = slug
    request.file_name = file.name
    request.content_length = file.stat().st_size
    request.last_modified_epoch_seconds = int(file.stat().st_mtime)

    class Incomplete(Exception):
        """The client reported a transient upload failure: start afresh."""

    def attempt(_: int):
        started = client.competitions.competition_api_client.start_submission_upload(request)
        with contextlib.redirect_stdout(io.StringIO()):  # the client prints upload errors
            result = kaggle_api.upload_complete(str(file), started.create_url, quiet=True)
        if result == ResumableUploadResult.COMPLETE:
            return started
        raise Incomplete() if result == ResumableUploadResult.INCOMPLETE else ValueError(result)

    def give_up(error: BaseException, tries: int) -> BaseException | None:
        if http_status(error):
            return failure(slug, "start an upload to", error, tries)
        if is_transient(error):
            return unreachable(slug, "start an upload to", error, tries)
        if isinstance(error, (Incomplete, ValueError)):
            return KaggleError(
                f"{file}: Kaggle did not accept the upload, so nothing was submitted to "
                f"'{slug}'; check the file and run again"
            )
        return None

    return retrying(
        attempt,
        retryable=lambda error: isinstance(error, Incomplete) or is_transient(error),
        give_up=give_up,
    )


def submit(
    slug: str,
    file: Path,
    message: str,
    *,
    wait: bool = False,
    poll_seconds: float = 5,
    timeout: float = 600,
) -> dict:
    """Submit file to the competition; with wait, poll until scored and include the score."""
    from kagglesdk.competitions.types.competition_api_service import ApiCreateSubmissionRequest

    file = Path(file)
    if not file.is_file():
        raise KaggleError(f"{file}: no such file to submit; write the submission first")
    kaggle_api = api(slug)
    with kaggle_api.build_kaggle_client() as client:
        started = _upload(kaggle_api, client, slug, file)
        request = ApiCreateSubmissionRequest()
        request.competition_name, request.blob_file_tokens = slug, started.token
        request.submission_description = message
        created = _create(client, slug, "submit to", "create_submission", request)
        return _accepted(client, slug, created, message, wait, poll_seconds, timeout)


def _create(client, slug: str, what: str, method: str, request):
    """Create a submission (a file or a notebook) with one call, never retried: a retry after a
    5xx could create a second submission and use up another of the day's allowance."""
    service = client.competitions.competition_api_client
    return call(slug, what, lambda: getattr(service, method)(request), idempotent=False)


def _accepted(
    client,
    slug: str,
    created,
    message: str,
    wait: bool,
    poll_seconds: float,
    timeout: float,
    **extra,
) -> dict:
    """What kit returns for a submission Kaggle created; with wait, once it is scored."""
    result = {
        "ref": created.ref,
        "message": created.message,
        "status": "pending",
        "public_score": None,
        **extra,
    }
    if wait:
        result.update(_wait_for_score(client, slug, created.ref, message, poll_seconds, timeout))
    return result


def _wait_for_score(client, slug: str, ref: int, message: str, poll_seconds: float, timeout: float):
    """Poll the submissions list until submission ref (or, lacking a ref, ours) is scored."""
    deadline = time.monotonic() + timeout
    while True:
        listed = _list_submissions(client, slug, max_pages=1)
        # Kaggle returns the new ref; should it not, the newest submission with our message.
        mine = [s for s in listed if (s.ref == ref if ref else s.description == message)]
        if mine:
            row = _submission_row(mine[0])
            if row["status"] == "complete":
                return row
            if row["status"] == "error":
                raise KaggleError(
                    f"Kaggle could not score submission {row['ref']} to '{slug}': "
                    f"{' '.join((row['error'] or 'no reason given').split())}"
                )
        if time.monotonic() + poll_seconds > deadline:
            raise KaggleError(
                f"submission {ref} to '{slug}' is still being scored after {timeout:g} s; "
                f"see its score later with: kaggle competitions submissions {slug}"
            )
        time.sleep(poll_seconds)


# ------------------------------------------------------------------------------ leaderboard
def leaderboard(slug: str, top: int = 20) -> list[dict]:
    """The public leaderboard's first top rows, plus your own row below them when found.

    Rows: rank, team, score, date, you (True on your team's row). Your team is the team
    named on your submissions; the search for it stops after MAX_PAGES pages.
    """
    from kagglesdk.competitions.types.competition_api_service import ApiGetLeaderboardRequest

    kaggle_api = api(slug)
    with kaggle_api.build_kaggle_client() as client:
        try:  # your team's name is on your submissions; the board itself needs none
            mine = _list_submissions(client, slug, max_pages=1)
        except KaggleError:
            mine = []
        your_team = next((s.team_name for s in mine if s.team_name), None)

        def fetch(token: str):
            request = ApiGetLeaderboardRequest()
            request.competition_name, request.page_size, request.page_token = slug, PAGE_SIZE, token
            return client.competitions.competition_api_client.get_leaderboard(request)

        rows: list[dict] = []
        yours = None
        for rank, entry in enumerate(
            _pages(slug, "read the leaderboard of", fetch, "submissions"), 1
        ):
            row = {
                "rank": rank,
                "team": entry.team_name,
                "score": _score(entry.score),
                "date": _iso(entry.submission_date),
                "you": your_team is not None and entry.team_name == your_team,
            }
            if rank <= top:
                rows.append(row)
            if row["you"]:
                yours = row
            if rank >= top and (yours or your_team is None):
                break
    if yours and yours["rank"] > top:
        rows.append(yours)
    return rows


# ------------------------------------------------------------------------------ code competitions
def submit_code(
    slug: str,
    kernel: str,
    version: int | None,
    message: str,
    *,
    output_file: str = "submission.csv",
    wait: bool = False,
    poll_seconds: float = 5,
    timeout: float = 600,
) -> dict:
    """Submit version (None: the latest) of kernel "OWNER/SLUG" to a code competition.

    Kaggle reruns the kernel on the hidden test set and scores its output_file. A refusal can
    come back as a message with no submission ref, which is raised here as a KaggleError.
    """
    from kagglesdk.competitions.types.competition_api_service import (
        ApiCreateCodeSubmissionRequest,
    )

    owner, _, kernel_slug = kernel.partition("/")
    if not owner or not kernel_slug or "/" in kernel_slug:
        raise KaggleError(f"--kernel {kernel!r}: write it as OWNER/SLUG, e.g. alice/my-kernel")
    kaggle_api = api(slug)
    with kaggle_api.build_kaggle_client() as client:
        request = ApiCreateCodeSubmissionRequest()
        request.competition_name, request.kernel_owner = slug, owner
        request.kernel_slug, request.file_name = kernel_slug, output_file
        if version is not None:
            request.kernel_version = int(version)
        request.submission_description = message
        created = _create(client, slug, "submit a notebook to", "create_code_submission", request)
        if not created.ref:
            raise KaggleError(
                f"Kaggle did not accept notebook {kernel} (version {version or 'latest'}) for "
                f"'{slug}': {' '.join((created.message or 'no reason given').split())}"
            )
        return _accepted(
            client,
            slug,
            created,
            message,
            wait,
            poll_seconds,
            timeout,
            kernel=kernel,
            kernel_version=version,
        )


# ------------------------------------------------------------------------------ the platform
def competition_slug(competition) -> str:
    """The Kaggle competition a folder talks to: competition.source on the Kaggle platform,
    else the folder's name (a kernel of a local competition still needs a slug)."""
    settings = competition.config.competition
    if settings.platform == "kaggle" and settings.source:
        return settings.source
    return competition.name


class KagglePlatform:
    """A Kaggle competition, through the official client (kit.platforms.Platform)."""

    counts_after_record = False  # Kaggle has counted it before kit records it

    def __init__(self, competition):
        self.competition = competition
        self.slug = competition_slug(competition)

    def download(self, *, force: bool, limit: int | None, progress: bool, replace_key: bool):
        dest = self.competition.data_dir
        files = download(self.slug, dest, force=force, progress=progress)
        return downloaded(f"kaggle:{self.slug}", dest, files)

    def list_files(self) -> list[dict]:
        return list_files(self.slug)

    def submit(self, file: Path, message: str, *, wait: bool, record) -> dict:
        result = submit(self.slug, file, message, wait=wait)
        record(result)
        return result

    def submit_kernel(self, kernel: str, version, message: str, *, output: str, wait: bool):
        return submit_code(self.slug, kernel, version, message, output_file=output, wait=wait)

    def submissions(self):
        return pd.DataFrame(submissions(self.slug))

    def leaderboard(self, *, private: bool, top: int):
        return pd.DataFrame(leaderboard(self.slug, top=top))
