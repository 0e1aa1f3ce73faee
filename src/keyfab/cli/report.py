"""``keyfab report``: write and check a product's signed compliance evidence pack."""

from __future__ import annotations

from pathlib import Path

import typer

from keyfab.authority import Authority
from keyfab.cli._context import workspace
from keyfab.cli._output import JSON_OPTION, console, emit_json
from keyfab.pki import serial_hex
from keyfab.pki.files import load_certificates

app = typer.Typer(
    help="Compliance evidence packs (CRA Annex I, IEC 62443-4-2).", no_args_is_help=True
)


@app.command()
def evidence(
    ctx: typer.Context,
    product: str = typer.Option(..., "--product", help="The product the pack is about."),
    batches: list[str] = typer.Option(
        None, "--batch", "-b", help="Only this batch of the product (repeatable) [default: all]."
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Directory to write the pack into (new or empty)."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Write report.html, report.pdf, evidence.json, the SBOM and their signed SHA256SUMS."""
    from keyfab.report.build import write_pack

    with Authority.open(workspace(ctx)) as authority:
        found = write_pack(authority, product, batches or [], out)
    if as_json:
        emit_json({"out": str(out), "evidence": found})
        return
    missing = [r for r in found["requirements"] if r["status"] == "none"]  # type: ignore[attr-defined]
    console.print(
        f"evidence pack for {product} written to {out}: {found['devices']['total']} device(s), "  # type: ignore[index]
        f"{len(found['requirements']) - len(missing)} requirement(s) with evidence, "  # type: ignore[arg-type]
        f"{len(missing)} without",
        markup=False,
        highlight=False,
    )


@app.command()
def verify(
    ctx: typer.Context,
    folder: Path = typer.Argument(..., help="The pack's directory."),
    ca_file: Path = typer.Option(
        None,
        "--CAfile",
        help="PEM root certificate(s) to trust [default: this workspace's roots].",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Check the signature over SHA256SUMS and every file's SHA-256; exit 1 naming a bad one."""
    from keyfab.report.pack import verify_pack, verify_recorded

    if ca_file is not None:
        signed = verify_pack(folder, load_certificates(ca_file, "root certificate"))
    else:
        with workspace(ctx).registry() as registry:
            signed = verify_recorded(registry, folder)
    view = {
        "ok": True,
        "signer": signed.signer.subject.rfc4514_string(),
        "serial_number": serial_hex(signed.signer),
        "signed_at": signed.signing_time.isoformat(),
        "recorded": ca_file is None,
    }
    if as_json:
        emit_json(view)
    else:
        console.print(
            f"evidence pack intact: signed {view['signed_at']} by {view['signer']} "
            f"(serial {view['serial_number']})",
            markup=False,
            highlight=False,
        )
