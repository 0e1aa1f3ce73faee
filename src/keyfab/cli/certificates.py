"""``keyfab certificates``: certificates across the fleet, by when they lapse."""

from __future__ import annotations

import typer

from keyfab.cli._context import workspace
from keyfab.cli._output import JSON_OPTION, certificate_fields, emit_json, table
from keyfab.clock import parse_duration
from keyfab.registry import queries

app = typer.Typer(help="Certificates across the fleet.", no_args_is_help=True)


@app.command()
def expiring(
    ctx: typer.Context,
    within: str = typer.Option(
        "30d", "--within", help="Window from now: a number and s, m, h or d (e.g. 30d)."
    ),
    include_renewed: bool = typer.Option(
        False, "--all", help="Also certificates a device has already renewed."
    ),
    limit: int = typer.Option(1000, "--limit", min=1, max=100_000, help="At most this many."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Unrevoked certificates that expire within the window, soonest first."""
    window = parse_duration(within, "--within")
    with workspace(ctx).registry() as registry:
        found = queries.expiring(registry, window, include_renewed=include_renewed, limit=limit)
    rows = [{**certificate_fields(r.certificate), "device": r.device_serial} for r in found]
    if as_json:
        emit_json(rows)
        return
    table(
        f"certificates expiring within {within} ({len(rows)})",
        ["not after", "device", "profile", "serial number", "subject"],
        [
            [r["not_after"], r["device"], r["profile"], r["serial_number"], r["subject"]]
            for r in rows
        ],
        identifiers=("device", "serial number"),
    )
