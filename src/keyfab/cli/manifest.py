"""``keyfab manifest``: verify, import and export signed secure-element manifests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from keyfab.errors import KeyfabError
from keyfab.manifest import (
    EntryReport,
    SignerSet,
    VerificationPolicy,
    load_certificates,
    verify_manifest,
)

app = typer.Typer(help="Signed secure-element manifests (Microchip Trust Platform format).",
                  no_args_is_help=True)

ManifestFile = Annotated[Path, typer.Argument(help="Manifest JSON file.", exists=True,
                                              dir_okay=False, readable=True)]
Signers = Annotated[Path, typer.Option("--signers", help="Directory of trusted manifest-signer "
                                       "certificates (picked by x5t#S256).", exists=True)]
Roots = Annotated[Path, typer.Option("--roots", help="File or directory of root certificates "
                                     "device chains must reach.", exists=True)]
AsJson = Annotated[bool, typer.Option("--json", help="One JSON object per entry, for scripts.")]



@app.callback()
def manifest() -> None:
    """Signed secure-element manifests (Microchip Trust Platform format)."""


_err = Console(stderr=True)
MAX_TABLE_ROWS = 1000
"""The human table stops here; failures are always listed on stderr."""


def fail(error: KeyfabError) -> typer.Exit:
    """A KeyfabError as one line on stderr and exit code 1."""
    _err.print(f"error: {error}", markup=False, highlight=False)
    return typer.Exit(1)


def _policy(signers: Path, roots: Path) -> VerificationPolicy:
    return VerificationPolicy(SignerSet.from_path(signers), load_certificates(roots))


def _print(reports: list[EntryReport], as_json: bool) -> None:
    if as_json:
        for report in reports:
            typer.echo(json.dumps({"index": report.index, "uniqueId": report.unique_id,
                                   "verified": report.ok, "error": report.error}))
        return
    table = Table("entry", "uniqueId", "result")
    for report in reports:
        table.add_row(str(report.index), report.unique_id or "?",
                      "verified" if report.ok else f"[red]{report.error}[/red]")
    Console().print(table)


@app.command()
def verify(file: ManifestFile, signers: Signers, roots: Roots, as_json: AsJson = False) -> None:
    """Check every entry's signature, device chain and key; exit 1 naming failures."""
    failed: list[EntryReport] = []
    shown: list[EntryReport] = []
    total = 0
    try:
        with file.open("rb") as stream:
            for report in verify_manifest(stream, _policy(signers, roots)):
                total += 1
                if not report.ok:
                    failed.append(report)
                if as_json:
                    _print([report], as_json=True)
                elif len(shown) < MAX_TABLE_ROWS:
                    shown.append(report)
    except KeyfabError as error:
        raise fail(error) from None
    if not as_json:
        _print(shown, as_json=False)
    for report in failed:
        _err.print(f"error: {report.describe()}", markup=False, highlight=False)
    if failed:
        raise typer.Exit(1)
    if not as_json:
        typer.echo(f"{total} entries verified")
