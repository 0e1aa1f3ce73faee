"""What the workspace publishes: its public URL and how long CRLs and OCSP answers last.

Kept in the registry's ``settings`` table, so every station and server that
shares a registry writes the same URLs into the certificates it issues and
gives its CRLs and OCSP responses the same validity. Changing them is an
audited act (``ca.publication``): it changes what every later certificate says.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from keyfab import audit, pki
from keyfab.errors import ConfigError
from keyfab.registry import Registry, Setting, queries

if TYPE_CHECKING:  # the service reads the settings: importing it here would be a cycle
    from keyfab.authority.service import Authority

BASE_URL, CRL_VALIDITY, OCSP_VALIDITY = "public_url", "crl_validity", "ocsp_validity"
DEFAULT_CRL_VALIDITY = datetime.timedelta(days=7)
DEFAULT_OCSP_VALIDITY = datetime.timedelta(days=1)
MAX_VALIDITY = datetime.timedelta(days=366)
MAX_OCSP_VALIDITY = datetime.timedelta(days=pki.profiles.OCSP_SIGNER_DAYS) / 2
"""An OCSP answer must not outlive the signer certificate vouching for it."""
MIN_VALIDITY = datetime.timedelta(minutes=5)
MAX_URL = 200  # leaves room in the 1024-character column for what follows the base


@dataclass(frozen=True)
class Settings:
    """The workspace's publication settings (defaults where none were set)."""

    base_url: str | None = None
    crl_validity: datetime.timedelta = DEFAULT_CRL_VALIDITY
    ocsp_validity: datetime.timedelta = DEFAULT_OCSP_VALIDITY

    def publication(self, ca_name: str) -> pki.Publication | None:
        """The AIA and CRL DP URLs for certificates CA ``ca_name`` issues, if configured."""
        return None if self.base_url is None else pki.Publication.under(self.base_url, ca_name)


def read(registry: Registry) -> Settings:
    stored = queries.settings(registry)
    return Settings(
        stored.get(BASE_URL),
        _seconds(stored.get(CRL_VALIDITY), DEFAULT_CRL_VALIDITY),
        _seconds(stored.get(OCSP_VALIDITY), DEFAULT_OCSP_VALIDITY),
    )


def _seconds(value: str | None, default: datetime.timedelta) -> datetime.timedelta:
    return default if value is None else datetime.timedelta(seconds=int(value))


def check_base_url(url: str) -> str:
    """An absolute http(s) URL with a host and no query, fragment or credentials."""
    parts = urlsplit(url)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.query
        or parts.fragment
        or parts.username is not None
        or len(url) > MAX_URL
    ):
        raise ConfigError(
            f"public URL {url!r}: give an http(s) URL with a host, no query or user, "
            f"at most {MAX_URL} characters (e.g. https://pki.example.com)"
        )
    return url.rstrip("/")


def _check_validity(what: str, value: datetime.timedelta, high: datetime.timedelta) -> None:
    if not MIN_VALIDITY <= value <= high:
        raise ConfigError(f"{what} must be between {MIN_VALIDITY} and {high}")


def configure(
    authority: Authority,
    *,
    by: str,
    base_url: str | None = None,
    crl_validity: datetime.timedelta | None = None,
    ocsp_validity: datetime.timedelta | None = None,
) -> Settings:
    """Change the settings given (the others stay), audited as ``ca.publication``."""
    changes: dict[str, str] = {}
    if base_url is not None:
        changes[BASE_URL] = check_base_url(base_url)
    if crl_validity is not None:
        _check_validity("the CRL validity", crl_validity, MAX_VALIDITY)
        changes[CRL_VALIDITY] = str(int(crl_validity.total_seconds()))
    if ocsp_validity is not None:
        _check_validity("the OCSP validity", ocsp_validity, MAX_OCSP_VALIDITY)
        changes[OCSP_VALIDITY] = str(int(ocsp_validity.total_seconds()))
    if changes:
        with authority.transaction() as session:
            for name, value in changes.items():
                session.merge(Setting(name=name, value=value))
            audit.append(session, "ca.publication", "workspace", {**changes, "by": by})
    return read(authority.registry)
