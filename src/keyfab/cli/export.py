"""``keyfab export``: hand devices over to a cloud (AWS IoT, Azure IoT Hub DPS)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from cryptography import x509
from sqlalchemy import select
from sqlalchemy.orm import Session

from keyfab.cli._context import workspace
from keyfab.cli._output import KeyfabGroup, print_error
from keyfab.errors import ConfigError
from keyfab.manifest import cloud_devices, write_aws, write_azure
from keyfab.registry import Authority
from keyfab.workspace import MANUFACTURING

app = typer.Typer(
    help="Cloud registration files for the registry's devices.",
    no_args_is_help=True,
    cls=KeyfabGroup,
)

Out = Annotated[Path, typer.Option("--out", help="Directory to write the files into.")]
BatchOption = Annotated[
    str | None, typer.Option("--batch", help="Only this batch (default: every device).")
]


def _run(ctx: typer.Context, write: Callable[[Session, Callable[[str, str], None]], int]) -> None:
    """Run ``write`` in a read transaction; list skipped devices; exit 1 if any."""
    skipped: list[str] = []

    def skip(serial: str, reason: str) -> None:
        skipped.append(serial)
        print_error(f"device {serial}: {reason}")

    registry = workspace(ctx).registry()
    try:
        with registry.transaction() as session:
            count = write(session, skip)
    finally:
        registry.dispose()
    typer.echo(f"{count} devices exported, {len(skipped)} skipped")
    if skipped:
        raise typer.Exit(1)


@app.command("aws-iot")
def aws_iot(
    ctx: typer.Context,
    out: Out,
    batch: BatchOption = None,
    sni_only: Annotated[
        bool,
        typer.Option(
            "--sni-only",
            help="Register certificates without their CA (multi-account registration).",
        ),
    ] = False,
    policy: Annotated[
        str | None, typer.Option("--policy", help="Existing AWS IoT policy to attach.")
    ] = None,
) -> None:
    """Provisioning template and bulk-registration file for StartThingRegistrationTask."""
    _run(
        ctx,
        lambda session, skip: write_aws(
            cloud_devices(session, batch), out, not sni_only, policy, skip
        ),
    )


@app.command("azure-dps")
def azure_dps(
    ctx: typer.Context,
    out: Out,
    batch: BatchOption = None,
    group_id: Annotated[
        str, typer.Option("--group-id", help="Enrollment group ID.")
    ] = "keyfab-manufacturing",
) -> None:
    """An enrollment group for the manufacturing CA and individual enrollments."""

    def write(session: Session, skip: Callable[[str, str], None]) -> int:
        ca = session.scalars(select(Authority).where(Authority.name == MANUFACTURING)).first()
        if ca is None:
            raise ConfigError("no manufacturing CA in this workspace: run 'keyfab init'")
        certificate = x509.load_der_x509_certificate(ca.certificate)
        return write_azure(cloud_devices(session, batch), out, group_id, certificate, skip)

    _run(ctx, write)
