"""The OCSP responder of every issuing CA (RFC 6960, RFC 5019 profile).

Each CA answers through a delegated signer (``pki.ocsp_signer``): a 7-day
certificate whose key is a 0600 file in ``<home>/ocsp/``, re-issued by
whichever process of that home first sees it within ``RENEW_BEFORE`` of its
end, under a file lock so several workers never issue two. Stations sharing
a registry from other homes each keep their own signer; all are issued and
recorded by the same CA, so clients accept any of them.

Answers without a nonce are signed once per (CA, CertID) and served from
memory until half their validity has passed or a revocation happens. A
revocation is seen by a marker, (revoked count, newest revocation time),
read at most every ``FRESHNESS`` seconds: revocations are final, so the pair
changes with each one, whichever process made it. Answers with a nonce are
signed afresh. Unknown serials are never cached, so made-up requests cannot
fill memory. Cached answers are also found by the request's own bytes (for
requests up to ``_KEY_LIMIT`` bytes, which every one-CertID request without
nonce is): a client asks with the same bytes each time, and a dictionary
lookup costs far less than parsing them again.

Refusals (a CA keyfab does not run, a malformed request) leave no audit
event: OCSP is public and unauthenticated, so anyone could flood the log
with them, and they reveal or change nothing. The access log keeps them.
"""

from __future__ import annotations

import datetime
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.ocsp import OCSPResponseStatus

from keyfab import pki
from keyfab.authority.credentials import issue_ocsp_signer
from keyfab.authority.service import Authority
from keyfab.clock import utc_now
from keyfab.errors import KeyfabError
from keyfab.pki import ocsp
from keyfab.registry import CaKind, queries
from keyfab.securefile import read_bounded, write_secret

_log = logging.getLogger(__name__)

RENEW_BEFORE = datetime.timedelta(days=2)
"""A signer with less left than this is replaced (its answers last at most 3.5 days)."""
FRESHNESS = 0.5
"""Seconds between looks at the revocation marker: a revocation shows within 1 s."""
CACHE_LIMIT = 200_000
"""Cached answers kept at most (about 1 KB each); the oldest go first."""
_FILE_LIMIT = 16 * 1024
_KEY_LIMIT = 160
"""Bytes: longer requests are found by CertID only, so variants cannot fill memory faster."""

_Key = TypeVar("_Key")

MALFORMED = ocsp.error_response(OCSPResponseStatus.MALFORMED_REQUEST)
UNAUTHORIZED = ocsp.error_response(OCSPResponseStatus.UNAUTHORIZED)
INTERNAL_ERROR = ocsp.error_response(OCSPResponseStatus.INTERNAL_ERROR)


@dataclass(frozen=True)
class Answer:
    """An OCSPResponse (DER) and how long HTTP caches may keep it (None: not at all)."""

    der: bytes
    max_age: int | None = None


@dataclass(frozen=True)
class _Cached:
    der: bytes
    refresh_at: datetime.datetime  # half-way to nextUpdate
    next_update: datetime.datetime


