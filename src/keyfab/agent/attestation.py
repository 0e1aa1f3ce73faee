"""Answering the server's attestation challenge: fetch it, quote, post the evidence.

The quote and its JSON are ``keyfab.attest.evidence``'s (the same code as
``keyfab attest quote``); the agent adds the boot event log it finds
(``[agent] eventlog``, the kernel's securityfs copy on a real device).
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any

from keyfab.agent.http import Identity, ServerApi, ServerError
from keyfab.attest.evidence import MAX_EVENTLOG, QuotingRot, collect
from keyfab.device import DeviceApi
from keyfab.errors import UnsupportedError


def _eventlog(path: Path | None) -> bytes:
    if path is None or not path.exists():
        return b""
    with path.open("rb") as source:  # securityfs files have no size: read bounded
        data = source.read(MAX_EVENTLOG + 1)
    if len(data) > MAX_EVENTLOG:
        raise ServerError(f"the event log {path} is larger than {MAX_EVENTLOG} bytes")
    return data


def attest_once(
    api: ServerApi, identity: Identity, device: DeviceApi, eventlog: Path | None
) -> dict[str, Any]:
    """One round; the server's verdict and reasons."""
    challenge = api.challenge(identity)
    try:
        nonce = base64.b64decode(str(challenge["nonce"]), validate=True)
        pcrs = [int(p) for p in challenge["pcrs"]]
        bank = str(challenge.get("bank", "sha256"))
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise ServerError("the attestation challenge is malformed") from None
    log = _eventlog(eventlog)
    with device.exclusive() as rot:
        if not hasattr(rot, "quote"):
            raise UnsupportedError(f"a {rot.info.kind} root of trust cannot quote PCRs")
        quoting: QuotingRot = rot  # type: ignore[assignment]
        evidence = collect(quoting, nonce, pcrs, log, bank=bank)
    result = api.evidence(identity, evidence.to_json())
    return {"verdict": result.get("verdict"), "reasons": result.get("reasons", [])}
