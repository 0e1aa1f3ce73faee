"""The audit trail: an append-only, hash-chained log, appended in the same
transaction as the change it records, and its verification."""

from keyfab.audit.log import GENESIS, Entry, Report, append, append_many, canonical_json, verify

__all__ = ["GENESIS", "Entry", "Report", "append", "append_many", "canonical_json", "verify"]
