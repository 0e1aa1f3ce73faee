"""``keyfab attest policy``: a product's attestation policy (check, set, show)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from keyfab.attest.reference import read_policy, set_policy, stored_policy
from keyfab.authority import Authority
from keyfab.cli._context import operator, workspace
from keyfab.cli._output import JSON_OPTION, KeyfabGroup, console, emit_json

app = typer.Typer(
    help="Attestation policies: what a product's devices must prove they booted.",
    no_args_is_help=True,
    cls=KeyfabGroup,
)
PolicyFile = Annotated[Path, typer.Argument(help="policy TOML (see docs/attestation.md)")]


@app.command()
def check(file: PolicyFile) -> None:
    """Validate a policy file only (no workspace needed): exit 0, or 1 with one line."""
    policy, _ = read_policy(file)
    console.print(f"{file}: valid policy for {policy.product}")


@app.command("set")
def set_command(ctx: typer.Context, file: PolicyFile) -> None:
    """Validate and store a product's policy (recorded in the audit log)."""
    with Authority.open(workspace(ctx)) as authority:
        policy, changed = set_policy(authority, file, operator())
    said = "stored" if changed else "unchanged (the same policy is stored)"
    console.print(f"attestation policy of {policy.product}: {said}")


@app.command()
def show(
    ctx: typer.Context,
    product: Annotated[str, typer.Argument(help="product name")],
    as_json: bool = JSON_OPTION,
) -> None:
    """Print a product's stored policy: its TOML, or its validated form with --json."""
    with workspace(ctx).registry() as registry:
        policy, text = stored_policy(registry, product)
    if as_json:
        emit_json(policy.model_dump(mode="json"))
    else:
        typer.echo(text, nl=not text.endswith("\n"))
