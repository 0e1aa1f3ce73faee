"""The dashboard's sign-in cookie, its CSRF tokens, and the forms it posts.

The cookie is HttpOnly (no script can read it), SameSite=Strict (no other
site's page can make the browser send it), Secure whenever the service runs
TLS, and scoped to ``/dashboard``. Every form carries a CSRF token, checked in
constant time before anything is done: an HMAC of the session secret
(``authority.sessions``), or, on the sign-in form where no session exists
yet, a random value also set as a cookie (double submit).

Forms arrive as ``application/x-www-form-urlencoded`` bodies, already capped by
the body limit; they are parsed here with the standard library rather than
adding a multipart parser the dashboard never needs.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qsl

from fastapi import Request, Response

from keyfab.authority import Principal, sessions
from keyfab.clock import utc_now
from keyfab.errors import AuthenticationError, InvalidRequestError, PermissionDeniedError
from keyfab.server._logs import PRINCIPAL
from keyfab.server.auth import service

COOKIE = "kf_session"
SIGNIN_COOKIE = "kf_signin"
PATH = "/dashboard"
FORM = "application/x-www-form-urlencoded"
MAX_FIELDS = 16


class SignInRequired(Exception):  # noqa: N818 - a redirect, not an error
    """No valid session: the page answers with a redirect to the sign-in form."""


@dataclass(frozen=True)
class Viewer:
    """Who is looking at a page, and the CSRF token their forms carry."""

    principal: Principal
    csrf: str

    @property
    def writes(self) -> bool:
        return self.principal.role in ("admin", "operator")

    @property
    def admin(self) -> bool:
        return self.principal.role == "admin"


def viewer(request: Request) -> Viewer:
    """The signed-in viewer (a FastAPI dependency); SignInRequired without a valid session."""
    secret = request.cookies.get(COOKIE)
    if not secret:
        raise SignInRequired
    try:
        principal = sessions.resolve(service(request).registry, secret)
    except AuthenticationError:
        raise SignInRequired from None
    setattr(request.state, PRINCIPAL, principal.name)  # for the access log line
    return Viewer(principal, sessions.csrf_token(secret))


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def set_session(request: Request, response: Response, new: sessions.NewSession) -> None:
    response.set_cookie(
        COOKIE,
        new.secret,
        max_age=max(int((new.expires_at - utc_now()).total_seconds()), 1),
        path=PATH,
        secure=_secure(request),
        httponly=True,
        samesite="strict",
    )
    response.delete_cookie(SIGNIN_COOKIE, path=PATH)


def clear_session(request: Request, response: Response) -> None:
    response.delete_cookie(
        COOKIE, path=PATH, secure=_secure(request), httponly=True, samesite="strict"
    )


def signin_token(request: Request, response: Response) -> str:
    """A fresh double-submit token for the sign-in form, set as a cookie too."""
    token = secrets.token_urlsafe(32)
    response.set_cookie(
        SIGNIN_COOKIE, token, path=PATH, secure=_secure(request), httponly=True, samesite="strict"
    )
    return token


async def form(request: Request) -> dict[str, str]:
    """The posted form's fields (a FastAPI dependency): one value each, or a 400."""
    media = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if media != FORM:
        raise InvalidRequestError("send the dashboard's forms as " + FORM)
    try:
        pairs = parse_qsl(
            (await request.body()).decode(), keep_blank_values=True, max_num_fields=MAX_FIELDS
        )
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequestError("the form is malformed") from None
    fields = dict(pairs)
    if len(fields) != len(pairs):
        raise InvalidRequestError("a form field is repeated")
    return fields


def check_form(request: Request, fields: dict[str, str]) -> None:
    """PermissionDeniedError unless the form carries its session's CSRF token."""
    secret = request.cookies.get(COOKIE, "")
    sessions.check_csrf(secret, fields.get("csrf", ""))


def check_signin_form(request: Request, fields: dict[str, str]) -> None:
    """The sign-in form's double-submit check (constant time)."""
    cookie = request.cookies.get(SIGNIN_COOKIE, "").encode()
    presented = fields.get("csrf", "").encode()
    if not cookie or not hmac.compare_digest(cookie, presented[:128]):
        raise PermissionDeniedError(
            "the sign-in form expired or was not this server's: load it again", slug="bad-csrf"
        )