class Responder:
    """Answers OCSP requests for the workspace's issuing CAs (one per server process)."""

    def __init__(self, authority: Authority, home: Path):
        self._authority = authority
        self._folder = home / "ocsp"
        self._validity = authority.settings.ocsp_validity
        cas = {n: r for n, r in authority.records.items() if r.kind == CaKind.MANUFACTURING}
        self._certificates = {
            name: x509.load_der_x509_certificate(row.certificate) for name, row in cas.items()
        }
        self._issuers = {
            issuer: name
            for name, certificate in self._certificates.items()
            for issuer in ocsp.issuer_ids(certificate)
        }
        self._signers: dict[str, ocsp.Signer] = {}
        self._cache: dict[tuple[tuple[str, bytes, bytes], int], _Cached] = {}
        self._by_request: dict[bytes, _Cached] = {}  # the same answers, by request bytes
        self._generation = 0  # bumped whenever the cache is dropped
        self._marker: tuple[int, datetime.datetime | None] | None = None
        self._checked = -FRESHNESS
        self._lock = threading.Lock()

    @classmethod
    def open(cls, authority: Authority, home: Path) -> Responder:
        """A responder with every CA's signer ready (issued now if missing or expiring)."""
        responder = cls(authority, home)
        for name in responder._certificates:
            responder._signer(name)
        return responder

    @property
    def certificates(self) -> Mapping[str, x509.Certificate]:
        """The CAs this responder answers for, by name."""
        return self._certificates

    def from_memory(self, der: bytes) -> Answer | None:
        """The answer if it takes no I/O (an error, or a cached answer known fresh), else None.

        The service calls this on its event loop and ``respond`` in a thread
        only when it says None: the common case never leaves the loop.
        """
        fresh = time.monotonic() - self._checked < FRESHNESS
        hit = self._by_request.get(der) if fresh else None
        if hit is None:
            request = self._parse(der)
            if isinstance(request, Answer):
                return request
            if request.nonce is not None or not fresh:
                return None
            hit = self._cache.get((request.issuer, request.serial_number))
        now = utc_now()
        if hit is None or hit.refresh_at <= now:
            return None
        return Answer(hit.der, int((hit.next_update - now).total_seconds()))

    def _parse(self, der: bytes) -> ocsp.Request | Answer:
        """The request, or the error answer it gets (malformed, or a CA not run here)."""
        try:
            request = ocsp.parse_request(der)
        except ocsp.MalformedRequestError:
            return Answer(MALFORMED)
        return request if request.issuer in self._issuers else Answer(UNAUTHORIZED)

    def respond(self, der: bytes) -> Answer:
        """The answer to the request in ``der``: never an exception, an OCSP status instead."""
        request = self._parse(der)
        if isinstance(request, Answer):
            return request
        name = self._issuers[request.issuer]
        try:
            if request.nonce is not None:
                return Answer(self._sign(name, request, self._status(name, request)))
            return self._cached(name, request, der)
        except Exception:  # the responder's error boundary: internalError, never a 500
            _log.exception("OCSP answer for the %s CA failed", name)
            return Answer(INTERNAL_ERROR)

    def _cached(self, name: str, request: ocsp.Request, der: bytes) -> Answer:
        self._check_marker()
        generation = self._generation
        key = (request.issuer, request.serial_number)
        now = utc_now()
        hit = self._cache.get(key)
        if hit is None or hit.refresh_at <= now:
            status = self._status(name, request)
            signed = self._sign(name, request, status, now)
            if status is ocsp.UNKNOWN:
                return Answer(signed)
            hit = _Cached(signed, now + self._validity / 2, now + self._validity)
        self._keep(generation, key, der, hit)
        return Answer(hit.der, int((hit.next_update - now).total_seconds()))

    def _keep(
        self, generation: int, key: tuple[tuple[str, bytes, bytes], int], der: bytes, hit: _Cached
    ) -> None:
        """Cache ``hit`` unless a revocation was seen since ``generation`` (it may predate it)."""
        with self._lock:  # the same lock as the marker check: no store lands after a clear
            if generation != self._generation:
                return
            _store(self._cache, key, hit)
            if len(der) <= _KEY_LIMIT:
                _store(self._by_request, der, hit)

    def _check_marker(self) -> None:
        """Drop the cache if a revocation happened since the last look (at most every 0.5 s)."""
        started = time.monotonic()
        if started - self._checked < FRESHNESS:
            return
        with self._lock:
            if started - self._checked < FRESHNESS:
                return
            marker = queries.revocations(self._authority.registry)
            if marker != self._marker:
                self._generation += 1
                self._cache.clear()
                self._by_request.clear()
                self._marker = marker
            self._checked = started  # whatever committed before ``started`` is now seen

    def _status(self, name: str, request: ocsp.Request) -> ocsp.Status:
        found = queries.status(self._authority.registry, pki.serial_hex(request.serial_number))
        if found is None or not _issued_by(found.der, self._certificates[name]):
            return ocsp.UNKNOWN
        if found.revoked_at is None:
            return ocsp.GOOD
        return ocsp.revoked(found.revoked_at, pki.RevocationReason.from_record(found.reason))

    def _sign(
        self,
        name: str,
        request: ocsp.Request,
        status: ocsp.Status,
        now: datetime.datetime | None = None,
    ) -> bytes:
        signer = self._signer(name)
        this_update = now or utc_now()
        next_update = min(this_update + self._validity, signer.certificate.not_valid_after_utc)
        return ocsp.sign_response(
            signer, request, status, this_update, next_update, nonce=request.nonce
        )

    def _signer(self, name: str) -> ocsp.Signer:
        signer = self._signers.get(name)
        if signer is None or _expiring(signer):
            with self._lock:
                signer = self._signers.get(name)
                if signer is None or _expiring(signer):
                    signer = self._signers[name] = self._load_or_issue(name)
        return signer

    def _load_or_issue(self, name: str) -> ocsp.Signer:
        """The home's signer for CA ``name``; issued here if no worker has a good one."""
        self._folder.mkdir(mode=0o700, exist_ok=True)
        key_file, cert_file = self._folder / f"{name}.key", self._folder / f"{name}.pem"
        with _locked(self._folder / f"{name}.lock"):
            signer = self._read(name, key_file, cert_file)
            if signer is not None:
                return signer
            credential = issue_ocsp_signer(self._authority, name)
            write_secret(key_file, credential.key_pem, replace=True)
            pem = credential.certificate.public_bytes(serialization.Encoding.PEM)
            write_secret(cert_file, pem, replace=True)  # public, but never written via a symlink
            _log.info(
                "issued the %s CA's OCSP signer %s", name, pki.serial_hex(credential.certificate)
            )
            key = serialization.load_pem_private_key(credential.key_pem, None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            return ocsp.Signer(credential.certificate, key)

    def _read(self, name: str, key_file: Path, cert_file: Path) -> ocsp.Signer | None:
        """The signer in the files if usable: its key, from the CA, not revoked nor expiring."""
        try:
            certificate = x509.load_pem_x509_certificate(
                read_bounded(cert_file, _FILE_LIMIT, "signer")
            )
            key = serialization.load_pem_private_key(
                read_bounded(key_file, _FILE_LIMIT, "key"), None
            )
        except (KeyfabError, ValueError, TypeError):
            return None
        if (
            not isinstance(key, ec.EllipticCurvePrivateKey)
            or key.public_key() != certificate.public_key()
        ):
            return None
        signer = ocsp.Signer(certificate, key)
        if _expiring(signer) or not _issued_by(certificate, self._certificates[name]):
            return None
        recorded = queries.status(self._authority.registry, pki.serial_hex(certificate))
        return signer if recorded is not None and recorded.revoked_at is None else None


def _store(cache: dict[_Key, _Cached], key: _Key, entry: _Cached) -> None:
    """Keep ``entry``, dropping the oldest entry when the cache is full."""
    if key not in cache and len(cache) >= CACHE_LIMIT:
        cache.pop(next(iter(cache)), None)
    cache[key] = entry


def _expiring(signer: ocsp.Signer) -> bool:
    return signer.certificate.not_valid_after_utc - utc_now() < RENEW_BEFORE


def _issued_by(certificate: bytes | x509.Certificate, ca: x509.Certificate) -> bool:
    """True if ``ca``'s key signed ``certificate`` (a name match alone could be another CA's)."""
    try:
        if isinstance(certificate, bytes):
            certificate = x509.load_der_x509_certificate(certificate)
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock between the processes of one home (released when the block ends)."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)
