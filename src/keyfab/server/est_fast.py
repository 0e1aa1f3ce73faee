"""EST token enrolments answered before the framework: ``simpleenroll`` with a token.

Once the enrolment itself shares its transaction with its neighbours
(``authority.group``), Starlette's and FastAPI's routing, middleware and
exception machinery around a request cost a good part of what is left. So a
``POST /.well-known/est/simpleenroll`` that carries a well-formed token and a
PKCS#10 body of bounded length is enrolled here, through the same
``enrolment.enrol_with_token_async`` the route calls, and answered here: the
certificate, or the authority's refusal as the same problem document the
application's handler makes (``problems.from_keyfab_error``, ``send_problem``),
so a refused request is judged once. Anything else (another path, no token, a
malformed header or body) goes on to the routes of ``est.py`` with what was
read of the body replayed, before any enrolment work.
``keyfab serve`` wraps the application in it (``app.from_environment``), as
it does in the OCSP cache.
"""

from __future__ import annotations

import time

from cryptography import x509
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyfab.authority import enrolment
from keyfab.errors import KeyfabError
from keyfab.server._logs import log_request
from keyfab.server._peer import tls_unique
from keyfab.server._service import Service
from keyfab.server.auth import presented_token
from keyfab.server.est_messages import (
    CERTS_ONLY,
    MAX_CSR_BYTES,
    PKCS10,
    MessageError,
    certs_only,
    decode_csr,
)
from keyfab.server.problems import from_keyfab_error, request_header, send_problem

PATH = "/.well-known/est/simpleenroll"
_MAX_BODY = MAX_CSR_BYTES * 4 // 3 + 1024  # what est_messages accepts as base64
_HEADERS = ((b"content-type", CERTS_ONLY.encode()), (b"content-transfer-encoding", b"base64"))


class TokenEnrolments:
    """ASGI middleware: token enrolments that succeed, answered without the framework."""

    def __init__(self, app: ASGIApp, service: Service):
        self.app, self.service = app, service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == PATH and scope["method"] == "POST":
            started = time.perf_counter()
            body, receive = await _small_body(scope, receive)
            if body is not None and await self._answered(scope, body, send, started):
                return
        await self.app(scope, receive, send)

    async def _answered(self, scope: Scope, body: bytes, send: Send, started: float) -> bool:
        """Enrol and answer, certificate or refusal; False leaves the request to the route
        (no token, a malformed header or body: judged before any enrolment work)."""
        header = request_header(scope, b"authorization")
        if header is None:
            return False
        try:
            presented, user = presented_token(header)
            csr: x509.CertificateSigningRequest = decode_csr(body)
        except (KeyfabError, MessageError):
            return False
        try:
            certificate, principal = await enrolment.enrol_with_token_async(
                self.service.authority, presented, csr, tls_unique(scope), user=user
            )
        except KeyfabError as refused:
            problem = from_keyfab_error(refused)
            headers = [(k.lower().encode(), v.encode()) for k, v in (problem.headers or {}).items()]
            await send_problem(scope, send, problem, headers)
            log_request(scope, "-", problem.status, started)
            return True
        await _send(send, certs_only([certificate]))
        log_request(scope, principal.name, 200, started)
        return True


async def _small_body(scope: Scope, receive: Receive) -> tuple[bytes | None, Receive]:
    """A PKCS#10 body of announced, bounded length, and a receive that replays it."""
    length = request_header(scope, b"content-length")
    media = (request_header(scope, b"content-type") or "").split(";")[0].strip().lower()
    if media != PKCS10 or length is None or not length.isdigit() or int(length) > _MAX_BODY:
        return None, receive
    messages: list[Message] = []
    body = b""
    while True:
        message = await receive()
        messages.append(message)
        body += message.get("body", b"")
        if message["type"] != "http.request" or not message.get("more_body"):
            break
        if len(body) > _MAX_BODY:
            return None, _replaying(messages, receive)
    complete = messages[-1]["type"] == "http.request" and len(body) <= _MAX_BODY
    return (body if complete else None), _replaying(messages, receive)


def _replaying(messages: list[Message], receive: Receive) -> Receive:
    replay = iter(messages)

    async def replayed() -> Message:
        return next(replay, None) or await receive()

    return replayed


async def _send(send: Send, der: bytes) -> None:
    headers = [*_HEADERS, (b"content-length", str(len(der)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": der})
