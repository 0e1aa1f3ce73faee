"""REST: health, the CA chain and CRL (public), and the audit log's status."""

from __future__ import annotations

from typing import Annotated

from cryptography.hazmat.primitives.serialization import Encoding
from fastapi import APIRouter, Depends, Query, Request, Response

from keyfab import audit
from keyfab.authority import Principal, Role, current_crl
from keyfab.errors import RegistryError
from keyfab.registry import queries
from keyfab.server.auth import require, service
from keyfab.server.models import AuditStatus, Health
from keyfab.server.problems import PROTECTED, ProblemError, problem_responses

router = APIRouter(prefix="/api/v1")
Auditor = Annotated[Principal, Depends(require(Role.ADMIN, Role.AUDITOR))]
PEM_CHAIN = "application/pem-certificate-chain"


@router.get("/health", response_model=Health, tags=["system"], responses=problem_responses(503))
def health(request: Request) -> Health:
    """Liveness and database reachability; no authentication."""
    try:
        queries.ping(service(request).registry)
    except RegistryError:
        raise ProblemError(
            503, "registry-unavailable", "the registry database does not answer"
        ) from None
    return Health(status="ok", database="ok")


@router.get(
    "/ca/chain",
    tags=["pki"],
    responses={200: {"content": {PEM_CHAIN: {}}, "description": "Manufacturing CA, then root."}},
)
def ca_chain(request: Request) -> Response:
    """The CA chain as PEM: what relying parties need to check device certificates."""
    chain = service(request).authority.chain
    return Response(b"".join(c.public_bytes(Encoding.PEM) for c in chain), media_type=PEM_CHAIN)


@router.get(
    "/ca/crl",
    tags=["pki"],
    responses={
        200: {
            "content": {"application/pkix-crl": {}, "application/x-pem-file": {}},
            "description": "The current CRL of the manufacturing CA.",
        },
        **problem_responses(422),
    },
)
def ca_crl(
    request: Request, encoding: Annotated[str, Query(pattern=r"^(pem|der)$")] = "der"
) -> Response:
    """The current CRL of every revoked certificate, with each entry's reason.

    The newest CRL is served again while it lists every revocation and is far
    from its nextUpdate; otherwise a new one is signed with the next CRLNumber
    (the same rule as ``keyfab ca crl``: numbers strictly increase, never reused).
    """
    crl = current_crl(service(request).authority)
    if encoding == "pem":
        return Response(crl.public_bytes(Encoding.PEM), media_type="application/x-pem-file")
    return Response(crl.public_bytes(Encoding.DER), media_type="application/pkix-crl")


@router.get("/audit", response_model=AuditStatus, tags=["audit"], responses=PROTECTED)
def audit_status(request: Request, _: Auditor) -> AuditStatus:
    """Recompute the audit hash chain now and say whether it holds."""
    with service(request).registry.reading() as session:
        report = audit.verify(session)
    return AuditStatus(
        ok=report.ok,
        events=report.events,
        head_hash=report.head_hash,
        broken_at=report.broken_at,
        reason=report.reason,
    )
