"""``keyfab ca``: look at the CAs, list what they issued, revoke one certificate, sign a CRL."""

from __future__ import annotations

from pathlib import Path

import typer
from cryptography.hazmat.primitives.serialization import Encoding

from keyfab.authority import Authority, fingerprint, new_crl, revoke_certificate
from keyfab.cli._context import revoke as revoke_as_user
from keyfab.cli._context import workspace
from keyfab.cli._output import (
    JSON_OPTION,
    console,
    emit_json,
    fields,
    reason_option,
    table,
)
from keyfab.pki import Profile, serial_hex
from keyfab.registry import queries

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
    with Authority.open(workspace(ctx)) as authority:
        chain = authority.chain
    if pem:
        for certificate in chain[-1:] if root else chain:
            typer.echo(certificate.public_bytes(Encoding.PEM).decode(), nl=False)
        return
    described = [
        {
            "role": role,
            "subject": c.subject.rfc4514_string(),
            "issuer": c.issuer.rfc4514_string(),
            "serial_number": serial_hex(c),
            "not_before": c.not_valid_before_utc.isoformat(),
            "not_after": c.not_valid_after_utc.isoformat(),
            "key": type(c.public_key()).__name__,
            "sha256": fingerprint(c),
        }
        for role, c in zip(("manufacturing", "root"), chain, strict=True)
    ]
    if as_json:
        emit_json(described)
        return
    for entry in described:
        fields(f"{entry.pop('role')} CA", entry)


@app.command()
def certificates(
    ctx: typer.Context,
    profile: Profile = typer.Option(None, "--profile", help="Only certificates of this profile."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Every certificate the manufacturing CA has issued, whatever it was issued for."""
    registry = workspace(ctx).registry()
    try:
        rows = [
            {
                "serial_number": c.serial_number,
                "profile": c.profile,
                "key": c.key_label,
                "subject": c.subject,
                "not_after": c.not_after.isoformat(),
                "revoked_at": c.revoked_at.isoformat() if c.revoked_at else None,
                "revocation_reason": c.revocation_reason,
            }
            for c in queries.issued_certificates(registry)
            if profile is None or c.profile == profile
        ]
    finally:
        registry.dispose()
    if as_json:
        emit_json(rows)
        return
    table(
        f"certificates ({len(rows)})",
        ["serial number", "profile", "subject", "revoked"],
        [[r["serial_number"], r["profile"], r["subject"], r["revocation_reason"]] for r in rows],
    )


@app.command()
def revoke(
    ctx: typer.Context,
    serial_number: str = typer.Argument(..., help="The certificate's serial number (hex)."),
    reason: str = reason_option(),
) -> None:
    """Revoke one certificate (a device's, a station's, a manifest signer's, the server's)."""
    number = serial_number.lower().removeprefix("0x").lstrip("0") or "0"
    revoke_as_user(
        ctx,
        f"certificate {number}",
        reason,
        lambda authority, why, by: revoke_certificate(authority, number, why, by=by),
    )


@app.command()
def crl(
    ctx: typer.Context,
    out: Path = typer.Option(None, "--out", "-o", help="Write the CRL here [default: stdout]."),
    der: bool = typer.Option(False, "--der", help="DER instead of PEM."),
) -> None:
    """Sign a new CRL of every revoked certificate, with the next CRLNumber."""
    with Authority.open(workspace(ctx)) as authority:
        signed = new_crl(authority)
    data = signed.public_bytes(Encoding.DER if der else Encoding.PEM)
    if out is None:
        typer.echo(data.decode() if not der else data.hex(), nl=False)
    else:
        out.write_bytes(data)
        console.print(f"CRL with {len(signed)} revoked certificate(s) written to {out}")
