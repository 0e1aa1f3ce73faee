"""``keyfab stations``: client certificates for factory stations (operator rights)."""

from __future__ import annotations

from pathlib import Path

import typer
from cryptography.hazmat.primitives.serialization import Encoding

from keyfab.authority import Authority, issue_station, revoke_station
from keyfab.authority.credentials import check_station_name
from keyfab.cli._context import revoke as revoke_as_user
from keyfab.cli._context import workspace
from keyfab.cli._output import console, reason_option
from keyfab.errors import ConfigError
from keyfab.securefile import check_secret_dir, write_secret

app = typer.Typer(
    help="Station identities for mutual TLS with 'keyfab serve'.", no_args_is_help=True
)


@app.command()
def issue(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The station's name."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for NAME.pem and NAME.key."),
) -> None:
    """Make a station key and certificate; the key is written once, 0600."""
    cert_path, key_path = out / f"{check_station_name(name)}.pem", out / f"{name}.key"
    if key_path.exists():
        raise ConfigError(f"{key_path} exists: remove it first")
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_secret_dir(out)  # before the certificate is signed and recorded
    with Authority.open(workspace(ctx)) as authority:
        identity = issue_station(authority, name)
    try:
        write_secret(key_path, identity.key_pem)
    except OSError as error:
        raise ConfigError(f"cannot write {key_path}: {error.strerror}") from None
    cert_path.write_bytes(identity.certificate.public_bytes(Encoding.PEM))
    console.print(f"station {name}: certificate {cert_path}, key {key_path} (0600)", markup=False)


@app.command()
def revoke(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The station's name."),
    reason: str = reason_option("cessationOfOperation"),
) -> None:
    """Revoke a station's certificates: its next request is refused."""
    revoke_as_user(
        ctx,
        f"station {name}",
        reason,
        lambda authority, why, by: revoke_station(authority, name, why, by=by),
    )
