"""API tokens: created once and shown once, kept only as a digest.

A token reads ``kf_<id>_<secret>``. ``id`` finds the row without scanning;
``secret`` (256 random bits) is checked against the stored SHA-256 digest with
``hmac.compare_digest``, so neither a timing difference nor a stolen database
gives a usable token.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from keyfab import audit
from keyfab.authority.roles import Principal, Role
from keyfab.clock import utc_now
from keyfab.errors import AuthenticationError, ConfigError, ConflictError, NotFoundError
from keyfab.names import check_name
from keyfab.registry import ApiToken, Registry, queries

if TYPE_CHECKING:
    from keyfab.authority.service import Authority

_TOKEN = re.compile(r"kf_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
MAX_TOKEN_LENGTH = 64


_COLUMNS = select(
    ApiToken.id,
    ApiToken.name,
    ApiToken.role,
    ApiToken.digest,
    ApiToken.device_serial,
    ApiToken.uses_left,
    ApiToken.revoked_at,
    ApiToken.expires_at,
)
_LOOKUP = _COLUMNS.where(ApiToken.id == bindparam("id"))
"""Every request with a token runs this: plain columns, no ORM object to build."""
_LOOKUP_MANY = _COLUMNS.where(ApiToken.id.in_(bindparam("ids", expanding=True)))


class TokenRefusedError(AuthenticationError):
    """The token is malformed, unknown, revoked, expired or used up (reason says which)."""


@dataclass(frozen=True)
class NewToken:
    """A token just made: ``secret`` is the only copy of the full token."""

    id: str
    name: str
    role: Role
    secret: str


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create(
    authority: Authority,
    name: str,
    role: Role,
    *,
    expires_in: datetime.timedelta | None = None,
    uses: int | None = None,
    device_serial: str | None = None,
) -> NewToken:
    """Make a token and record its creation in the audit log (never the secret).

    The transaction ends with a witnessed checkpoint (``Authority.checkpoint``):
    a grant of access must not be deletable or forgeable unnoticed.
    """
    check_name("token", name)
    if uses is not None and not 1 <= uses <= 1_000_000:
        raise ConfigError("--uses must be 1 to 1000000")
    if device_serial is not None and role is not Role.DEVICE:
        raise ConfigError("only device tokens are bound to a device serial")
    token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    now = utc_now()
    try:
        with authority.transaction() as session:
            session.add(
                ApiToken(
                    id=token_id,
                    name=name,
                    role=role.value,
                    digest=_digest(secret),
                    device_serial=device_serial,
                    uses_left=uses,
                    created_at=now,
                    expires_at=now + expires_in if expires_in else None,
                )
            )
            session.flush()
            audit.append(
                session,
                "token.created",
                name,
                {"id": token_id, "role": role.value, "uses": uses, "device": device_serial},
            )
            authority.checkpoint(session)
    except IntegrityError:
        raise ConflictError(f"a token named {name!r} exists", slug="token-exists") from None
    return NewToken(token_id, name, role, f"kf_{token_id}_{secret}")


def listing(registry: Registry) -> Sequence[ApiToken]:
    """Every token, oldest first (digests only: the secrets were never kept)."""
    return queries.tokens(registry)


def revoke(authority: Authority, name: str) -> bool:
    """Revoke a token; False (and nothing written) if it was already revoked.

    Witnessed by a checkpoint, as ``create`` is.
    """
    with authority.transaction() as session:
        token = session.scalars(select(ApiToken).where(ApiToken.name == name)).one_or_none()
        if token is None:
            raise NotFoundError(f"no token named {name!r}", slug="token-not-found")
        if token.revoked_at is not None:
            return False
        token.revoked_at = utc_now()
        audit.append(session, "token.revoked", name, {"id": token.id})
        authority.checkpoint(session)
        return True


def authenticate(connection: Connection, presented: str) -> Principal:
    """The principal a presented token stands for, or TokenRefusedError.

    One SELECT by primary key: run it on ``Registry.lookup()``'s connection.
    """
    token_id, secret = _parse(presented)
    row = connection.execute(_LOOKUP, {"id": token_id}).one_or_none()
    return _judge(row, secret)


def authenticate_many(
    connection: Connection, presented: Sequence[str]
) -> list[Principal | TokenRefusedError]:
    """``authenticate`` for several tokens in one SELECT (a group of enrolments)."""
    parsed: list[tuple[str, str] | TokenRefusedError] = []
    for token in presented:
        try:
            parsed.append(_parse(token))
        except TokenRefusedError as refused:
            parsed.append(refused)
    ids = sorted({p[0] for p in parsed if isinstance(p, tuple)})
    rows = {r.id: r for r in connection.execute(_LOOKUP_MANY, {"ids": ids})} if ids else {}
    judged: list[Principal | TokenRefusedError] = []
    for item in parsed:
        try:
            if isinstance(item, TokenRefusedError):
                raise item
            judged.append(_judge(rows.get(item[0]), item[1]))
        except TokenRefusedError as refused:
            judged.append(refused)
    return judged


def _parse(presented: str) -> tuple[str, str]:
    """(id, secret) of a well-formed token; its length is checked before the pattern."""
    if len(presented) > MAX_TOKEN_LENGTH:
        raise TokenRefusedError("malformed token")
    match = _TOKEN.fullmatch(presented)
    if match is None:
        raise TokenRefusedError("malformed token")
    token_id, secret = match.groups()
    return token_id, secret


def _judge(row: Any, secret: str) -> Principal:
    """The principal of a token row, if ``secret`` is its secret and it still counts."""
    # Compare against a digest even when the id is unknown, so timing says nothing.
    stored = row.digest if row is not None else _digest("")
    if not hmac.compare_digest(_digest(secret), stored) or row is None:
        raise TokenRefusedError("unknown token")
    if row.revoked_at is not None:
        raise TokenRefusedError("token revoked")
    if row.expires_at is not None and row.expires_at <= utc_now():
        raise TokenRefusedError("token expired")
    if row.uses_left is not None and row.uses_left <= 0:
        raise TokenRefusedError("token used up")
    return Principal(
        row.name,
        Role(row.role),
        token_id=row.id,
        device_serial=row.device_serial,
        limited_uses=row.uses_left is not None,
    )


def consume(session: Session, token_id: str) -> None:
    """Use up one use of a counted token, in the caller's (issuing) transaction.

    The conditional UPDATE is the check: two requests racing on a one-time token
    cannot both see a use left.
    """
    result = session.connection().execute(
        update(ApiToken)
        .where(ApiToken.id == token_id, ApiToken.uses_left > 0)
        .values(uses_left=ApiToken.uses_left - 1)
    )
    if result.rowcount == 0:
        raise TokenRefusedError("token used up")
