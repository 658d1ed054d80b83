"""Dashboard sessions: a signed, expiring cookie that names who signed in, never the key itself.

The cookie is `base64url(JSON payload) + "." + base64url(HMAC-SHA256)` under a secret derived from the
admin key, so every API process verifies it without shared state, and changing the admin key ends every
session. Its payload holds the role, the data owner's id and the public id of the key used (whose row is
read on each request: a revoked key ends its sessions at once), an expiry and a nonce. The CSRF token of
a form is an HMAC of that nonce; the sign-in form's token is bound the same way to a short-lived
pre-session cookie. Cookies are HttpOnly, SameSite=Strict, Path=/ui, and Secure when the request came in
over https.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import Response

SESSION_COOKIE = "scaleot_ui"
LOGIN_COOKIE = "scaleot_ui_login"
COOKIE_PATH = "/ui"
DEFAULT_TTL_S = 8 * 3600
LOGIN_TTL_S = 3600  # how long a sign-in form stays valid
MAX_COOKIE_CHARS = 2048


def session_ttl_s() -> int:
    """SCALEOT_UI_SESSION_S (seconds a dashboard session lasts; default 8 hours)."""
    raw = os.environ.get("SCALEOT_UI_SESSION_S", "")
    return int(raw) if raw.isdigit() and 0 < int(raw) <= 30 * 86400 else DEFAULT_TTL_S


def secret_of(admin_key: str) -> bytes:
    return hmac.new(admin_key.encode(), b"scaleot dashboard session v1", hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(secret: bytes, payload: dict[str, Any]) -> str:
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    return f"{body}.{_b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())}"


class BadCookie(Exception):
    """Missing, tampered with, or expired; the message says which (for the 401 page)."""


def verify(secret: bytes, cookie: str | None, now: float | None = None) -> dict[str, Any]:
    if not cookie:
        raise BadCookie("not signed in: sign in with the admin key or your API key")
    body, _, mac = cookie.partition(".")
    try:
        expected = hmac.new(secret, body.encode(), hashlib.sha256).digest()
        if len(cookie) > MAX_COOKIE_CHARS or not hmac.compare_digest(_unb64(mac), expected):
            raise BadCookie("invalid session: sign in again")
        payload = json.loads(_unb64(body))
    except (binascii.Error, ValueError, UnicodeError):
        raise BadCookie("invalid session: sign in again") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("exp"), (int, float)):
        raise BadCookie("invalid session: sign in again")
    if payload["exp"] <= (time.time() if now is None else now):
        raise BadCookie("your session expired: sign in again")
    return payload


@dataclass(frozen=True)
class UiSession:
    role: Literal["admin", "owner"]
    owner_id: str | None
    key_id: str | None
    nonce: str
    expires_at: float

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def new_session_cookie(secret: bytes, role: Literal["admin", "owner"], owner_id: str | None, key_id: str | None,
                       ttl_s: int, now: float | None = None) -> str:
    issued = time.time() if now is None else now
    return sign(secret, {"r": role, "o": owner_id, "k": key_id, "n": secrets.token_urlsafe(16),
                         "iat": int(issued), "exp": issued + ttl_s})


def read_session(secret: bytes, cookie: str | None) -> UiSession:
    payload = verify(secret, cookie)
    role, nonce = payload.get("r"), payload.get("n")
    if role not in ("admin", "owner") or not isinstance(nonce, str):
        raise BadCookie("invalid session: sign in again")
    owner_id, key_id = payload.get("o"), payload.get("k")
    if role == "owner" and not (isinstance(owner_id, str) and isinstance(key_id, str)):
        raise BadCookie("invalid session: sign in again")
    return UiSession(role=role, owner_id=owner_id if role == "owner" else None,
                     key_id=key_id if role == "owner" else None, nonce=nonce, expires_at=float(payload["exp"]))


def csrf_token(secret: bytes, nonce: str, purpose: str = "form") -> str:
    return hmac.new(secret, f"csrf|{purpose}|{nonce}".encode(), hashlib.sha256).hexdigest()


def csrf_ok(secret: bytes, nonce: str, presented: object, purpose: str = "form") -> bool:
    return isinstance(presented, str) and hmac.compare_digest(presented.encode(),
                                                              csrf_token(secret, nonce, purpose).encode())


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path=COOKIE_PATH, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


def clear_cookie(response: Response, request: Request, name: str) -> None:
    response.delete_cookie(name, path=COOKIE_PATH, httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")


def new_login_cookie(secret: bytes) -> tuple[str, str]:
    """(the pre-session cookie, the CSRF token its sign-in form carries)."""
    nonce = secrets.token_urlsafe(16)
    return sign(secret, {"n": nonce, "exp": time.time() + LOGIN_TTL_S}), csrf_token(secret, nonce, "login")


def login_nonce(secret: bytes, cookie: str | None) -> str | None:
    try:
        nonce = verify(secret, cookie).get("n")
    except BadCookie:
        return None
    return nonce if isinstance(nonce, str) else None
