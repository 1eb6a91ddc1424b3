"""Team tokens, session cookies, CSRF tokens and the login rate limit.

Tokens are 32 random bytes, so a plain SHA-256 is enough to store them (a slow, salted hash
defends guessable passwords; nobody guesses 256 random bits) and it lets a request find its team
by an indexed lookup. The session cookie holds the team id and an HMAC over it and the team's
token hash, so rotating or revoking a token ends every session made with the old one, and
several server processes share sessions through the secret in the database.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

TOKEN_PREFIX = "kit_"
SESSION_COOKIE = "kit_session"
CSRF_COOKIE = "kit_csrf"
SESSION_SECONDS = 14 * 24 * 3600  # a login lasts a fortnight, or until the token is rotated
LOGIN_WINDOW_SECONDS = 300  # failed logins are counted over this window, per client address
LOGIN_MAX_FAILURES = 10  # failures in the window before that client is refused (HTTP 429)


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.strip().encode()).hexdigest()


def new_secret() -> str:
    return secrets.token_hex(32)


def _sign(secret: str, message: str) -> str:
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def session_value(secret: str, team_id: int, token_hash: str, now: float | None = None) -> str:
    expires = int((now or time.time()) + SESSION_SECONDS)
    body = f"{team_id}.{expires}"
    return f"{body}.{_sign(secret, body + '.' + token_hash)}"


def session_team(secret: str, value: str, token_hash_of) -> int | None:
    """The team id a cookie proves, or None; token_hash_of(team_id) gives the current hash."""
    try:
        team, expires, signature = value.split(".")
        team_id = int(team)
        if int(expires) < time.time():
            return None
    except ValueError:
        return None
    current = token_hash_of(team_id)
    if not current:
        return None  # revoked
    expected = _sign(secret, f"{team}.{expires}.{current}")
    return team_id if hmac.compare_digest(expected, signature) else None


def new_csrf_cookie() -> str:
    return secrets.token_urlsafe(24)


def csrf_token(secret: str, cookie: str) -> str:
    """The form field that must come back with cookie (a signed double-submit token)."""
    return _sign(secret, "csrf." + cookie)


def csrf_ok(secret: str, cookie: str | None, field: str | None) -> bool:
    return bool(cookie and field) and hmac.compare_digest(csrf_token(secret, cookie), field)
