"""The authority: the manufacturer's CA run as a recorded service.

Every operation that signs, revokes or grants access lives here once, and
writes its registry rows and audit events in one transaction: issuing and
recording certificates (batches, EST, stations, the server's TLS, manifest
signers), revocation with RFC 5280 reasons, CRLs with one CRLNumber rule,
checkpoints, API tokens and station identities, rotating the CAs. ``provision``, ``server`` and
``cli`` call it; it stands on ``pki``, ``registry``, ``audit`` and ``rot``.
"""

from keyfab.authority import enrolment, publication, sessions, tokens
from keyfab.authority.credentials import (
    NewCredential,
    issue_cmp_responder,
    issue_manifest_signer,
    issue_station,
    issue_tls_server,
)
from keyfab.authority.crl import current_crl, new_crl
from keyfab.authority.revocation import (
    Revocation,
    revoke_certificate,
    revoke_device,
    revoke_operational,
    revoke_station,
)
from keyfab.authority.roles import READERS, WRITERS, Principal, Role
from keyfab.authority.rotation import Rotation, rotate
from keyfab.authority.service import Authority, CaState, Issued, fingerprint, labelled, record
from keyfab.authority.setup import initialise

__all__ = [
    "READERS",
    "WRITERS",
    "Authority",
    "CaState",
    "Issued",
    "NewCredential",
    "Principal",
    "Revocation",
    "Role",
    "Rotation",
    "current_crl",
    "enrolment",
    "fingerprint",
    "initialise",
    "issue_cmp_responder",
    "issue_manifest_signer",
    "issue_station",
    "issue_tls_server",
    "labelled",
    "new_crl",
    "publication",
    "record",
    "revoke_certificate",
    "revoke_device",
    "revoke_operational",
    "revoke_station",
    "rotate",
    "sessions",
    "tokens",
]
