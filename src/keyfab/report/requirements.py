"""The requirements an auditor reads the pack by, each mapped to what keyfab holds.

CRA Annex I Part I (the essential cybersecurity requirements) and the
IEC 62443-4-2 component requirements that device identity, boot and audit
touch. Each entry points at the evidence sections that answer it; a
requirement whose sections hold nothing says so in ``none`` rather than
borrow evidence from elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Evidence = dict[str, Any]


def _devices(e: Evidence) -> bool:
    return bool(e["devices"]["total"])


def _releases(e: Evidence) -> bool:
    return bool(e["releases"])


def _attested(e: Evidence) -> bool:
    return bool(e["attestation"]["results"])


def _linted(e: Evidence) -> bool:
    return bool(e["profiles"]["results"])


def _always(e: Evidence) -> bool:
    return True


@dataclass(frozen=True)
class Requirement:
    """One requirement, the sections answering it, and what to say when they hold nothing."""

    standard: str
    ref: str
    title: str
    sections: tuple[str, ...]  # ids of the report's evidence sections
    holds: Callable[[Evidence], bool]
    none: str

    def to_json(self, evidence: Evidence) -> dict[str, Any]:
        held = self.holds(evidence)
        return {
            "standard": self.standard,
            "ref": self.ref,
            "title": self.title,
            "status": "evidence" if held else "none",
            "sections": list(self.sections) if held else [],
            "statement": "" if held else self.none,
        }


CRA = "CRA Annex I Part I"
IEC = "IEC 62443-4-2"
REQUIREMENTS = (
    Requirement(CRA, "(2)(b)", "Secure by default configuration", ("cas", "devices"), _devices,
                "keyfab holds no provisioned device of this product to show a default for."),
    Requirement(CRA, "(2)(c)", "Security updates", ("releases",), _releases,
                "keyfab holds no signed firmware release of this product."),
    Requirement(CRA, "(2)(d)", "Protection from unauthorised access", ("devices", "certificates"),
                _devices, "keyfab holds no device identity of this product."),
    Requirement(CRA, "(2)(e)", "Confidentiality of stored data", ("cas",), _always, ""),
    Requirement(CRA, "(2)(f)", "Integrity of data, programs and configuration",
                ("releases", "attestation", "profiles"), _releases,
                "keyfab holds no signed release, so no integrity of programs it can show."),
    Requirement(CRA, "(2)(l)", "Recording and monitoring of security-relevant events",
                ("audit",), _always, ""),
    Requirement(IEC, "CR 1.2", "Software process and device identification and authentication",
                ("devices", "certificates"), _devices,
                "keyfab holds no device identity of this product."),
    Requirement(IEC, "CR 1.8", "Public key infrastructure certificates", ("profiles", "cas"),
                _linted, "The certificate profiles were not linted (pkilint not installed)."),
    Requirement(IEC, "CR 1.9", "Strength of public key-based authentication",
                ("cas", "certificates"), _always, ""),
    Requirement(IEC, "CR 3.4", "Software and information integrity", ("releases", "attestation"),
                _releases, "keyfab holds no signed firmware release of this product."),
    Requirement(IEC, "CR 3.9", "Protection of audit information", ("audit",), _always, ""),
    Requirement(IEC, "CR 3.14", "Integrity of the boot process", ("attestation", "releases"),
                _attested, "keyfab holds no attestation result for a device of this product."),
    Requirement(IEC, "EDR 3.10", "Support for updates (authenticity)", ("releases",), _releases,
                "keyfab holds no signed firmware release of this product."),
    Requirement(IEC, "CR 4.3", "Use of cryptography", ("cas", "releases", "profiles"),
                _always, ""),
)  # fmt: skip


def assess(evidence: Evidence) -> list[dict[str, Any]]:
    """Every requirement with its status against ``evidence``."""
    return [requirement.to_json(evidence) for requirement in REQUIREMENTS]
