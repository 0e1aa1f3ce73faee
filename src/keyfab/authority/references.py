"""Reference values recorded at the factory: signed firmware releases and attestation policies.

The factory knows what it signed, so a verifier in the field needs no
hand-typed hashes: each release ``keyfab fit sign --product`` signs is a row
(with the digests U-Boot will measure), and each product's attestation
policy is stored as validated text. Both change what the fleet is trusted to
run, so each write is an audit event and ends with a witnessed checkpoint,
like every other trust change.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError

from keyfab import audit
from keyfab.clock import utc_now
from keyfab.errors import ConfigError, ConflictError
from keyfab.names import check_name
from keyfab.registry import AttestationPolicy, Release

if TYPE_CHECKING:
    from keyfab.authority.service import Authority

MAX_VERSION = 64
"""The ``releases.version`` column."""


@dataclass(frozen=True)
class NewRelease:
    """What ``fit sign`` signed, as it will be recorded."""

    product: str
    version: str
    rollback_index: int | None
    key_name: str
    key_fingerprint: str
    algorithm: str
    image: str
    measurements: Mapping[str, Mapping[str, Mapping[str, str]]]
    """config -> ``linux``/``initrd``/``dts`` -> bank -> hex (``boot.release_measurements``)."""


def check_release(product: str, version: str, rollback_index: int | None) -> None:
    """Refuse a bad product, version or rollback index before anything is signed."""
    check_name("product", product)
    if not version or len(version) > MAX_VERSION or not version.isprintable() or " " in version:
        raise ConfigError(f"--version must be 1 to {MAX_VERSION} printable characters, no spaces")
    if rollback_index is not None and not 0 <= rollback_index < 1 << 32:
        raise ConfigError("--rollback must be 0 to 4294967295 (a 32-bit counter)")


def record_release(authority: Authority, release: NewRelease, actor: str) -> Release:
    """Record a signed release and its ``release.recorded`` event; a version is recorded once."""
    check_release(release.product, release.version, release.rollback_index)
    row = Release(
        product=release.product,
        version=release.version,
        rollback_index=release.rollback_index,
        key_name=release.key_name,
        key_fingerprint=release.key_fingerprint,
        algorithm=release.algorithm,
        image=release.image[-255:],
        measurements=json.dumps(release.measurements, sort_keys=True),
        created_at=utc_now(),
    )
    try:
        with authority.transaction() as session:
            session.add(row)
            session.flush()
            audit.append(
                session,
                "release.recorded",
                f"{release.product} {release.version}",
                {
                    "rollback_index": release.rollback_index,
                    "key": release.key_name,
                    "key_fingerprint": release.key_fingerprint,
                    "configurations": sorted(release.measurements),
                    "by": actor,
                },
            )
            authority.checkpoint(session)
    except IntegrityError:
        raise ConflictError(
            f"release {release.version} of {release.product} is recorded already",
            slug="release-exists",
        ) from None
    return row


def store_policy(authority: Authority, product: str, text: str, actor: str) -> bool:
    """Store (or replace) a product's validated policy text; False when it is unchanged.

    The caller validates the text (``attest.reference``): the authority only
    records it, with its digest in the audit event so the log says which
    policy was in force when.
    """
    check_name("product", product)
    digest = hashlib.sha256(text.encode()).hexdigest()
    with authority.transaction() as session:
        current = session.get(AttestationPolicy, product)
        if current is not None and current.digest == digest:
            return False
        if current is None:
            session.add(
                AttestationPolicy(product=product, policy=text, digest=digest, updated_at=utc_now())
            )
        else:
            current.policy, current.digest, current.updated_at = text, digest, utc_now()
        session.flush()
        audit.append(session, "attestation.policy.set", product, {"sha256": digest, "by": actor})
        authority.checkpoint(session)
    return True
