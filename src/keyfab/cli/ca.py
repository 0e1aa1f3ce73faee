"""``keyfab ca``: look at the CAs, list what they issued, revoke one certificate, sign a CRL."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import typer
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from keyfab.authority import Authority, fingerprint, new_crl, publication, revoke_certificate
from keyfab.cli._context import operator, workspace
from keyfab.cli._context import revoke as revoke_as_user
from keyfab.cli._duration import duration, spelled
from keyfab.cli._output import (
    JSON_OPTION,
    certificate_fields,
    console,
    emit_json,
    fields,
    reason_option,
    table,
)
from keyfab.errors import ConfigError
from keyfab.pki import Profile, serial_hex
from keyfab.pki.display import readable_name
from keyfab.registry import queries
from keyfab.rot import parse_key_uri
from keyfab.workspace import MANUFACTURING, ROOT

app = typer.Typer(help="The root and manufacturing CAs.", no_args_is_help=True)
ROLES = (MANUFACTURING, ROOT)  # the chain's order


def _key_kind(public_key: object) -> str:
    """A CA key as people name it: "EC P-256", "RSA 3072" (read from the certificate)."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        curve = public_key.curve.name
        return "EC " + {"secp256r1": "P-256", "secp384r1": "P-384"}.get(curve, curve)
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"RSA {public_key.key_size}"
    return type(public_key).__name__


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
        uris = [str(parse_key_uri(authority.key_uri(role))) for role in ROLES]  # PIN redacted
    if pem:
        for certificate in chain[-1:] if root else chain:
            typer.echo(certificate.public_bytes(Encoding.PEM).decode(), nl=False)
        return
    described = [
        {
            "role": role,
            "subject": readable_name(c.subject),
            "issuer": readable_name(c.issuer),
            "serial_number": serial_hex(c),
            "not_before": c.not_valid_before_utc.isoformat(),
            "not_after": c.not_valid_after_utc.isoformat(),
            "key": _key_kind(c.public_key()),
            "key_uri": uri,
            "sha256": fingerprint(c),
        }
        for role, c, uri in zip(ROLES, chain, uris, strict=True)
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
    with workspace(ctx).registry() as registry:
        rows = [certificate_fields(c) for c in queries.issued_certificates(registry, profile)]
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
    out: Path = typer.Option(
        None, "--out", "-o", help="File to write the CRL to [default: stdout]."
    ),
    der: bool = typer.Option(False, "--der", help="DER instead of PEM."),
) -> None:
    """Sign a new CRL of every revoked certificate, with the next CRLNumber."""
    if out is None:
        data, _ = _sign_crl(ctx, der)
        typer.echo(data.decode() if not der else data.hex(), nl=False)
        return
    with _output_file(out) as handle:  # a path we cannot write fails before a CRL is signed
        data, revoked = _sign_crl(ctx, der)
        handle.write(data)
    console.print(f"CRL with {revoked} revoked certificate(s) written to {out}", markup=False)


def _sign_crl(ctx: typer.Context, der: bool) -> tuple[bytes, int]:
    """The new CRL's bytes and how many certificates it lists."""
    with Authority.open(workspace(ctx)) as authority:
        signed = new_crl(authority)
    return signed.public_bytes(Encoding.DER if der else Encoding.PEM), len(signed)


@contextmanager
def _output_file(out: Path) -> Iterator[BinaryIO]:
    """A temporary file next to ``out``, opened now and renamed over it at the end.

    Opening it first proves the directory is writable before anything is
    signed and recorded; the rename means a reader never sees half a CRL.
    """
    temporary = out.with_name(f".{out.name}.{secrets.token_hex(4)}.tmp")
    try:
        handle = temporary.open("xb")
    except OSError as error:
        raise ConfigError(f"cannot write {out}: {error.strerror}") from None
    try:
        with handle:
            yield handle
        os.replace(temporary, out)
    except OSError as error:
        raise ConfigError(f"cannot write {out}: {error.strerror}") from None
    finally:
        temporary.unlink(missing_ok=True)


@app.command()
def urls(
    ctx: typer.Context,
    base: str | None = typer.Option(
        None, "--base", help="Public URL keyfab serve is reached at, e.g. https://pki.example.com."
    ),
    crl_validity: str | None = typer.Option(
        None, "--crl-validity", help="CRL nextUpdate - thisUpdate, e.g. 7d (default 7d)."
    ),
    ocsp_validity: str | None = typer.Option(
        None, "--ocsp-validity", help="OCSP nextUpdate - thisUpdate, e.g. 1d (default 1d)."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show or set the URLs certificates carry (OCSP, caIssuers, CRL) and the validities.

    Certificates issued afterwards carry authorityInfoAccess and CRL distribution
    points under --base; those issued before stay as they are. Running servers
    pick the change up when restarted.
    """
    with Authority.open(workspace(ctx)) as authority:
        given = (base, crl_validity, ocsp_validity)
        settings = (
            authority.settings
            if given == (None, None, None)
            else publication.configure(
                authority,
                by=operator(),
                base_url=base,
                crl_validity=duration(crl_validity, "--crl-validity"),
                ocsp_validity=duration(ocsp_validity, "--ocsp-validity"),
            )
        )
    urls = settings.publication(MANUFACTURING)
    shown = {
        "base_url": settings.base_url,
        "ocsp": None if urls is None else urls.ocsp,
        "ca_issuers": None if urls is None else urls.ca_issuers,
        "crl": None if urls is None else urls.crl,
        "crl_validity": spelled(settings.crl_validity),
        "ocsp_validity": spelled(settings.ocsp_validity),
    }
    if as_json:
        emit_json(shown)
        return
    fields("publication", {k: "(not set)" if v is None else v for k, v in shown.items()})
