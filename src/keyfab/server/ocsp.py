"""OCSP (RFC 6960 appendix A, RFC 5019), the CRL and the CA certificates over plain HTTP.

The URLs keyfab writes into certificates (``keyfab ca urls``) point here:
``/ocsp`` (POST the DER request, or GET it base64 in the path), ``/crl/<ca>.crl``
and ``/ca/<ca>.crt``. All public, all DER. Every OCSP request gets an OCSP
response, errors included (``malformedRequest``, ``unauthorized``,
``internalError``); only a body of the wrong media type is refused in HTTP.
"""

from __future__ import annotations

import base64
import binascii
import functools
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding
from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyfab.authority import current_crl
from keyfab.authority.ocsp import MALFORMED, Answer, Responder
from keyfab.pki.ocsp import MAX_REQUEST, MEDIA_REQUEST, MEDIA_RESPONSE
from keyfab.server.auth import service
from keyfab.server.problems import ProblemError, problem_responses, request_header

router = APIRouter(tags=["pki"])
_MAX_ENCODED = (MAX_REQUEST + 2) // 3 * 4 + 16  # base64 of the largest request, some padding
_OCSP_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {MEDIA_RESPONSE: {}}, "description": "a DER OCSPResponse"}
}
_OCSP_BODY = {
    "requestBody": {"required": True, "content": {MEDIA_REQUEST: {"schema": {"type": "string"}}}}
}


def _cache_control(answer: Answer) -> str:
    """RFC 5019 section 6.2: a cacheable answer says for how long; the others are not kept."""
    if answer.max_age is None:
        return "no-store"
    return f"max-age={max(answer.max_age, 0)}, public, no-transform, must-revalidate"


def _response(answer: Answer) -> Response:
    headers = {"Cache-Control": _cache_control(answer)}
    return Response(answer.der, media_type=MEDIA_RESPONSE, headers=headers)


async def _answer(request: Request, der: bytes) -> Response:
    responder = service(request).ocsp
    answer = responder.from_memory(der)
    if answer is None:
        answer = await run_in_threadpool(responder.respond, der)
    return _response(answer)


@router.post(
    "/ocsp", responses={**_OCSP_RESPONSE, **problem_responses(413, 415)}, openapi_extra=_OCSP_BODY
)
async def ocsp_post(request: Request) -> Response:
    """An OCSP request in the body (``application/ocsp-request``)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != MEDIA_REQUEST:
        raise ProblemError(415, "unsupported-media-type", f"send the request as {MEDIA_REQUEST}")
    return await _answer(request, await request.body())


@router.get("/ocsp/{encoded:path}", responses={**_OCSP_RESPONSE, **problem_responses(422)})
async def ocsp_get(request: Request, encoded: str) -> Response:
    """An OCSP request as url-encoded base64 in the path (RFC 6960 appendix A.1)."""
    if len(encoded) > _MAX_ENCODED:
        return _response(Answer(MALFORMED))
    try:
        der = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return _response(Answer(MALFORMED))
    return await _answer(request, der)


@router.get(
    "/crl/{name}.crl",
    responses={200: {"content": {"application/pkix-crl": {}}}, **problem_responses(404, 422)},
)
def crl(request: Request, name: str) -> Response:
    """The CA's current CRL, DER (the CRL distribution point of its certificates)."""
    authority = service(request).authority
    if name not in service(request).ocsp.certificates:  # the manufacturing CAs, retired too
        raise ProblemError(404, "ca-not-found", f"no CRL for a CA named {name!r}")
    signed = current_crl(authority, name)
    return Response(signed.public_bytes(Encoding.DER), media_type="application/pkix-crl")


@router.get(
    "/ca/{name}.crt",
    responses={200: {"content": {"application/pkix-cert": {}}}, **problem_responses(404, 422)},
)
def ca_certificate(request: Request, name: str) -> Response:
    """A CA certificate, DER (the caIssuers URL of the certificates it issued)."""
    found = service(request).ca_certificates.get(name)
    if found is None:
        raise ProblemError(404, "ca-not-found", f"no CA named {name!r}")
    return Response(found, media_type="application/pkix-cert")


class CachedAnswers:
    """ASGI middleware: answer OCSP requests whose signed answer is in memory, first.

    A relying party asks about the same certificates again and again; once an
    answer is signed, sending it again is a dictionary lookup, and the request
    routing, body checks and access logging around it would cost several times
    more. So a cached, cacheable answer is sent from here; everything else (a
    miss, a nonce, an error, a wrong media type) goes on to the routes above,
    with what was read of the body replayed. Hits are not access-logged.
    ``keyfab serve`` wraps the whole application in it (``app.from_environment``),
    so a hit does not pass through Starlette's and FastAPI's own middleware.
    """

    def __init__(self, app: ASGIApp, responder: Responder):
        self.app, self.responder = app, responder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/ocsp"):
            der, receive = await _request_der(scope, receive)
            answer = None if der is None else self.responder.from_memory(der)
            if answer is not None and answer.max_age is not None:
                await _send(send, answer)
                return
        await self.app(scope, receive, send)


async def _request_der(scope: Scope, receive: Receive) -> tuple[bytes | None, Receive]:
    """The DER request of a plain GET or a small POST, and a receive that replays the body."""
    if scope["method"] == "GET" and scope["path"].startswith("/ocsp/"):
        encoded = scope["path"][len("/ocsp/") :]
        try:
            return base64.b64decode(encoded, validate=True), receive
        except (binascii.Error, ValueError):
            return None, receive
    length = request_header(scope, b"content-length")
    media = (request_header(scope, b"content-type") or "").split(";")[0].strip().lower()
    if (
        scope["method"] != "POST"
        or media != MEDIA_REQUEST
        or length is None
        or not length.isdigit()
        or int(length) > MAX_REQUEST
    ):
        return None, receive
    messages, body = [], b""
    while True:
        message = await receive()
        messages.append(message)
        body += message.get("body", b"")
        if (
            message["type"] != "http.request"
            or not message.get("more_body")
            or len(body) > MAX_REQUEST
        ):
            break
    replay = iter(messages)

    async def replayed() -> Message:
        return next(replay, None) or await receive()

    return body, replayed


async def _send(send: Send, answer: Answer) -> None:
    headers = _headers(len(answer.der), answer.max_age)
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer.der})


@functools.lru_cache(maxsize=1024)
def _headers(length: int, max_age: int | None) -> tuple[tuple[bytes, bytes], ...]:
    """The headers of a cached answer, built once per (length, max-age second), not per hit."""
    return (
        (b"content-type", MEDIA_RESPONSE.encode()),
        (b"content-length", str(length).encode()),
        (b"cache-control", _cache_control(Answer(b"", max_age)).encode()),
    )
