"""``keyfab export``: hand devices over to a cloud (AWS IoT, Azure IoT Hub DPS)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from keyfab.authority import Authority
from keyfab.cli._context import workspace
from keyfab.cli._output import KeyfabGroup, print_error
from keyfab.cloud import cloud_devices, write_aws, write_azure

app = typer.Typer(
    help="Cloud registration files for the registry's devices.",
    no_args_is_help=True,
    cls=KeyfabGroup,
)

Out = Annotated[
    Path, typer.Option("--out", "-o", help="Directory to write the files into (made if missing).")
]
BatchOption = Annotated[
    str | None, typer.Option("--batch", "-b", help="Only this batch (default: every device).")
]
EXIT_HELP = (
    " Devices that are revoked, failed or not provisioned are left out on purpose: "
    "each is named on a 'skipped:' line and the exit status stays 0. A device that "
    "should be exported but cannot be (an invalid name, an unknown issuer) is an "
    "'error:' line and the exit status is 1."
)


def _run(
    ctx: typer.Context,
    write: Callable[[Authority, Callable[[str, str], None], Callable[[str, str], None]], int],
) -> None:
    """Run ``write`` over the registry; name every device left out; exit 1 on errors."""
    left_out: list[str] = []
    failed: list[str] = []

    def exclude(serial: str, reason: str) -> None:
        left_out.append(serial)
        print_error(f"device {serial}: {reason}", label="skipped:", style="yellow")

    def skip(serial: str, reason: str) -> None:
        failed.append(serial)
        print_error(f"device {serial}: {reason}")

    with Authority.open(workspace(ctx)) as authority:
        count = write(authority, exclude, skip)
    typer.echo(f"{count} devices exported, {len(left_out) + len(failed)} skipped")
    if failed:
        raise typer.Exit(1)


@app.command(
    "aws-iot",
    help="Provisioning template and bulk-registration file for StartThingRegistrationTask."
    + EXIT_HELP,
)
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
        lambda authority, exclude, skip: write_aws(
            cloud_devices(authority.registry, batch, exclude), out, not sni_only, policy, skip
        ),
    )


@app.command(
    "azure-dps",
    help="An enrollment group for the manufacturing CA and individual enrollments." + EXIT_HELP,
)
def azure_dps(
    ctx: typer.Context,
    out: Out,
    batch: BatchOption = None,
    group_id: Annotated[
        str, typer.Option("--group-id", help="Enrollment group ID.")
    ] = "keyfab-manufacturing",
) -> None:
    """An enrollment group for the manufacturing CA and individual enrollments."""

    def write(
        authority: Authority, exclude: Callable[[str, str], None], skip: Callable[[str, str], None]
    ) -> int:
        devices = cloud_devices(authority.registry, batch, exclude)
        return write_azure(devices, out, group_id, authority.certificate, skip)

    _run(ctx, write)
