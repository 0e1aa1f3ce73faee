"""``keyfab tokens``: API tokens for the service (create, list, revoke)."""

from __future__ import annotations

import typer

from keyfab.authority import Authority, Role
from keyfab.authority import tokens as store
from keyfab.cli._context import workspace
from keyfab.cli._output import JSON_OPTION, console, emit_json, errors, table
from keyfab.clock import parse_optional_duration

app = typer.Typer(help="API tokens for 'keyfab serve'.", no_args_is_help=True)


@app.command()
def create(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="A name for the token's holder (unique)."),
    role: Role = typer.Option(..., "--role", help="admin, operator, auditor or device."),
    expires_in: str = typer.Option(None, "--expires-in", help="Lifetime, e.g. 90m, 12h, 30d."),
    uses: int = typer.Option(None, "--uses", help="Usable this many times (1: one-time)."),
    device: str = typer.Option(None, "--device", help="Device tokens: the one serial it enrols."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Create a token and print it once: only its digest is kept."""
    lifetime = parse_optional_duration(expires_in, "--expires-in")
    with Authority.open(workspace(ctx)) as authority:  # the grant ends with a checkpoint
        token = store.create(
            authority, name, role, expires_in=lifetime, uses=uses, device_serial=device
        )
    if as_json:
        emit_json({"id": token.id, "name": token.name, "role": token.role, "token": token.secret})
        return
    errors.print(f"token {token.name} ({token.role}); shown once, store it now:", highlight=False)
    typer.echo(token.secret)


@app.command("list")
def list_tokens(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """Every token: role, limits, state (never the secret)."""
    with workspace(ctx).registry() as registry:
        rows = [
            {
                "id": t.id,
                "name": t.name,
                "role": t.role,
                "device": t.device_serial,
                "uses_left": t.uses_left,
                "created_at": t.created_at.isoformat(),
                "expires_at": t.expires_at.isoformat() if t.expires_at else None,
                "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None,
            }
            for t in store.listing(registry)
        ]
    if as_json:
        emit_json(rows)
        return
    table(
        f"tokens ({len(rows)})",
        ["name", "role", "device", "uses left", "expires", "revoked"],
        [
            [r["name"], r["role"], r["device"], r["uses_left"], r["expires_at"], r["revoked_at"]]
            for r in rows
        ],
    )


@app.command()
def revoke(ctx: typer.Context, name: str = typer.Argument(..., help="The token's name.")) -> None:
    """Revoke a token: it stops working at once."""
    with Authority.open(workspace(ctx)) as authority:
        changed = store.revoke(authority, name)
    if changed:
        console.print(f"revoked token {name}", markup=False)
    else:
        console.print(f"token {name} is already revoked: nothing changed", markup=False)
