"""``keyfab attest eventlog FILE``: a TCG boot event log and the PCRs it replays to.

The figures are those ``tpm2_eventlog`` prints (its ``pcrs:`` section), so an
operator can check keyfab against the tool they know; ``--json`` gives
``{"pcrs": {bank: {pcr: hex}}, "events": [...]}`` for scripts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from keyfab.attest.eventdata import describe
from keyfab.attest.eventlog import MAX_LOG_BYTES, Event, EventLog, parse_eventlog, replay
from keyfab.cli._output import JSON_OPTION, emit_json, table
from keyfab.securefile import read_bounded


def eventlog(
    file: Annotated[
        Path,
        typer.Argument(help="binary log, e.g. /sys/kernel/security/tpm0/binary_bios_measurements"),
    ],
    as_json: bool = JSON_OPTION,
) -> None:
    """Print the events of a boot event log and the PCR values it replays to, per bank."""
    log = parse_eventlog(read_bounded(file, MAX_LOG_BYTES, "event log"))
    pcrs = {
        bank: {str(pcr): value.hex() for pcr, value in sorted(values.items())}
        for bank, values in replay(log).items()
    }
    if as_json:
        emit_json({"pcrs": pcrs, "events": [_event_json(event) for event in log.events]})
        return
    _print_events(log)
    for bank, values in pcrs.items():
        table(
            f"PCRs replayed ({bank})", ["PCR", "value"], list(values.items()), identifiers=["value"]
        )


def _event_json(event: Event) -> dict[str, Any]:
    return {
        "index": event.index,
        "pcr": event.pcr,
        "event_type": event.event_type,
        "type_name": event.type_name,
        "digests": {bank: digest.hex() for bank, digest in event.digests.items()},
        "description": describe(event),
        "data": event.data.hex(),
    }


def _print_events(log: EventLog) -> None:
    bank = log.banks[0]
    kind = "crypto agile" if log.crypto_agile else "SHA-1"
    rows = [
        (
            event.index,
            event.pcr,
            event.type_name,
            event.digests.get(bank, b"").hex(),
            describe(event),
        )
        for event in log.events
    ]
    title = f"{len(log.events)} events ({kind} log, banks {', '.join(log.banks)})"
    table(
        title, ["#", "PCR", "type", f"{bank} digest", "data"], rows, identifiers=[f"{bank} digest"]
    )
