"""``keyfab ca``: look at the CAs and publish a CRL."""

from __future__ import annotations

from pathlib import Path

import typer
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import select

from keyfab import audit
from keyfab.cli._context import workspace
from keyfab.cli._output import JSON_OPTION, console, emit_json, fields
from keyfab.registry import Certificate

app = typer.Typer(help="The root and manufacturing CAs.", no_args_is_help=True)


@app.command()
def show(
    ctx: typer.Context,
    as_json: bool = JSON_OPTION,
    pem: bool = typer.Option(
        False, "--pem", help="Print the chain (manufacturing CA, root) as PEM."
    ),
    root: bool = typer.Option(False, "--root", help="With --pem: only the root certificate."),
) -> None:
    """The CA chain: subjects, key types, validity, fingerprints."""
    ca = workspace(ctx).authority()
    if pem:
        for certificate in ca.full_chain()[-1:] if root else ca.full_chain():
            typer.echo(certificate.public_bytes(Encoding.PEM).decode(), nl=False)
        return
    described = [
        {
            "role": role,
            "subject": c.subject.rfc4514_string(),
            "issuer": c.issuer.rfc4514_string(),
            "serial_number": format(c.serial_number, "x"),
            "not_before": c.not_valid_before_utc.isoformat(),
            "not_after": c.not_valid_after_utc.isoformat(),
            "key": type(c.public_key()).__name__,
            "sha256": c.fingerprint(hashes.SHA256()).hex(),
        }
        for role, c in zip(("manufacturing", "root"), ca.full_chain(), strict=True)
    ]
    if as_json:
        emit_json(described)
        return
    for entry in described:
        fields(f"{entry.pop('role')} CA", entry)


@app.command()
def crl(
    ctx: typer.Context,
    out: Path = typer.Option(None, "--out", "-o", help="Write the CRL here [default: stdout]."),
    der: bool = typer.Option(False, "--der", help="DER instead of PEM."),
) -> None:
    """Sign a CRL of every revoked device certificate."""
    space = workspace(ctx)
    ca = space.authority()
    registry = space.registry()
    try:
        with registry.transaction() as session:
            revoked = session.execute(
                select(Certificate.serial_number, Certificate.revoked_at).where(
                    Certificate.revoked_at.is_not(None)
                )
            ).all()
            number = audit.append(session, "ca.crl", "manufacturing", {"revoked": len(revoked)})
            crl_obj = ca.crl(
                [(int(s, 16), when) for s, when in revoked if when is not None], number=number
            )
    finally:
        registry.dispose()
    data = crl_obj.public_bytes(Encoding.DER if der else Encoding.PEM)
    if out is None:
        typer.echo(data.decode() if not der else data.hex(), nl=False)
    else:
        out.write_bytes(data)
        console.print(f"CRL with {len(revoked)} revoked certificate(s) written to {out}")
