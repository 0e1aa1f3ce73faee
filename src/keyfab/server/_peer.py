"""Hand the TLS peer's certificate (and tls-unique) to the application.

(And set TCP_NODELAY on every connection, see ``_no_delay``.)

uvicorn does not implement the ASGI TLS extension, so this H11 protocol adds
``scope["extensions"]["tls"]`` itself, per connection: ``client_cert`` (DER or
None, already verified by the TLS layer against keyfab's chain) and
``tls_unique`` (bytes, or None under TLS 1.3 where it does not exist).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any

from starlette.types import Receive, Scope, Send
from uvicorn._types import ASGI3Application
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_TLS_UNIQUE_VERSIONS = frozenset({"TLSv1.2"})
"""tls-unique is defined up to TLS 1.2 only (RFC 9266 section 3); keyfab accepts 1.2+."""


def _tls_info(transport: asyncio.Transport) -> dict[str, Any] | None:
    ssl_object = transport.get_extra_info("ssl_object")
    if not isinstance(ssl_object, ssl.SSLObject):
        return None
    version = ssl_object.version()
    unique = None
    if version in _TLS_UNIQUE_VERSIONS:  # OpenSSL answers under TLS 1.3 too, meaninglessly
        try:
            unique = ssl_object.get_channel_binding("tls-unique")
        except ValueError:
            unique = None
    return {
        "client_cert": ssl_object.getpeercert(binary_form=True),
        "tls_unique": unique,
        "version": version,
    }


def _no_delay(transport: asyncio.Transport) -> None:
    """Turn Nagle off on every connection.

    asyncio does so only for sockets whose ``proto`` says TCP; the listening socket
    uvicorn hands its worker processes comes from ``socket.fromfd`` with proto 0,
    so with ``--workers`` > 1 every small response would wait for a delayed ACK
    (about 40 ms each).
    """
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _with_tls(app: ASGI3Application, transport: asyncio.Transport) -> ASGI3Application:
    """``app`` with this connection's TLS facts added to every request's scope."""
    _no_delay(transport)
    info = _tls_info(transport)
    if info is None:
        return app

    async def with_tls(scope: Scope, receive: Receive, send: Send) -> None:
        scope.setdefault("extensions", {})["tls"] = info
        await app(scope, receive, send)  # type: ignore[arg-type]

    return with_tls  # type: ignore[return-value]


class PeerCertH11Protocol(H11Protocol):
    """uvicorn's h11 (pure Python) protocol plus the ASGI ``tls`` scope extension."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.app = _with_tls(self.app, transport)


class PeerCertHttpToolsProtocol(HttpToolsProtocol):
    """The same on uvicorn's httptools protocol, whose C parser costs a fraction of h11's."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.app = _with_tls(self.app, transport)


def peer_certificate(scope: Scope) -> bytes | None:
    tls = scope.get("extensions", {}).get("tls") or {}
    cert = tls.get("client_cert")
    return cert if isinstance(cert, bytes) else None


def tls_unique(scope: Scope) -> bytes | None:
    tls = scope.get("extensions", {}).get("tls") or {}
    value = tls.get("tls_unique")
    return value if isinstance(value, bytes) else None
