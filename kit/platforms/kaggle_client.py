"""The Kaggle client as kit uses it: credentials, an authenticated KaggleApi, and ONE retry policy.

`import kaggle` authenticates at import time and prints a help page when no credentials exist,
and its KaggleApi class reads KAGGLE_CONFIG_DIR and KAGGLE_API_ENVIRONMENT once, at import.
`api()` therefore builds a fresh KaggleApi from the environment of the moment, inside a function.

Every user-facing failure is a KaggleError (a KitError): one line, naming the fix. `retrying` is
the only retry loop: HTTP 429 and 5xx and lost connections are retried after each of
RETRY_DELAYS seconds (longer when the server sends Retry-After); 401, 403 and 404 are explained
at once. The key is never printed, logged or written by kit.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import requests
import urllib3

from kit.errors import KitError

# Seconds to wait before each retry of a call that got HTTP 429/5xx or lost its connection.
RETRY_DELAYS: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
MAX_RETRY_AFTER_SECONDS = 60.0  # cap on a server's Retry-After, so a run never stalls for long

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


def api(slug: str = ""):
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
            call(slug, "sign in to", api.authenticate)
        except SystemExit:
            raise KaggleError(f"no Kaggle credentials found: {CREDENTIALS_HELP}") from None
    return api


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


def failure(
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


def maybe_done(slug: str, action: str, what: str) -> KaggleError:
    """For a call that may have taken effect although it failed."""
    return KaggleError(
        f"Kaggle failed to {action} '{slug}' ({what}) but may have done it anyway: check "
        f"'kaggle competitions submissions {slug}' before you run again"
    )


def _transient_errors() -> tuple[type[BaseException], ...]:
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


def retrying(
    attempt: Callable[[int], T],
    *,
    retryable: Callable[[BaseException], bool],
    give_up: Callable[[BaseException, int], BaseException | None],
) -> T:
    """attempt(k) for k = 0, 1, ...: the one retry loop of kit's Kaggle calls.

    An error that retryable() accepts is tried again after RETRY_DELAYS[k] (or the server's
    Retry-After); otherwise, or after the last try, give_up(error, tries) says what to raise
    (None: the error itself).
    """
    tries = len(RETRY_DELAYS) + 1
    for k in range(tries):
        try:
            return attempt(k)
        except Exception as error:
            if k < tries - 1 and retryable(error):
                time.sleep(_delay(k, error))
                continue
            replacement = give_up(error, k + 1)
            if replacement is None:
                raise
            raise replacement from error
    raise AssertionError("unreachable")


def http_status(error: BaseException) -> int:
    """The HTTP status of a requests.HTTPError, else 0."""
    return (_status(error) or 0) if isinstance(error, requests.HTTPError) else 0


def is_transient(error: BaseException) -> bool:
    """A lost connection or a status worth retrying (429, 5xx)."""
    status = http_status(error)
    return status == 429 or status >= 500 or isinstance(error, _transient_errors())


def unreachable(slug: str, action: str, error: BaseException, tries: int) -> KaggleError:
    return KaggleError(
        f"could not reach Kaggle to {action} '{slug}' after {tries} tries "
        f"({type(error).__name__}): check the network and run again"
    )


def call(
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

    def retryable(error: BaseException) -> bool:
        return is_transient(error) and (idempotent or http_status(error) == 429)

    def give_up(error: BaseException, tries: int) -> BaseException | None:
        status = http_status(error)
        if not idempotent and (status >= 500 or (not status and is_transient(error))):
            return maybe_done(slug, action, f"HTTP {status}" if status else type(error).__name__)
        if status:
            return failure(slug, action, error, tries, kind)
        if is_transient(error):
            return unreachable(slug, action, error, tries)
        return None

    return retrying(lambda _: function(), retryable=retryable, give_up=give_up)
