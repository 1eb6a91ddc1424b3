"""Kaggle through its official client: competition data, submissions, leaderboard.

The only module of kit that imports `kaggle` (and `kagglesdk`). Both are imported inside
functions: `import kaggle` authenticates at import time and prints a help page when no
credentials exist, and its KaggleApi class reads KAGGLE_CONFIG_DIR and KAGGLE_API_ENVIRONMENT
once, at import. `_api()` therefore builds a fresh KaggleApi from the environment of the moment.

Every user-facing failure is a KaggleError (a KitError): one line, naming the fix. HTTP 429 and
5xx are retried after each of RETRY_DELAYS seconds; 401, 403 and 404 are explained at once.
The key is never printed, logged or written by kit.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from kit.errors import KitError
from kit.fileio import write_json
from kit.platforms.archive import safe_extract

# Seconds to wait before each retry of a call that got HTTP 429/5xx or lost its connection.
RETRY_DELAYS: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
MAX_RETRY_AFTER_SECONDS = 60.0  # cap on a server's Retry-After, so a run never stalls for long
PAGE_SIZE = 100  # rows asked per page of a listing
MAX_PAGES = 50  # listings stop after this many pages (5,000 rows)
MANIFEST_NAME = ".kit-download.json"  # in dest: what the last download extracted, and from what
PARTIAL_DIR = ".kit-partial"  # in dest: the archive while it downloads; kept to resume a cut

CREDENTIALS_HELP = (
    "set KAGGLE_USERNAME and KAGGLE_KEY, or KAGGLE_API_TOKEN, or save "
    '{"username": ..., "key": ...} as ~/.kaggle/kaggle.json with chmod 600 '
    "(tokens: https://www.kaggle.com/settings/api)"
)
# The client reads KAGGLE_API_ENVIRONMENT only at import; these are the flags it derives from it.
_ENVIRONMENT_FLAGS = {"LOCALHOST": "--local", "STAGING": "--staging", "ADMIN": "--admin"}

T = TypeVar("T")


class KaggleError(KitError):
    """Kaggle refused or failed a request; the message says what to do."""


# ------------------------------------------------------------------------------ credentials
def credentials_file() -> Path:
    """Where the client looks for kaggle.json: KAGGLE_CONFIG_DIR, ~/.kaggle, else XDG config."""
    configured = os.environ.get("KAGGLE_CONFIG_DIR")
    if configured:
        return Path(configured) / "kaggle.json"
    legacy = Path.home() / ".kaggle"
    if sys.platform.startswith("linux") and not legacy.exists():
        xdg = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
        return Path(xdg) / "kaggle" / "kaggle.json"
    return legacy / "kaggle.json"


def check_credentials_file() -> str | None:
    """A warning with the fix when kaggle.json is open to other users, else None."""
    path = credentials_file()
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if os.name != "nt" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        return (
            f"{path} holds your Kaggle key and other users can access it "
            f"(mode {stat.S_IMODE(mode):o}); run: chmod 600 {path}"
        )
    return None


def _api(slug: str = ""):
    """An authenticated KaggleApi built from the current environment."""
    # Importing kaggle runs its own authenticate(), which prints a help page when there are no
    # credentials; kit gives its own one-line message instead.
    with contextlib.redirect_stdout(io.StringIO()):
        from kaggle.api.kaggle_api_extended import KaggleApi

    api = KaggleApi()
    path = credentials_file()
    api.config_dir, api.config = str(path.parent), str(path)
    flag = _ENVIRONMENT_FLAGS.get(os.environ.get("KAGGLE_API_ENVIRONMENT", ""))
    # Set per call, not per import; and never "--verbose", which prints the auth header.
    api.args = [flag] if flag else []
    with contextlib.redirect_stdout(io.StringIO()):  # the permissions warning and help page
        try:
            _call(slug, "sign in to", api.authenticate)
        except SystemExit:
            raise KaggleError(f"no Kaggle credentials found: {CREDENTIALS_HELP}") from None
    return api


# ------------------------------------------------------------------------------ errors, retries
def _status(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    return None if response is None else response.status_code


def _server_message(error: BaseException) -> str:
    """The server's own words, on one line (the JSON message when there is one)."""
    response = getattr(error, "response", None)
    try:
        text = response.json().get("message", "") if response is not None else ""
    except ValueError:
        text = ""
    return " ".join(str(text or error).split())[:200]


def _failure(
    slug: str, action: str, error: BaseException, tries: int, kind: str = "competition"
) -> KaggleError:
    """The one-line KaggleError for an HTTP error from Kaggle (kind: what slug names)."""
    status = _status(error)
    if status == 401:
        return KaggleError(f"Kaggle rejected the credentials (HTTP 401): {CREDENTIALS_HELP}")
    if status in (403, 404) and kind != "competition":
        return KaggleError(
            f"Kaggle refused to {action} {kind} '{slug}' (HTTP {status}: "
            f"{_server_message(error)}): check the owner in '{slug}' is your Kaggle username"
        )
    if status == 403:
        return KaggleError(
            f"Kaggle refused to {action} '{slug}' (HTTP 403): accept the rules at "
            f"https://www.kaggle.com/competitions/{slug}/rules and run again"
        )
    if status == 404:
        return KaggleError(
            f"Kaggle has no competition '{slug}' (HTTP 404): check the competition slug '{slug}'"
        )
    if status == 429 or (status or 0) >= 500:
        return KaggleError(
            f"Kaggle kept failing to {action} '{slug}' (HTTP {status} after {tries} tries): "
            "wait a few minutes and run again"
        )
    return KaggleError(
        f"Kaggle refused to {action} '{slug}' (HTTP {status}: {_server_message(error)})"
    )


