"""EST (RFC 7030) routes under ``/.well-known/est/``: HTTP in, policy elsewhere.

``cacerts`` and ``csrattrs`` are public (a device needs the chain before it
trusts anything); ``simpleenroll`` takes a token (Bearer or Basic);
``simplereenroll`` takes the device's current certificate over mutual TLS.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from cryptography import x509
from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from keyfab.authority import Authority, Principal, enrolment
from keyfab.errors import AuthenticationError
from keyfab.server._logs import PRINCIPAL
from keyfab.server._peer import tls_unique
from keyfab.server.auth import identify, presented_token, service, unauthorized
from keyfab.server.est_messages import (
    CERTS_ONLY,
    CSRATTRS,
    PKCS10,
    MessageError,
    certs_only,
    csr_attributes,
    decode_csr,
)
from keyfab.server.problems import ProblemError, from_keyfab_error, problem_responses

router = APIRouter(prefix="/.well-known/est", tags=["est"])
_BASE64_HEADERS = {"Content-Transfer-Encoding": "base64"}
_PKCS10_BODY = {
    "requestBody": {
        "required": True,
        "content": {PKCS10: {"schema": {"type": "string", "description": "base64 DER PKCS#10"}}},
    }
}
_CERTS_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {CERTS_ONLY: {}}, "description": "base64 certs-only PKCS#7"}
}
_CSRATTRS_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {CSRATTRS: {}}, "description": "base64 CsrAttrs"}
}
_ENROL_RESPONSES = {**_CERTS_RESPONSE, **problem_responses(400, 401, 403, 409, 413, 415)}


def _pkcs7(certificates: list[x509.Certificate]) -> Response:
    return Response(certs_only(certificates), media_type=CERTS_ONLY, headers=_BASE64_HEADERS)


async def _csr(request: Request) -> x509.CertificateSigningRequest:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != PKCS10:
        raise ProblemError(415, "unsupported-media-type", f"send the CSR as {PKCS10}")
    try:
        return decode_csr(await request.body())
    except MessageError as error:
        status = 413 if error.slug == "payload-too-large" else 400
        raise ProblemError(status, error.slug, str(error)) from None


@router.get("/cacerts", responses=_CERTS_RESPONSE)
def cacerts(request: Request) -> Response:
    """The CA certificates as a certs-only PKCS#7: the issuing chain first, then the
    CAs still serving after a rotation and a root rollover's link certificates."""
    return Response(service(request).cacerts, media_type=CERTS_ONLY, headers=_BASE64_HEADERS)


@router.get("/csrattrs", responses=_CSRATTRS_RESPONSE)
def csrattrs() -> Response:
    """The attributes keyfab wants in a CSR."""
    return Response(csr_attributes(), media_type=CSRATTRS, headers=_BASE64_HEADERS)


Enrol = Callable[
    [Authority, Principal, x509.CertificateSigningRequest, bytes | None], x509.Certificate
]


async def _enrol(request: Request, principal: Principal, action: Enrol) -> Response:
    csr = await _csr(request)
    certificate = await run_in_threadpool(
        action, service(request).authority, principal, csr, tls_unique(request.scope)
    )
    return _pkcs7([certificate])


@router.post("/simpleenroll", responses=_ENROL_RESPONSES, openapi_extra=_PKCS10_BODY)
async def simpleenroll(request: Request) -> Response:
    """Bootstrap enrolment with a token (HTTP Basic or Bearer) or an IDevID (mutual TLS).

    A token is checked in the enrolment's own transaction (``enrol_with_token``),
    not by a lookup of its own first.
    """
    header = request.headers.get("authorization")
    if header is None:
        return await _enrol(request, _idevid(request), enrolment.enrol)
    try:
        presented, user = presented_token(header)
    except AuthenticationError as refused:
        raise from_keyfab_error(refused) from None
    csr = await _csr(request)
    certificate, principal = await enrolment.enrol_with_token_async(
        service(request).authority, presented, csr, tls_unique(request.scope), user=user
    )
    setattr(request.state, PRINCIPAL, principal.name)  # for the access log line
    return _pkcs7([certificate])


def _idevid(request: Request) -> Principal:
    """The device an IDevID presented over mutual TLS proves (no header was sent)."""
    principal = identify(request)
    if principal is None:
        raise unauthorized("authentication required")
    if principal.role not in enrolment.ENROLLERS:
        raise ProblemError(403, "forbidden", f"role {principal.role} may not enrol devices")
    return principal


def _device_certificate(request: Request) -> Principal:
    principal = identify(request)
    if principal is None or principal.certificate_serial is None:
        raise unauthorized("re-enrolment needs the current device certificate (mutual TLS)")
    return principal


@router.post("/simplereenroll", responses=_ENROL_RESPONSES, openapi_extra=_PKCS10_BODY)
async def simplereenroll(
    request: Request, principal: Annotated[Principal, Depends(_device_certificate)]
) -> Response:
    """Re-enrolment with the device's current certificate over mutual TLS."""
    return await _enrol(request, principal, enrolment.reenrol)
