"""Authentication (who is calling) and the role check (may they).

A caller proves itself with one of:
* ``Authorization: Bearer kf_...``: an API token;
* ``Authorization: Basic`` with the token's name as user and the token as
  password: what EST clients (curl ``-u``) send for bootstrap enrolment;
* a client certificate in the TLS handshake, verified there against keyfab's
  chain and here against the registry: a recorded, unrevoked device
  certificate makes the caller that device; a station certificate makes it
  that station, with operator rights.
Routing decides which roles an endpoint admits (``require``); this module
only establishes identities.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable

from fastapi import Request

from keyfab.authority import Principal, Role
from keyfab.authority.access import from_certificate, from_token
from keyfab.errors import AuthenticationError, PermissionDeniedError
from keyfab.server._logs import PRINCIPAL
from keyfab.server._peer import peer_certificate
from keyfab.server._service import Service
from keyfab.server.problems import ProblemError, from_keyfab_error


def unauthorized(detail: str) -> ProblemError:
    return from_keyfab_error(AuthenticationError(detail))


def service(request: Request) -> Service:
    found: Service = request.app.state.service
    return found


def presented_token(header: str) -> tuple[str, str | None]:
    """The token an ``Authorization`` header presents, and Basic's user name (else None).

    Only the header's form is checked here; the token itself is checked
    where it is used (``authority.access``, or an enrolment's transaction).
    """
    scheme, _, credentials = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return credentials.strip(), None
    if scheme == "basic":
        return _basic(credentials.strip())
    raise AuthenticationError("unsupported authorization scheme: use Bearer or Basic")


def _basic(credentials: str) -> tuple[str, str]:
    if len(credentials) > 512:
        raise AuthenticationError("malformed Basic credentials")
    try:
        user, sep, password = base64.b64decode(credentials, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise AuthenticationError("malformed Basic credentials") from None
    if not sep:
        raise AuthenticationError("malformed Basic credentials")
    return password, user


def _from_header(svc: Service, header: str) -> Principal:
    presented, user = presented_token(header)
    principal = from_token(svc.registry, presented)
    if user is not None and not hmac.compare_digest(user.encode(), principal.name.encode()):
        raise AuthenticationError("unknown token")
    return principal


def identify(request: Request) -> Principal | None:
    """The caller's identity, None if it offered none, or a 401/403 problem."""
    header = request.headers.get("authorization")
    peer = peer_certificate(request.scope)
    if header is None and peer is None:
        return None
    try:
        if header is not None:
            principal = _from_header(service(request), header)
        else:
            assert peer is not None
            principal = from_certificate(service(request).registry, peer)
    except (AuthenticationError, PermissionDeniedError) as refused:
        raise from_keyfab_error(refused) from None
    setattr(request.state, PRINCIPAL, principal.name)  # for the access log line
    return principal


def require(*roles: Role) -> Callable[[Request], Principal]:
    """A FastAPI dependency admitting only ``roles``: 401 if anonymous, 403 if wrong role."""
    allowed = frozenset(roles)

    def dependency(request: Request) -> Principal:
        principal = identify(request)
        if principal is None:
            raise unauthorized("authentication required")
        if principal.role not in allowed:
            raise ProblemError(
                403, "forbidden", f"role {principal.role} may not {request.method} this resource"
            )
        return principal

    return dependency
