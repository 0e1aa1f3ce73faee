"""The keyfab service: REST API, EST enrolment (RFC 7030), tokens and roles.

The service itself needs the ``server`` extra (FastAPI, uvicorn): its parts are
imported on first use, so ``keyfab tokens`` and ``keyfab stations`` (which use
only the roles, tokens and stations modules) run on the base install.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from keyfab.authority import Principal, Role

if TYPE_CHECKING:
    from keyfab.server._peer import PeerCertH11Protocol, PeerCertHttpToolsProtocol
    from keyfab.server.app import create_app
    from keyfab.server.tls import TlsFiles, server_files

MAX_BODY = 64 * 1024
"""Enough for any recipe or CSR keyfab accepts; anything larger is refused unread."""

_LAZY = {
    "PeerCertH11Protocol": "keyfab.server._peer",
    "PeerCertHttpToolsProtocol": "keyfab.server._peer",
    "create_app": "keyfab.server.app",
    "TlsFiles": "keyfab.server.tls",
    "server_files": "keyfab.server.tls",
}

__all__ = [
    "MAX_BODY",
    "PeerCertH11Protocol",
    "PeerCertHttpToolsProtocol",
    "Principal",
    "Role",
    "TlsFiles",
    "create_app",
    "server_files",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