def _maybe_done(slug: str, action: str, what: str) -> KaggleError:
    """For a call that may have taken effect although it failed."""
    return KaggleError(
        f"Kaggle failed to {action} '{slug}' ({what}) but may have done it anyway: check "
        f"'kaggle competitions submissions {slug}' before you run again"
    )


def _transient_errors() -> tuple[type[BaseException], ...]:
    import requests
    import urllib3

    return (
        requests.ConnectionError,
        requests.Timeout,
        requests.exceptions.ChunkedEncodingError,
        urllib3.exceptions.ProtocolError,
    )


def _delay(attempt: int, error: BaseException) -> float:
    """RETRY_DELAYS[attempt], or longer when the server asked for it with Retry-After."""
    delay = RETRY_DELAYS[attempt]
    response = getattr(error, "response", None)
    retry_after = response.headers.get("Retry-After") if response is not None else None
    with contextlib.suppress(TypeError, ValueError):
        delay = max(delay, min(float(retry_after), MAX_RETRY_AFTER_SECONDS))
    return delay


def _call(
    slug: str,
    action: str,
    function: Callable[[], T],
    *,
    idempotent: bool = True,
    kind: str = "competition",
) -> T:
    """function(), retried on 429/5xx/lost connections; any HTTP error becomes a KaggleError.

    A call that is not idempotent is retried on 429 only: after a 5xx or a lost connection
    it may have taken effect.
    """
    import requests

    transient = _transient_errors()
    tries = len(RETRY_DELAYS) + 1
    for attempt in range(tries):
        last = attempt == tries - 1
        try:
            return function()
        except requests.HTTPError as error:
            status = _status(error) or 0
            if status >= 500 and not idempotent:
                raise _maybe_done(slug, action, f"HTTP {status}") from error
            if last or not (status == 429 or status >= 500):
                raise _failure(slug, action, error, attempt + 1, kind) from error
            time.sleep(_delay(attempt, error))
        except transient as error:
            if not idempotent:
                raise _maybe_done(slug, action, type(error).__name__) from error
            if last:
                raise KaggleError(
                    f"could not reach Kaggle to {action} '{slug}' after {tries} tries "
                    f"({type(error).__name__}): check the network and run again"
                ) from error
            time.sleep(_delay(attempt, error))
    raise AssertionError("unreachable")


def _pages(slug: str, action: str, fetch: Callable[[str], Any], items: str) -> Iterator[Any]:
    """Items of a paged listing; fetch(page_token) returns one page."""
    token = ""
    for _ in range(MAX_PAGES):
        page = _call(slug, action, lambda token=token: fetch(token))
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

    api = _api(slug)
    with api.build_kaggle_client() as client:

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
    import requests
    from kagglesdk.competitions.types.competition_api_service import ApiDownloadDataFilesRequest

    dest = Path(dest)
    manifest_path = dest / MANIFEST_NAME
    manifest = _read_manifest(manifest_path)
    archive = dest / PARTIAL_DIR / f"{slug}.zip"
    action = "download the data of"
    api = _api(slug)
    with api.build_kaggle_client() as client:

        def open_archive():
            request = ApiDownloadDataFilesRequest()
            request.competition_name = slug
            # Follows Kaggle's redirect to the archive; the body streams, unread until needed.
            return client.competitions.competition_api_client.download_data_files(request)

        tries = len(RETRY_DELAYS) + 1
        for attempt in range(tries):
            response = _call(slug, action, open_archive)
            try:
                identity = _identity(response)
                if attempt == 0 and not force and _is_current(manifest, identity, dest):
                    return []
                # max_retries=0: kit retries with its own (short, configurable) delays; the
                # client's resume logic still carries a cut download across the attempts.
                api.download_file(
                    response,
                    str(archive),
                    client.http_client(),
                    quiet=not progress,
                    resume=True,
                    max_retries=0,
                )
                break
            except requests.HTTPError as error:
                status = _status(error) or 0
                if attempt == tries - 1 or not (status == 429 or status >= 500):
                    raise _failure(slug, action, error, attempt + 1) from error
                time.sleep(_delay(attempt, error))
            except (OSError, ValueError) as error:  # cut connection, short file, disk trouble
                if attempt == tries - 1:
                    raise KaggleError(
                        f"the download of '{slug}' failed after {tries} tries "
                        f"({type(error).__name__}); run again to resume from {archive}"
                    ) from error
                time.sleep(_delay(attempt, error))
            finally:
                response.close()

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
    api = _api(slug)
    with api.build_kaggle_client() as client:
        return [_submission_row(s) for s in _list_submissions(client, slug)]


