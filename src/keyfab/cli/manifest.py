"""``keyfab manifest``: verify, import and export signed secure-element manifests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from rich.table import Table
from rich.text import Text

from keyfab.authority import Authority, issue_manifest_signer
from keyfab.cli._context import workspace
from keyfab.cli._output import KeyfabGroup, console, print_error
from keyfab.errors import ConfigError
from keyfab.manifest import (
    EntryReport,
    EntrySigner,
    ExportDescription,
    Organization,
    Outcome,
    SignerSet,
    VerificationPolicy,
    export_batch,
    import_manifest,
    load_certificates,
    verify_manifest,
)
from keyfab.rot import KeyAlgorithm, KeySpec, PrivateKey, load_key, open_rot, parse_key_uri

app = typer.Typer(
    help="Signed secure-element manifests (Microchip Trust Platform format).",
    no_args_is_help=True,
    cls=KeyfabGroup,
)

ManifestFile = Annotated[
    Path, typer.Argument(help="Manifest JSON file.", exists=True, dir_okay=False, readable=True)
]
Signers = Annotated[
    Path,
    typer.Option(
        "--signers",
        help="Directory of trusted manifest-signer certificates (picked by x5t#S256).",
        exists=True,
    ),
]
Roots = Annotated[
    Path | None,
    typer.Option(
        "--roots",
        help="File or directory of root certificates device chains must reach.",
        exists=True,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="One JSON object per entry, for scripts.")]


@app.callback()
def manifest() -> None:
    """Signed secure-element manifests (Microchip Trust Platform format)."""


MAX_TABLE_ROWS = 1000
"""The human table stops here; failures are always listed on stderr."""


def _policy(signers: Path, roots: Path | None) -> VerificationPolicy:
    """Without --roots only entries that carry no certificates can verify."""
    certificates = load_certificates(roots) if roots is not None else []
    return VerificationPolicy(SignerSet.from_path(signers), certificates)


def _print(reports: list[EntryReport], as_json: bool) -> None:
    if as_json:
        for report in reports:
            typer.echo(
                json.dumps(
                    {
                        "index": report.index,
                        "uniqueId": report.unique_id,
                        "verified": report.ok,
                        "error": report.error,
                    }
                )
            )
        return
    table = Table("entry", "uniqueId", "result")
    for report in reports:
        table.add_row(
            str(report.index),
            Text(report.unique_id or "?"),
            "verified" if report.ok else Text(report.error or "", style="red"),
        )
    console.print(table)


@app.command()
def verify(
    file: ManifestFile, signers: Signers, roots: Roots = None, as_json: AsJson = False
) -> None:
    """Check every entry's signature, device chain and key; exit 1 naming failures.

    Failures go to stderr as they are found; nothing grows with the file but the
    human table, which stops at MAX_TABLE_ROWS rows.
    """
    shown: list[EntryReport] = []
    total = failed = 0
    with file.open("rb") as stream:
        for report in verify_manifest(stream, _policy(signers, roots)):
            total += 1
            if not report.ok:
                failed += 1
                print_error(report.describe())
            if as_json:
                _print([report], as_json=True)
            elif len(shown) < MAX_TABLE_ROWS:
                shown.append(report)
    if not as_json:
        _print(shown, as_json=False)
        typer.echo(f"{total - failed} of {total} entries verified")
    if failed:
        raise typer.Exit(1)


def _organization(certificate: x509.Certificate) -> str:
    names = certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return str(names[0].value) if names else "keyfab"


def _signer_key(uri: str, new: bool) -> PrivateKey:
    if not new:
        return load_key(uri)
    parsed = parse_key_uri(uri)
    if parsed.label is None:
        raise ConfigError(f"key URI {parsed} does not name a key")
    return open_rot(parsed).generate_key(parsed.label, KeySpec(KeyAlgorithm.EC_P256))


@app.command()
def signer(
    ctx: typer.Context,
    key: Annotated[str, typer.Option("--key", help="URI of the signer's P-256 key.")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="File to write the certificate into (PEM).")
    ],
    name: Annotated[str, typer.Option("--name", help="Common name.")] = "Manifest Signer",
    new: Annotated[bool, typer.Option("--new", help="Generate the key first.")] = False,
) -> None:
    """Issue a manifest-signer certificate from the workspace's manufacturing CA."""
    private_key = _signer_key(key, new)
    with Authority.open(workspace(ctx)) as authority:
        certificate = issue_manifest_signer(
            authority, private_key.public_key(), name, str(parse_key_uri(key))
        )
    out.write_bytes(certificate.public_bytes(Encoding.PEM))
    typer.echo(f"manifest signer certificate written to {out}")


@app.command("export")
def export_manifest(
    ctx: typer.Context,
    batch: Annotated[str, typer.Option("--batch", "-b", help="Batch to export.")],
    signer_key: Annotated[str, typer.Option("--signer", help="URI of the manifest-signer key.")],
    signer_cert: Annotated[
        Path,
        typer.Option("--signer-cert", exists=True, dir_okay=False, help="Its certificate (PEM)."),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="File to write the manifest into (JSON).")
    ],
    model: Annotated[str | None, typer.Option(help="Model (default: the product).")] = None,
    part_number: Annotated[
        str | None, typer.Option(help="Part number (default: the product).")
    ] = None,
    group_id: Annotated[str | None, typer.Option(help="groupId for the entries.")] = None,
) -> None:
    """Write a signed manifest of a batch's provisioned devices (Microchip format)."""
    space = workspace(ctx)
    (certificate, *_) = load_certificates(signer_cert)
    key = load_key(signer_key)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError("the manifest signer key must be a P-256 EC key")
    entry_signer = EntrySigner(key, certificate)
    with Authority.open(space) as authority:
        authority_cert = authority.certificate
    description = ExportDescription(
        Organization(_organization(authority_cert), "keyfab"), model, part_number, group_id
    )
    with space.registry() as registry:
        count = export_batch(registry, batch, description, entry_signer, out)
    typer.echo(f"{count} entries written to {out}")


@app.command("import")
def import_entries(
    ctx: typer.Context,
    file: ManifestFile,
    signers: Signers,
    roots: Roots = None,
    as_json: AsJson = False,
) -> None:
    """Verified entries become pre-provisioned devices; bad entries are skipped and named.

    One transaction per file: an unreadable file imports nothing. Re-importing
    is safe: devices already present with the same key are left alone.
    """

    def show(report: EntryReport, outcome: Outcome, reason: str | None) -> None:
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "index": report.index,
                        "uniqueId": report.unique_id,
                        "outcome": outcome.value,
                        "error": reason,
                    }
                )
            )
        if outcome is Outcome.REJECTED:
            print_error(f"{report.name}: {reason}")

    space = workspace(ctx)
    policy = _policy(signers, roots)
    with space.registry() as registry, file.open("rb") as stream:
        summary = import_manifest(registry, stream, policy, file.name, show)
    if not as_json:
        typer.echo(
            f"{summary.imported} imported, {summary.present} already present, "
            f"{summary.rejected} rejected"
        )
    if summary.rejected:
        raise typer.Exit(1)
