"""The audit trail: an append-only, hash-chained log, appended in the same
transaction as the change it records, and its verification."""

from keyfab.audit.checkpoint import CheckpointReport, sign_checkpoint, verify_checkpoints
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

__all__ = [
    "GENESIS",
    "CheckpointReport",
    "Entry",
    "Report",
    "append",
    "append_many",
    "canonical_json",
    "lock",
    "sign_checkpoint",
    "verify",
    "verify_checkpoints",
]
