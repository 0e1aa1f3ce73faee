"""Everything ``keyfab audit verify`` checks, and what it could not prove.

Three checks, each stronger than the last: the hash chain (catches a changed,
missing or reordered row, but not a rebuilt chain), the checkpoints in the log
(signatures by a trusted signer over heads the chain still has), and the
witnessed checkpoints kept outside the database (catch a cut tail, a rebuilt
chain and forged access grants). A verdict says which held, and in plain words
what remains unproven, so "intact" never claims more than was checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy.orm import Session

from keyfab.audit import witness as witnesses_
from keyfab.audit.checkpoint import CheckpointReport, verify_checkpoints
from keyfab.audit.log import Report, verify
from keyfab.audit.witness import Witness
from keyfab.errors import AuditError


@dataclass(frozen=True)
class Verdict:
    """The outcome: the chain's report, the checkpoints', the anchor, the gaps."""

    chain: Report
    checkpoints: CheckpointReport | None = None
    anchor: Witness | None = None
    witnesses: int = 0
    problem: str = ""  # empty when everything checked held
    unproven: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problem


def verify_log(
    session: Session,
    trusted: Sequence[x509.Certificate],
    witnesses: Sequence[Witness],
    *,
    require_witness: bool,
) -> Verdict:
    """Run every check on the log; ``require_witness`` makes a missing anchor a failure.

    Read ``witnesses`` before opening ``session``: a witness written between
    the two would otherwise name an event the session cannot see yet.
    """
    chain = verify(session)
    if not chain.ok:
        return Verdict(
            chain, problem=f"audit log broken at event {chain.broken_at}: {chain.reason}"
        )
    trusted_der = [certificate.public_bytes(Encoding.DER) for certificate in trusted]
    try:
        points = verify_checkpoints(session, trusted)
    except AuditError as error:
        return Verdict(chain, witnesses=len(witnesses), problem=str(error))
    try:
        anchor = witnesses_.check(session, trusted_der, witnesses) if witnesses else None
    except AuditError as error:
        return Verdict(chain, points, witnesses=len(witnesses), problem=str(error))
    if anchor is None:
        return _unanchored(chain, points, require_witness)
    return Verdict(chain, points, anchor, len(witnesses), unproven=_after(chain, anchor))


_NO_WITNESS = (
    "no witnessed checkpoint: a cut tail, a rebuilt chain or a forged event "
    "cannot be detected, only rows changed in place"
)


def _unanchored(chain: Report, points: CheckpointReport, required: bool) -> Verdict:
    if not required:
        return Verdict(chain, points, unproven=(_NO_WITNESS,))
    problem = (
        f"no witnessed checkpoint to verify against ({points.checked} signed checkpoint(s) "
        "in the database, which its writer can delete): nothing signed anchors the log"
    )
    return Verdict(chain, points, problem=problem, unproven=(_NO_WITNESS,))


def _after(chain: Report, anchor: Witness) -> tuple[str, ...]:
    seq = anchor.point.seq
    if chain.events <= seq + 1:  # at most the checkpoint event itself follows
        return ()
    return (
        f"events {seq + 1}..{chain.events} come after the newest witnessed checkpoint: "
        "none grants or withdraws trust, but they are not signed",
    )
