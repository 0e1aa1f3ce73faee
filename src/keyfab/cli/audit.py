"""``keyfab audit``: check the hash chain."""

from __future__ import annotations

import typer

from keyfab import audit as audit_log
from keyfab.cli._context import workspace
from keyfab.cli._output import JSON_OPTION, console, emit_json
from keyfab.errors import AuditError

app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)


@app.command()
def verify(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """Recompute the chain; name the first broken link and exit 1 if there is one."""
    registry = workspace(ctx).registry()
    try:
        with registry.transaction() as session:
            report = audit_log.verify(session)
    finally:
        registry.dispose()
    if as_json:
        emit_json(
            {
                "ok": report.ok,
                "events": report.events,
                "head": report.head_hash,
                "broken_at": report.broken_at,
                "reason": report.reason,
            }
        )
    elif report.ok:
        console.print(
            f"[green]audit log intact[/]: {report.events} events, head {report.head_hash[:16]}…"
        )
    if not report.ok:
        raise AuditError(f"audit log broken at event {report.broken_at}: {report.reason}")