def _upload(api, client, slug: str, file: Path):
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
    for attempt in range(len(RETRY_DELAYS) + 1):
        started = _call(
            slug,
            "start an upload to",
            lambda: client.competitions.competition_api_client.start_submission_upload(request),
        )
        with contextlib.redirect_stdout(io.StringIO()):  # the client prints upload errors
            result = api.upload_complete(str(file), started.create_url, quiet=True)
        if result == ResumableUploadResult.COMPLETE:
            return started
        if result != ResumableUploadResult.INCOMPLETE or attempt == len(RETRY_DELAYS):
            break
        time.sleep(RETRY_DELAYS[attempt])  # INCOMPLETE: a transient failure; start afresh
    raise KaggleError(
        f"{file}: Kaggle did not accept the upload, so nothing was submitted to '{slug}'; "
        "check the file and run again"
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
    api = _api(slug)
    with api.build_kaggle_client() as client:
        started = _upload(api, client, slug, file)
        request = ApiCreateSubmissionRequest()
        request.competition_name, request.blob_file_tokens = slug, started.token
        request.submission_description = message
        # Not idempotent: a retry after a 5xx could create a second submission and use up
        # another of the day's allowance.
        created = _call(
            slug,
            "submit to",
            lambda: client.competitions.competition_api_client.create_submission(request),
            idempotent=False,
        )
        result = {
            "ref": created.ref,
            "message": created.message,
            "status": "pending",
            "public_score": None,
        }
        if wait:
            result.update(
                _wait_for_score(client, slug, created.ref, message, poll_seconds, timeout)
            )
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

    api = _api(slug)
    with api.build_kaggle_client() as client:
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
    api = _api(slug)
    with api.build_kaggle_client() as client:
        request = ApiCreateCodeSubmissionRequest()
        request.competition_name, request.kernel_owner = slug, owner
        request.kernel_slug, request.file_name = kernel_slug, output_file
        if version is not None:
            request.kernel_version = int(version)
        request.submission_description = message
        created = _call(
            slug,
            "submit a notebook to",
            lambda: client.competitions.competition_api_client.create_code_submission(request),
            idempotent=False,
        )
        if not created.ref:
            raise KaggleError(
                f"Kaggle did not accept notebook {kernel} (version {version or 'latest'}) for "
                f"'{slug}': {' '.join((created.message or 'no reason given').split())}"
            )
        result = {
            "ref": created.ref,
            "message": created.message,
            "status": "pending",
            "public_score": None,
            "kernel": kernel,
            "kernel_version": version,
        }
        if wait:
            result.update(
                _wait_for_score(client, slug, created.ref, message, poll_seconds, timeout)
            )
        return result


# ------------------------------------------------------------------------------ datasets, kernels
def _client_call(ref: str, action: str, kind: str, function: Callable[[], T]) -> T:
    """A client helper that prints and raises ValueError for bad metadata or failed uploads."""
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            return _call(ref, action, function, idempotent=False, kind=kind)
        except ValueError as error:
            raise KaggleError(
                f"Kaggle client refused to {action} {kind} '{ref}': {' '.join(str(error).split())}"
            ) from error


def dataset_exists(ref: str) -> bool:
    """True when the dataset "OWNER/SLUG" exists on Kaggle (and you may see it)."""
    import requests

    api = _api(ref)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            api.dataset_status(ref)
    except requests.HTTPError as error:
        if _status(error) == 404:
            return False
        raise _failure(ref, "read", error, 1, "dataset") from error
    return True


def push_dataset(folder: Path, notes: str = "") -> dict:
    """Create the dataset described by folder/dataset-metadata.json, or add a version to it.

    Uploads every top-level file of folder (sub-folders are not uploaded). Returns ref, url
    and created (False when a new version was added).
    """
    folder = Path(folder)
    try:
        ref = json.loads((folder / "dataset-metadata.json").read_text())["id"]
    except (OSError, ValueError, KeyError) as error:
        raise KaggleError(
            f"{folder / 'dataset-metadata.json'}: missing or without an id ({error}); "
            "rebuild it with kit kernel build"
        ) from error
    exists = dataset_exists(ref)
    api = _api(ref)
    if exists:
        response = _client_call(
            ref,
            "add a version to",
            "dataset",
            lambda: api.dataset_create_version(str(folder), notes or "kit", quiet=True),
        )
    else:
        response = _client_call(
            ref, "create", "dataset", lambda: api.dataset_create_new(str(folder), quiet=True)
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
    try:
        ref = json.loads((folder / "kernel-metadata.json").read_text())["id"]
    except (OSError, ValueError, KeyError) as error:
        raise KaggleError(
            f"{folder / 'kernel-metadata.json'}: missing or without an id ({error}); "
            "rebuild it with kit kernel build"
        ) from error
    api = _api(ref)
    response = _client_call(ref, "push", "kernel", lambda: api.kernels_push(str(folder)))
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
