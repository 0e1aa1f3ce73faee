"""What a CA demands of TPM evidence before it issues: the policy, apart from the mechanics.

Object attributes are those of TPM 2.0 Part 2 (TPMA_OBJECT). The defaults follow
the TCG device identity specification: both keys fixedTPM, fixedParent and
sensitiveDataOrigin (made in this TPM and unable to leave it), the IAK also
restricted and signing-only. EK certificates must chain to a configured TPM
vendor root; optionally only listed TPM manufacturers (TCG vendor ids such as
``id:00001014``) are accepted.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from keyfab.clock import utc_now
from keyfab.errors import ConfigError
from keyfab.pki.files import load_certificates

FIXED_TPM = 0x00000002
FIXED_PARENT = 0x00000010
SENSITIVE_DATA_ORIGIN = 0x00000020
RESTRICTED = 0x00010000
DECRYPT = 0x00020000
SIGN = 0x00040000

ATTRIBUTE_NAMES = {
    FIXED_TPM: "fixedTPM",
    FIXED_PARENT: "fixedParent",
    SENSITIVE_DATA_ORIGIN: "sensitiveDataOrigin",
    RESTRICTED: "restricted",
    DECRYPT: "decrypt",
    SIGN: "sign",
}

KEY_REQUIRED = FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN | SIGN
IAK_REQUIRED = KEY_REQUIRED | RESTRICTED
IAK_FORBIDDEN = DECRYPT
EK_REQUIRED = FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN | RESTRICTED | DECRYPT


def missing_attributes(attributes: int, required: int) -> list[str]:
    """Names of the required attribute bits that ``attributes`` lacks."""
    return [
        name for bit, name in ATTRIBUTE_NAMES.items() if required & bit and not attributes & bit
    ]


@dataclass(frozen=True)
class Tpm2Policy:
    """The CA's rules for TPM evidence."""

    ek_roots: Sequence[x509.Certificate]
    ek_intermediates: Sequence[x509.Certificate] = ()
    manufacturers: frozenset[str] = frozenset()  # empty: any vendor whose EK chains
    key_required: int = KEY_REQUIRED
    iak_required: int = IAK_REQUIRED
    iak_forbidden: int = IAK_FORBIDDEN
    ek_required: int = EK_REQUIRED
    now: datetime.datetime = field(default_factory=utc_now)

    def __post_init__(self) -> None:
        if not self.ek_roots:
            raise ConfigError("tpm2 policy: no EK roots configured (ek_roots)")

    @classmethod
    def from_paths(cls, paths: Iterable[str | Path], **kwargs: object) -> Tpm2Policy:
        """Roots and intermediates from PEM files or directories of them (``ek_roots``).

        Self-signed certificates become roots; the others intermediates, which
        are only ever used to build a path up to a root.
        """
        roots: list[x509.Certificate] = []
        intermediates: list[x509.Certificate] = []
        for certificate in _load_all(paths):
            self_signed = certificate.subject == certificate.issuer
            (roots if self_signed else intermediates).append(certificate)
        return cls(ek_roots=roots, ek_intermediates=intermediates, **kwargs)  # type: ignore[arg-type]


def _load_all(paths: Iterable[str | Path]) -> list[x509.Certificate]:
    return [c for path in map(Path, paths) for c in load_certificates(path, "EK root")]


def policy_from_options(options: Mapping[str, Any], base: Path) -> Tpm2Policy:
    """The policy a recipe's ``[rot]`` table asks for: ``ek_roots`` (paths from ``base``)."""
    roots = options.get("ek_roots")
    if isinstance(roots, str):
        roots = [roots]
    if not roots or not isinstance(roots, list):
        raise ConfigError('tpm2: [rot] needs ek_roots = ["ek-roots/"] to check EK certificates')
    return Tpm2Policy.from_paths([p if Path(p).is_absolute() else base / p for p in roots])
