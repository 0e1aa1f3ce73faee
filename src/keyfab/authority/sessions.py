"""Dashboard sessions: a proven token or certificate exchanged for a browser cookie.

A browser should not keep an API token in a form field or in script reach,
so the dashboard trades it once for a session: 256 random bits sent back as
an HttpOnly cookie, of which the registry keeps only a SHA-256 digest (as for
tokens, a stolen database yields no usable session). The session stands for
the credential it was opened with, checked again on every request, so
revoking that token or certificate ends the session at once, on every worker.
Signing out deletes the row: the cookie is worthless afterwards even if kept.

The CSRF token of a session's forms is an HMAC of its secret: nothing more to
store, and it cannot be computed by anyone who cannot read the cookie.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import delete

from keyfab import audit
from keyfab.authority.roles import READERS, Principal, Role
from keyfab.clock import utc_now
from keyfab.errors import AuthenticationError, PermissionDeniedError
from keyfab.registry import DashboardSession, Registry, queries

if TYPE_CHECKING:
    from keyfab.authority.service import Authority

LIFETIME = datetime.timedelta(hours=8)
"""One shift: a session outlives no working day, whatever the browser does."""
MAX_SECRET = 64


@dataclass(frozen=True)
class NewSession:
    """A session just opened: ``secret`` goes into the cookie and nowhere else."""

    secret: str
    expires_at: datetime.datetime


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def csrf_token(secret: str) -> str:
    """The token every form of this session carries (an HMAC keyed by the session secret)."""
    return hmac.new(secret.encode(), b"keyfab dashboard csrf", hashlib.sha256).hexdigest()


def check_csrf(secret: str, presented: str) -> None:
    """PermissionDeniedError unless ``presented`` is this session's CSRF token (constant time)."""
    if not hmac.compare_digest(csrf_token(secret).encode(), presented.encode()[:128]):
        raise PermissionDeniedError("the form's CSRF token is missing or wrong", slug="bad-csrf")


def open_session(
    authority: Authority, principal: Principal, lifetime: datetime.timedelta = LIFETIME
) -> NewSession:
    """Open a session for a proven reader (devices see nothing); expired ones are swept."""
    if principal.role not in READERS:
        raise PermissionDeniedError(f"role {principal.role} may not use the dashboard")
    secret, now = secrets.token_urlsafe(32), utc_now()
    with authority.transaction() as session:
        session.execute(delete(DashboardSession).where(DashboardSession.expires_at <= now))
        session.add(
            DashboardSession(
                digest=_digest(secret),
                principal=principal.name,
                role=principal.role.value,
                token_id=principal.token_id,
                certificate_serial=principal.certificate_serial,
                created_at=now,
                expires_at=now + lifetime,
            )
        )
        via = "token" if principal.token_id else "certificate"
        audit.append(
            session, "session.opened", principal.name, {"role": principal.role, "via": via}
        )
    return NewSession(secret, now + lifetime)


def close_session(authority: Authority, secret: str) -> bool:
    """Sign out: delete the session; False if there was none (already closed or expired)."""
    with authority.transaction() as session:
        row = session.get(DashboardSession, _digest(secret[:MAX_SECRET]))
        if row is None:
            return False
        session.delete(row)
        audit.append(session, "session.closed", row.principal, {"role": row.role})
        return True


def resolve(registry: Registry, secret: str) -> Principal:
    """The principal behind a session cookie, or AuthenticationError (unknown or expired).

    The credential it was opened with must still hold: an unrevoked, unexpired
    token, or an unrevoked certificate.
    """
    if len(secret) > MAX_SECRET:
        raise AuthenticationError("unknown session")
    row = queries.dashboard_session(registry, _digest(secret))
    if row is None or row.expires_at <= utc_now():
        raise AuthenticationError("session expired: sign in again")
    if row.token_id is not None and not queries.token_valid(registry, row.token_id):
        raise AuthenticationError("the session's token was revoked or has expired")
    if row.certificate_serial is not None:
        found = queries.find_certificate(registry, row.certificate_serial)
        if found is None or found.certificate.revoked_at is not None:
            raise AuthenticationError("the session's certificate was revoked")
    return Principal(
        row.principal,
        Role(row.role),
        token_id=row.token_id,
        certificate_serial=row.certificate_serial,
    )
