"""The audit trail: an append-only, hash-chained log, appended in the same
transaction as the change it records, its signed checkpoints, their witnesses
outside the database, and its verification."""

from keyfab.audit import witness
from keyfab.audit.checkpoint import (
    CheckpointReport,
    SignedHead,
    append_checkpoint,
    judge,
    sign_checkpoint,
    sign_head,
    verify_checkpoints,
)
from keyfab.audit.log import (
    GENESIS,
    Entry,
    Report,
    append,
    append_many,
    canonical_json,
    lock,
    verify,
)
from keyfab.audit.verification import Verdict, verify_log
from keyfab.audit.witness import WITNESSED_KINDS, Witness

__all__ = [
    "GENESIS",
    "WITNESSED_KINDS",
    "CheckpointReport",
    "Entry",
    "Report",
    "SignedHead",
    "Verdict",
    "Witness",
    "append",
    "append_checkpoint",
    "append_many",
    "canonical_json",
    "judge",
    "lock",
    "sign_checkpoint",
    "sign_head",
    "verify",
    "verify_checkpoints",
    "verify_log",
    "witness",
]
