"""``keyfab audit``: check the hash chain."""

from __future__ import annotations

from pathlib import Path

import typer
from cryptography import x509

from keyfab import audit as audit_log
from keyfab.authority import Authority
from keyfab.cli._context import workspace
from keyfab.cli._output import JSON_OPTION, console, emit_json
from keyfab.errors import AuditError, ConfigError

app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)


@app.command()
def verify(
    ctx: typer.Context,
    signers: list[Path] = typer.Option(
        None, "--signer", help="PEM certificate whose checkpoints you trust [default: this CA's]."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Recompute the chain and check signed checkpoints; exit 1 naming the first break."""
    with Authority.open(workspace(ctx)) as authority:
        trusted = _load_signers(signers) if signers else [authority.certificate]
        with authority.registry.reading() as session:
            report = audit_log.verify(session)
            points = audit_log.verify_checkpoints(session, trusted) if report.ok else None
    if as_json:
        emit_json({"ok": report.ok, "events": report.events, "head": report.head_hash,
                   "broken_at": report.broken_at, "reason": report.reason,
                   "checkpoints": points.checked if points else 0,
                   "latest_checkpoint": points.latest if points else None})  # fmt: skip
    if not report.ok:
        raise AuditError(f"audit log broken at event {report.broken_at}: {report.reason}")
    if not as_json and points is not None:
        console.print(
            f"[green]audit log intact[/]: {report.events} events, head {report.head_hash[:16]}…, "
            f"{points.checked} signed checkpoint(s), newest covering event {points.latest}"
        )


@app.command()
def checkpoint(ctx: typer.Context) -> None:
    """Sign the current head of the chain with the manufacturing CA's key."""
    with Authority.open(workspace(ctx)) as authority, authority.transaction() as session:
        seq = authority.checkpoint(session)
    console.print(f"checkpoint signed as event {seq}")


def _load_signers(paths: list[Path]) -> list[x509.Certificate]:
    certificates = []
    for path in paths:
        try:
            certificates += x509.load_pem_x509_certificates(path.read_bytes())
        except (OSError, ValueError) as error:
            raise ConfigError(f"cannot read signer certificate {path}: {error}") from None
    return certificates
