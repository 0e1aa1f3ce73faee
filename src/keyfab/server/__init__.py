"""The keyfab service: REST API, EST enrolment (RFC 7030), tokens and roles."""

from keyfab.authority import Principal, Role
from keyfab.server._peer import PeerCertH11Protocol, PeerCertHttpToolsProtocol
from keyfab.server.app import MAX_BODY, create_app
from keyfab.server.tls import TlsFiles, server_files

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
