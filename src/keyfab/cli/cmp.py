"""``keyfab cmp``: one-time bootstrap secrets for CMP ``ir`` and their approval."""

from __future__ import annotations

import typer

from keyfab.authority import Authority
from keyfab.cli._context import workspace
from keyfab.cli._output import JSON_OPTION, console, emit_json, errors
from keyfab.clock import parse_duration
from keyfab.cmp import state

app = typer.Typer(help="Lightweight CMP (RFC 9483) for 'keyfab serve'.", no_args_is_help=True)


@app.command()
def secret(
    ctx: typer.Context,
    device: str = typer.Option(..., "--device", help="The one device serial it may enrol."),
    expires: str = typer.Option("24h", "--expires", help="Lifetime, e.g. 90m, 24h, 7d."),
    approval: bool = typer.Option(
        False, "--approval", help="Defer issuance (CMP polling) until 'keyfab cmp approve'."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """A one-time secret for 'openssl cmp -cmd ir -ref REF -secret pass:SECRET'; shown once."""
    lifetime = parse_duration(expires, "--expires")
    space = workspace(ctx)
    with Authority.open(space) as authority:
        made = state.create_secret(
            authority,
            state.mac_key(state.folder(space.home)),
            device,
            lifetime,
            needs_approval=approval,
            by="cli",
        )
    if as_json:
        emit_json(
            {
                "reference": made.reference,
                "secret": made.secret,
                "device": made.device_serial,
                "expires_at": made.expires_at.isoformat(),
                "needs_approval": made.needs_approval,
            }
        )
        return
    errors.print(
        f"CMP secret for {made.device_serial} until {made.expires_at.isoformat()};"
        " shown once, store it now:",
        highlight=False,
    )
    typer.echo(f"reference {made.reference}")
    typer.echo(f"secret    {made.secret}")


@app.command()
def approve(
    ctx: typer.Context,
    reference: str = typer.Argument(..., help="The secret's reference (the senderKID)."),
) -> None:
    """Approve the deferred request under REFERENCE: its next pollReq gets the certificate."""
    with Authority.open(workspace(ctx)) as authority:
        changed = state.approve(authority, reference, by="cli")
    console.print(f"approved {reference}" if changed else f"{reference} was approved already")
