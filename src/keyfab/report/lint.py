"""Certificate profiles judged by DigiCert's pkilint (RFC 5280), in process.

The evidence pack lints one certificate per profile and CA, the same linter
the tests use as keyfab's independent judge. pkilint comes with the
``report`` extra; without it the pack says the profiles were not linted rather
than claim they were.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

THRESHOLD = "WARNING"  # findings at WARNING or worse count, as in the tests


@dataclass(frozen=True)
class Lint:
    """One linted certificate: what it is and pkilint's findings (empty: clean)."""

    subject: str
    profile: str
    serial_number: str
    findings: tuple[str, ...]


def linter() -> Callable[[bytes], tuple[str, ...]] | None:
    """pkilint's RFC 5280 certificate linter as a function of DER, or None if not installed."""
    try:
        from pkilint import loader
        from pkilint.pkix import certificate, extension, name
        from pkilint.validation import ValidationFindingSeverity
    except ImportError:
        return None
    validator = certificate.create_pkix_certificate_validator_container(
        certificate.create_decoding_validators(
            name.ATTRIBUTE_TYPE_MAPPINGS, extension.EXTENSION_MAPPINGS
        ),
        [
            certificate.create_issuer_validator_container([]),
            certificate.create_validity_validator_container(),
            certificate.create_subject_validator_container([]),
            certificate.create_extensions_validator_container([]),
            certificate.create_spki_validator_container([]),
        ],
    )
    threshold = ValidationFindingSeverity[THRESHOLD]
    load = loader.RFC5280CertificateDocumentLoader().load_der_document

    def lint(der: bytes) -> tuple[str, ...]:
        results: Any = validator.validate(load(der, "certificate").root)
        return tuple(
            f"{result.validator}: {found.finding.code} ({found.finding.severity.name})"
            for result in results
            for found in result.finding_descriptions
            if found.finding.severity <= threshold
        )

    return lint


def version() -> str | None:
    """The installed pkilint's version, for the report (None when absent)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("pkilint")
    except PackageNotFoundError:
        return None
