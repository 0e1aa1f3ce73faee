"""The agent's side of the server's API: EST, attestation, device events.

Standard library only (``http.client`` over ``ssl``), so the device needs no
server extra. The agent speaks as its device: mutual TLS with its operational
certificate (``<state_dir>/certificate.pem`` and ``ldevid.key``) once it has
one, a device token (``[agent] est_token``) for the first enrolment.
Answers are bounded; a refusal is one line naming the status and the
problem's title.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs7

from keyfab.errors import KeyfabError

MAX_ANSWER = 256 * 1024
TIMEOUT = 30.0


class ServerError(KeyfabError):
    """The server could not be reached or refused; ``status`` 0 when unreachable, ``slug``
    the problem type's last word (``renewal-not-due``) when the server sent one."""

    def __init__(self, message: str, status: int = 0, slug: str | None = None):
        super().__init__(message)
        self.status = status
        self.slug = slug


@dataclass(frozen=True)
class Identity:
    """How the agent authenticates: a client certificate and key file, or a bearer token."""

    certificate: Path | None = None
    key: Path | None = None
    token: str | None = None


class ServerApi:
    def __init__(self, url: str, serial: str, trust: Path | None):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("https", "http") or not parsed.hostname:
            raise KeyfabError(f"server {url!r} is not an http(s) URL")
        self.url = parsed
        self.serial = serial
        self.trust = trust

    def prepare(self, identity: Identity) -> http.client.HTTPConnection:
        """A connection with its TLS identity loaded now (files read), not yet opened."""
        return self._connection(identity)

    def _connection(self, identity: Identity) -> http.client.HTTPConnection:
        host, port = self.url.hostname or "", self.url.port
        if self.url.scheme == "http":
            return http.client.HTTPConnection(host, port, timeout=TIMEOUT)
        context = ssl.create_default_context(cafile=None if self.trust is None else str(self.trust))
        if identity.certificate is not None and identity.key is not None:
            context.load_cert_chain(str(identity.certificate), str(identity.key))
        return http.client.HTTPSConnection(host, port, timeout=TIMEOUT, context=context)

    def request(
        self,
        method: str,
        path: str,
        identity: Identity,
        body: bytes = b"",
        content_type: str = "application/json",
        connection: http.client.HTTPConnection | None = None,
    ) -> bytes:
        """One request; ``connection`` may be made ahead (``prepare``), e.g. before the
        files that authenticate it are erased."""
        headers = {"Content-Type": content_type, "Accept": "*/*"}
        if identity.token is not None:
            headers["Authorization"] = f"Bearer {identity.token}"
        connection = connection or self._connection(identity)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read(MAX_ANSWER + 1)
        except (OSError, http.client.HTTPException) as error:
            raise ServerError(f"server {self.url.netloc}: {error}") from None
        finally:
            connection.close()
        if len(answer) > MAX_ANSWER:
            raise ServerError(f"server {self.url.netloc}: answer larger than {MAX_ANSWER} bytes")
        if response.status >= 300:
            raise ServerError(
                f"{method} {path}: {response.status} {_title(answer)}",
                response.status,
                _slug(answer),
            )
        return answer

    def json(self, method: str, path: str, identity: Identity, document: Any = None) -> Any:
        body = b"" if document is None else json.dumps(document).encode()
        answer = self.request(method, path, identity, body)
        try:
            return json.loads(answer)
        except ValueError:
            raise ServerError(f"{method} {path}: the answer is not JSON") from None

    # the calls the agent makes -------------------------------------------------------

    def enrol(self, csr_der: bytes, identity: Identity, *, renew: bool) -> list[x509.Certificate]:
        """EST simpleenroll (token) or simplereenroll (mTLS): the issued certificate(s)."""
        operation = "simplereenroll" if renew else "simpleenroll"
        answer = self.request(
            "POST",
            f"/.well-known/est/{operation}",
            identity,
            base64.encodebytes(csr_der),
            "application/pkcs10",
        )
        try:
            return pkcs7.load_der_pkcs7_certificates(base64.b64decode(answer))
        except ValueError:
            raise ServerError(f"EST {operation}: the answer is not certs-only PKCS#7") from None

    def cacerts(self) -> list[x509.Certificate]:
        answer = self.request("GET", "/.well-known/est/cacerts", Identity())
        try:
            return pkcs7.load_der_pkcs7_certificates(base64.b64decode(answer))
        except ValueError:
            raise ServerError("EST cacerts: the answer is not certs-only PKCS#7") from None

    def challenge(self, identity: Identity) -> dict[str, Any]:
        found = self.json("POST", f"/api/v1/devices/{self.serial}/attestation/challenge", identity)
        if not isinstance(found, dict):
            raise ServerError("attestation challenge: not a JSON object")
        return found

    def evidence(self, identity: Identity, document: bytes) -> dict[str, Any]:
        answer = self.request(
            "POST", f"/api/v1/devices/{self.serial}/attestation", identity, document
        )
        found = json.loads(answer)
        if not isinstance(found, dict):
            raise ServerError("attestation result: not a JSON object")
        return found

    def event(
        self,
        identity: Identity,
        kind: str,
        details: dict[str, Any],
        connection: http.client.HTTPConnection | None = None,
    ) -> None:
        body = json.dumps({"kind": kind, "details": details}).encode()
        self.request(
            "POST", f"/api/v1/devices/{self.serial}/events", identity, body, connection=connection
        )


def _title(answer: bytes) -> str:
    try:
        problem = json.loads(answer)
    except ValueError:
        return answer[:120].decode(errors="replace").strip()
    if isinstance(problem, dict):
        return str(problem.get("detail") or problem.get("title") or "")[:200]
    return ""


def _slug(answer: bytes) -> str | None:
    """``urn:keyfab:problem:<slug>`` of a problem document, if it is one."""
    try:
        problem = json.loads(answer)
    except ValueError:
        return None
    kind = problem.get("type") if isinstance(problem, dict) else None
    prefix = "urn:keyfab:problem:"
    return kind[len(prefix) :][:64] if isinstance(kind, str) and kind.startswith(prefix) else None
