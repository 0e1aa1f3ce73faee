"""The attestation evidence a device sends: one small JSON document, and how to make it.

```
{"format": "keyfab-attestation-v1",
 "nonce": "<base64: the challenge's nonce>",
 "quote": "<base64: TPMS_ATTEST as TPM2_Quote made it>",
 "signature": "<base64: TPMT_SIGNATURE by the IAK>",
 "pcrs": {"sha256": {"0": "<hex>", ...}},
 "eventlog": "<base64: the TCG crypto-agile boot event log>",
 "iak_certificate": "<base64: DER, optional>"}
```

JSON because the API speaks it and a device agent can write it with no
library; the TPM structures stay raw bytes so the verifier checks exactly what
the TPM signed. Everything is bounded before it is decoded: the document, each
field, the PCR map. Any defect is one ``VerificationError`` line.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from keyfab.errors import VerificationError
from keyfab.rot import Evidence

FORMAT = "keyfab-attestation-v1"
MAX_EVIDENCE = 64 * 1024  # the whole JSON document; the API's body limit is the same
MAX_EVENTLOG = 48 * 1024
_FIELDS = {"format", "nonce", "quote", "signature", "pcrs", "eventlog", "iak_certificate"}
_LIMITS = {"nonce": 64, "quote": 1024, "signature": 1024, "iak_certificate": 8192}
_DIGEST_SIZES = {"sha256": 32, "sha384": 48, "sha512": 64}
_PCR_COUNT = 24
_PCR_NAMES = frozenset(str(i) for i in range(_PCR_COUNT))


@dataclass(frozen=True)
class AttestationEvidence:
    """A device's answer to a challenge, decoded but not yet verified."""

    nonce: bytes
    quote: bytes
    signature: bytes
    bank: str
    pcrs: Mapping[int, bytes]
    eventlog: bytes
    iak_certificate: bytes | None = None

    def to_json(self) -> bytes:
        document: dict[str, Any] = {
            "format": FORMAT,
            "nonce": _b64(self.nonce),
            "quote": _b64(self.quote),
            "signature": _b64(self.signature),
            "pcrs": {self.bank: {str(i): v.hex() for i, v in sorted(self.pcrs.items())}},
            "eventlog": _b64(self.eventlog),
        }
        if self.iak_certificate is not None:
            document["iak_certificate"] = _b64(self.iak_certificate)
        return json.dumps(document, indent=1).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _bytes(document: Mapping[str, Any], name: str, limit: int) -> bytes:
    value = document.get(name)
    if not isinstance(value, str) or len(value) > (limit + 2) // 3 * 4:
        raise VerificationError(f"evidence: {name} must be base64 of at most {limit} bytes")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:  # binascii.Error, or a str that is not ASCII
        raise VerificationError(f"evidence: {name} is not base64") from None


def _pcrs(value: object) -> tuple[str, dict[int, bytes]]:
    if not isinstance(value, dict) or len(value) != 1:
        raise VerificationError("evidence: pcrs must hold exactly one bank")
    ((bank, values),) = value.items()
    size = _DIGEST_SIZES.get(bank)
    if size is None or not isinstance(values, dict) or len(values) > _PCR_COUNT:
        raise VerificationError(f"evidence: unsupported PCR bank {str(bank)[:16]!r}")
    pcrs: dict[int, bytes] = {}
    for key, digest in values.items():
        if key not in _PCR_NAMES:  # "3", never "03" or "٣": one spelling per PCR
            raise VerificationError(f"evidence: {str(key)[:8]!r} is not a PCR index")
        if not isinstance(digest, str) or len(digest) != 2 * size:
            raise VerificationError(f"evidence: PCR {key} is not a {bank} digest")
        try:
            pcrs[int(key)] = bytes.fromhex(digest)
        except ValueError:
            raise VerificationError(f"evidence: PCR {key} is not hex") from None
    return bank, pcrs


def parse_evidence(data: bytes) -> AttestationEvidence:
    """Decode evidence, bounded; VerificationError on anything malformed."""
    if len(data) > MAX_EVIDENCE:
        raise VerificationError(f"evidence is larger than {MAX_EVIDENCE} bytes")
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        raise VerificationError("evidence is not JSON") from None
    return from_document(document)


def from_document(document: object) -> AttestationEvidence:
    """Evidence from a decoded JSON document (the API's body), bounded field by field."""
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise VerificationError(f"evidence is not a {FORMAT} document")
    unknown = set(document) - _FIELDS
    if unknown:
        raise VerificationError(f"evidence: unknown field {sorted(unknown)[0][:32]!r}")
    bank, pcrs = _pcrs(document.get("pcrs"))
    certificate = None
    if document.get("iak_certificate") is not None:
        certificate = _bytes(document, "iak_certificate", _LIMITS["iak_certificate"])
    return AttestationEvidence(
        nonce=_bytes(document, "nonce", _LIMITS["nonce"]),
        quote=_bytes(document, "quote", _LIMITS["quote"]),
        signature=_bytes(document, "signature", _LIMITS["signature"]),
        bank=bank,
        pcrs=pcrs,
        eventlog=_bytes(document, "eventlog", MAX_EVENTLOG),
        iak_certificate=certificate,
    )


class QuotingRot(Protocol):
    """What ``collect`` needs from a root of trust (the tpm2 driver has it)."""

    def quote(self, pcrs: Sequence[int], nonce: bytes, bank: str = "sha256") -> Evidence: ...


def collect(
    rot: QuotingRot,
    nonce: bytes,
    pcrs: Sequence[int],
    eventlog: bytes,
    *,
    bank: str = "sha256",
    iak_certificate: bytes | None = None,
) -> AttestationEvidence:
    """The device's side: quote ``pcrs`` over the challenge's nonce, add the log.

    The device agent and ``keyfab attest quote`` both call this.
    """
    selected = sorted(set(pcrs))
    quoted = rot.quote(selected, nonce, bank)
    size = _DIGEST_SIZES[bank]
    values = quoted.parts["pcr_values"]
    return AttestationEvidence(
        nonce=nonce,
        quote=quoted.parts["attest"],
        signature=quoted.parts["signature"],
        bank=bank,
        pcrs={p: values[i * size : (i + 1) * size] for i, p in enumerate(selected)},
        eventlog=eventlog,
        iak_certificate=iak_certificate,
    )
