"""``keyfab init``: a workspace with a root CA and a manufacturing CA."""

from __future__ import annotations

from pathlib import Path

import typer

from keyfab.authority import initialise
from keyfab.cli._context import workspace
from keyfab.cli._output import console
from keyfab.rot import KeyAlgorithm

_CA_ALGORITHMS = [KeyAlgorithm.EC_P256, KeyAlgorithm.EC_P384, KeyAlgorithm.RSA_3072]


def init(
    ctx: typer.Context,
    organization: str = typer.Option(
        "keyfab", "--org", help="Organisation name in the CA subjects."
    ),
    algorithm: KeyAlgorithm = typer.Option(
        KeyAlgorithm.EC_P256, "--algorithm", help="CA key type: ec-p256, ec-p384 or rsa-3072."
    ),
    root_key: str = typer.Option(
        None, "--root-key", help="Key URI for the root CA key [default: soft file in HOME/ca]."
    ),
    ca_key: str = typer.Option(
        None,
        "--ca-key",
        help="Key URI for the manufacturing CA key, e.g. pkcs11:token=factory;object=mfg-ca.",
    ),
    home: Path = typer.Option(
        None, "--home", help="Workspace directory, as 'keyfab --home' (this one wins)."
    ),
) -> None:
    """Create the root and manufacturing CAs and an empty registry."""
    if home is not None:  # 'keyfab init --home H', as the hint for a missing workspace says
        ctx.find_root().obj = home
    if algorithm not in _CA_ALGORITHMS:
        raise typer.BadParameter(
            f"CA keys are {', '.join(_CA_ALGORITHMS)}", param_hint="--algorithm"
        )
    space = workspace(ctx)
    ca = initialise(space, organization, algorithm, root_key, ca_key)
    console.print(f"[green]initialised[/] {space.home}")
    console.print(f"  root CA           {ca.chain[-1].subject.rfc4514_string()}")
    console.print(f"  manufacturing CA  {ca.certificate.subject.rfc4514_string()} ({algorithm})")
    console.print(f"  registry          {space.database_url}")
