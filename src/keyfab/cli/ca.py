"""``keyfab ca``: look at the CAs, list what they issued, revoke, sign a CRL, rotate."""

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
from keyfab.authority import rotate as rotate_ca
from keyfab.cli._context import operator, workspace
from keyfab.cli._context import revoke as revoke_as_user
from keyfab.cli._output import (
    JSON_OPTION,
    certificate_fields,
    console,
    emit_json,
    fields,
    reason_option,
    table,
)
from keyfab.clock import parse_optional_duration, spell_duration
from keyfab.errors import ConfigError
from keyfab.pki import Profile, serial_hex
from keyfab.pki.display import readable_name
from keyfab.registry import queries
from keyfab.rot import parse_key_uri

app = typer.Typer(help="The root and manufacturing CAs, and rotating them.", no_args_is_help=True)


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
    name: str = typer.Argument(None, help="Only this CA (e.g. manufacturing-2) [default: all]."),
    as_json: bool = JSON_OPTION,
    pem: bool = typer.Option(
        False, "--pem", help="Print the issuing chain (manufacturing CA, root) as PEM."
    ),
    root: bool = typer.Option(False, "--root", help="With --pem: only the root certificate."),
) -> None:
    """The CAs: which issues, which still serve, subjects, key types, validity, fingerprints."""
    with Authority.open(workspace(ctx)) as authority:
        names = _shown(authority, name)
        if pem:
            chain = [authority.certificate_of(n) for n in names] if name else authority.chain
            for certificate in chain[-1:] if root else chain:
                typer.echo(certificate.public_bytes(Encoding.PEM).decode(), nl=False)
            return
        described = [_describe(authority, n) for n in names]
    if as_json:
        emit_json(described)
        return
    for entry in described:
        fields(f"{entry.pop('name')}: {entry.pop('role')} CA, {entry.pop('state')}", entry)


def _shown(authority: Authority, name: str | None) -> list[str]:
    """The CAs to show: ``name`` only, or all with the issuing chain first."""
    if name is not None:
        return [authority.record_of(name).name]
    first = [authority.issuing, authority.issuer_of(authority.issuing)]
    return first + [n for n in authority.records if n not in first]


def _describe(authority: Authority, name: str) -> dict[str, str]:
    record, c = authority.record_of(name), authority.certificate_of(name)
    return {
        "name": name,
        "role": record.kind,
        "state": authority.state(name),
        "issued_by": authority.issuer_of(name),
        "subject": readable_name(c.subject),
        "serial_number": serial_hex(c),
        "not_before": c.not_valid_before_utc.isoformat(),
        "not_after": c.not_valid_after_utc.isoformat(),
        "retired_at": record.retired_at.isoformat() if record.retired_at else "",
        "key": _key_kind(c.public_key()),
        "key_uri": str(parse_key_uri(record.key_uri)),  # PIN redacted
        "sha256": fingerprint(c),
    }


@app.command()
def rotate(
    ctx: typer.Context,
    root: bool = typer.Option(
        False,
        "--root",
        help="Roll the root over first: a new root key, with link certificates both ways "
        "(RFC 4210 section 4.4).",
    ),
    ca_key: str = typer.Option(
        None, "--ca-key", help="Key URI for the new CA key [default: beside the current one]."
    ),
    root_key: str = typer.Option(
        None, "--root-key", help="With --root: key URI for the new root key [default: beside]."
    ),
    adopt_keys: bool = typer.Option(
        False, "--adopt-keys", help="Use the keys that already exist at --ca-key/--root-key."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Make a new manufacturing CA the issuing one; the old one keeps signing its CRL."""
    with Authority.open(workspace(ctx)) as authority:
        done = rotate_ca(authority, root=root, ca_key=ca_key, root_key=root_key, adopt=adopt_keys)
        described = _describe(authority, done.issuing)
    if as_json:
        emit_json({"issuing": done.issuing, "retired": done.retired, "root": done.root})
        return
    console.print(
        f"[green]rotated[/]: {done.issuing} issues now ({described['subject']}, "
        f"key {described['key_uri']}); {done.retired} is retired and keeps signing its CRL",
        highlight=False,
    )
    if done.root:
        console.print(f"new root {done.root}: give devices the root update (EST cacerts)")
    console.print("restart a running 'keyfab serve' so it issues from the new CA", markup=False)


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
        ["serial number", "profile", "CA", "subject", "revoked"],
        [
            [r["serial_number"], r["profile"], r["issuer"], r["subject"], r["revocation_reason"]]
            for r in rows
        ],
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
    ca: str = typer.Option(
        None, "--ca", help="The CA whose CRL to sign (see 'ca show') [default: the issuing CA]."
    ),
) -> None:
    """Sign a new CRL of every revoked certificate the CA issued, with the next CRLNumber."""
    if out is None:
        data, _ = _sign_crl(ctx, der, ca)
        typer.echo(data.decode() if not der else data.hex(), nl=False)
        return
    with _output_file(out) as handle:  # a path we cannot write fails before a CRL is signed
        data, revoked = _sign_crl(ctx, der, ca)
        handle.write(data)
    console.print(f"CRL with {revoked} revoked certificate(s) written to {out}", markup=False)


def _sign_crl(ctx: typer.Context, der: bool, ca: str | None) -> tuple[bytes, int]:
    """The new CRL's bytes and how many certificates it lists."""
    with Authority.open(workspace(ctx)) as authority:
        signed = new_crl(authority, ca)
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
                crl_validity=parse_optional_duration(crl_validity, "--crl-validity"),
                ocsp_validity=parse_optional_duration(ocsp_validity, "--ocsp-validity"),
            )
        )
    urls = settings.publication(authority.issuing)
    shown = {
        "base_url": settings.base_url,
        "ocsp": None if urls is None else urls.ocsp,
        "ca_issuers": None if urls is None else urls.ca_issuers,
        "crl": None if urls is None else urls.crl,
        "crl_validity": spell_duration(settings.crl_validity),
        "ocsp_validity": spell_duration(settings.ocsp_validity),
    }
    if as_json:
        emit_json(shown)
        return
    fields("publication", {k: "(not set)" if v is None else v for k, v in shown.items()})
