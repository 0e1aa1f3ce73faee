"""``keyfab stations``: TLS client identities for factory stations (operator rights)."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from cryptography.hazmat.primitives.serialization import Encoding

from keyfab.cli._context import workspace
from keyfab.cli._output import console
from keyfab.errors import ConfigError
from keyfab.server import stations

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
    cert_path, key_path = out / f"{name}.pem", out / f"{name}.key"
    if key_path.exists():
        raise ConfigError(f"{key_path} exists: remove it first")
    out.mkdir(parents=True, exist_ok=True)
    identity = stations.issue(workspace(ctx), name)
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(identity.key_pem)
    cert_path.write_bytes(identity.certificate.public_bytes(Encoding.PEM))
    console.print(f"station {name}: certificate {cert_path}, key {key_path} (0600)")


@app.command()
def revoke(ctx: typer.Context, name: str = typer.Argument(..., help="The station's name.")) -> None:
    """Revoke a station's certificates: its next request is refused."""
    count = stations.revoke(workspace(ctx), name)
    console.print(f"revoked {count} certificate(s) of station {name}")
