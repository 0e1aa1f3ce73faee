"""``keyfab devices``: list, show, export and revoke provisioned devices."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from keyfab.authority import revoke_device
from keyfab.cli._context import revoke as revoke_as_user
from keyfab.cli._context import workspace
from keyfab.cli._output import (
    JSON_OPTION,
    certificate_fields,
    console,
    emit_json,
    fields,
    reason_option,
    table,
)
from keyfab.errors import InvalidRequestError
from keyfab.registry import DeviceState, queries

app = typer.Typer(help="Devices in the registry.", no_args_is_help=True)


@app.command("list")
def list_devices(
    ctx: typer.Context,
    batch: str = typer.Option(None, "--batch", "-b", help="Only this batch."),
    state: DeviceState = typer.Option(None, "--state", help="Only devices in this state."),
    product: str = typer.Option(None, "--product", help="Only devices of this product."),
    limit: int = typer.Option(50, "--limit", min=1, max=100_000, help="At most this many."),
    cursor: str = typer.Option(
        None, "--cursor", help="Continue a listing: the cursor the previous page printed."
    ),
    after: str = typer.Option(None, "--after", help="Start after the device with this serial."),
    offset: int = typer.Option(None, "--offset", hidden=True),
    as_json: bool = JSON_OPTION,
) -> None:
    """Devices, oldest first, a keyset page at a time (--cursor continues, --after SERIAL starts).

    With --json the page is a JSON list on stdout; the next page's cursor goes to stderr.
    """
    if offset is not None:
        raise InvalidRequestError(
            "--offset was removed: page with --cursor (printed after each page) or --after SERIAL",
            slug="offset-removed",
        )
    with workspace(ctx).registry() as registry:
        page = queries.device_listing(
            registry,
            batch=batch,
            state=state,
            product=product,
            cursor=cursor,
            after_serial=after,
            limit=limit,
        )
    rows = [_row(row) for row in page.items]
    more = None if page.next_cursor is None else f"more: --cursor {page.next_cursor}"
    if as_json:
        emit_json(rows)
        if more:
            typer.echo(more, err=True)
        return
    table(
        f"devices ({len(rows)} shown)",
        ["serial", "state", "batch", "rot", "unique id", "failure"],
        [
            [r["serial"], r["state"], r["batch"], r["rot"], r["unique_id"], r["failure"]]
            for r in rows
        ],
        identifiers=("serial", "batch", "unique id"),
        caption=more,
    )


def _row(row: queries.DeviceRow) -> dict[str, object]:
    device = row.device
    return {
        "serial": device.serial,
        "state": device.state,
        "batch": row.batch,
        "slot": device.slot,
        "rot": device.rot_kind,
        "unique_id": device.unique_id,
        "provisioned_at": device.provisioned_at.isoformat() if device.provisioned_at else None,
        "failure": device.failure,
    }


@app.command()
def show(
    ctx: typer.Context,
    serial: str = typer.Argument(..., help="Device serial number."),
    pem: bool = typer.Option(False, "--pem", help="Print the device's certificates as PEM."),
    as_json: bool = JSON_OPTION,
) -> None:
    """One device and its certificates."""
    with workspace(ctx).registry() as registry:
        found = queries.device(registry, serial)
    device, certs = found.device, found.certificates
    if pem:
        for cert in certs:
            typer.echo(
                x509.load_der_x509_certificate(cert.der).public_bytes(Encoding.PEM).decode(),
                nl=False,
            )
        return
    history = [certificate_fields(c) for c in certs]
    info = {
        "serial": device.serial,
        "state": device.state,
        "rot": device.rot_kind,
        "unique_id": device.unique_id,
        "created_at": device.created_at.isoformat(),
        "provisioned_at": device.provisioned_at.isoformat() if device.provisioned_at else None,
        "failure": device.failure,
        "evidence": json.loads(device.evidence) if device.evidence else None,
        "certificates": history,
    }
    if as_json:
        emit_json(info)
        return
    fields(
        f"device {serial}", {k: v for k, v in info.items() if k not in ("evidence", "certificates")}
    )
    table(
        "certificates",
        ["key", "profile", "serial number", "not after", "status"],
        [
            [c["key"], c["profile"], c["serial_number"], c["not_after"], c["status"]]
            for c in history
        ],
        identifiers=("serial number",),
    )


@app.command()
def export(
    ctx: typer.Context,
    batch: str = typer.Option(None, "--batch", "-b", help="Only this batch."),
    out: Path = typer.Option(
        None, "--out", "-o", help="File to write the certificates into [default: stdout]."
    ),
    fmt: str = typer.Option("pem", "--format", help="pem (a bundle) or json."),
) -> None:
    """Device certificates for import elsewhere (a PEM bundle or JSON lines)."""
    if fmt not in ("pem", "json"):
        raise typer.BadParameter("pem or json", param_hint="--format")
    with workspace(ctx).registry() as registry:
        rows = queries.batch_certificates(registry, batch)
    chunks = []
    for serial, cert in rows:
        pem = x509.load_der_x509_certificate(cert.der).public_bytes(Encoding.PEM).decode()
        chunks.append(
            pem
            if fmt == "pem"
            else json.dumps({"serial": serial, "key": cert.key_label, "certificate": pem}) + "\n"
        )
    text = "".join(chunks)
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text)
        console.print(f"{len(rows)} certificate(s) written to {out}")


@app.command()
def revoke(
    ctx: typer.Context,
    serial: str = typer.Argument(..., help="Device serial number."),
    reason: str = reason_option(),
) -> None:
    """Revoke every certificate of a device; the next CRL lists them with the reason."""
    revoke_as_user(
        ctx,
        f"device {serial}",
        reason,
        lambda authority, why, by: revoke_device(authority, serial, why, by=by),
    )
