"""``keyfab attest policy``: a product's attestation policy (check, set, show, export)."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from keyfab.attest import keylime
from keyfab.attest.eventlog import MAX_LOG_BYTES, parse_eventlog
from keyfab.attest.reference import read_policy, set_policy, stored_policy
from keyfab.authority import Authority
from keyfab.cli._context import operator, workspace
from keyfab.cli._output import JSON_OPTION, KeyfabGroup, console, emit_json, print_error
from keyfab.errors import ConfigError
from keyfab.registry import queries
from keyfab.securefile import read_bounded

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


class ExportFormat(StrEnum):
    keylime_mb = "keylime-mb"
    keylime_tpm = "keylime-tpm"
    keylime_runtime = "keylime-runtime"


@app.command()
def export(
    ctx: typer.Context,
    product: Annotated[str, typer.Argument(help="product name")],
    format_: Annotated[
        ExportFormat,
        typer.Option(
            "--format",
            help="keylime-mb: measured-boot refstate (needs --from-log); keylime-tpm: tpm_policy;"
            " keylime-runtime: runtime policy skeleton",
        ),
    ],
    from_log: Annotated[
        Path | None,
        typer.Option("--from-log", help="a golden boot event log of the product (keylime-mb)"),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="File to write it to [default: stdout].")
    ] = None,
) -> None:
    """Export a product's policy in Keylime's formats (see docs/attestation.md)."""
    if format_ is ExportFormat.keylime_mb and from_log is None:
        raise ConfigError(
            "--format keylime-mb needs --from-log FILE (a golden boot log of the product)"
        )
    with workspace(ctx).registry() as registry:
        policy, _ = stored_policy(registry, product)
        releases = queries.releases(registry, product)
    exported: Any
    if format_ is ExportFormat.keylime_tpm:
        exported = keylime.tpm_policy(policy, releases)
    elif format_ is ExportFormat.keylime_runtime:
        exported = keylime.runtime_policy(policy)
        print_error(
            "digests, excludes, keyrings and ima-buf are for you to fill",
            label="note:",
            style="yellow",
        )
    else:
        assert from_log is not None
        golden = parse_eventlog(read_bounded(from_log, MAX_LOG_BYTES, "event log"))
        exported = keylime.mb_refstate(policy, golden)
        if policy.pcr:
            print_error(
                "allowed PCR values go in Keylime's tpm_policy: export --format keylime-tpm",
                label="note:",
                style="yellow",
            )
    text = json.dumps(exported, indent=2) + "\n"
    if out is None:
        typer.echo(text, nl=False)
        return
    try:
        out.write_text(text)
    except OSError as error:
        raise ConfigError(f"cannot write {out}: {error.strerror}") from None
    console.print(f"{format_.value} of {product} written to {out}", markup=False)
