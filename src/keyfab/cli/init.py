"""``keyfab init``: a workspace with a root CA and a manufacturing CA."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from keyfab.authority import Authority, initialise
from keyfab.cli._context import workspace
from keyfab.cli._output import console, print_error
from keyfab.rot import KeyAlgorithm, parse_key_uri
from keyfab.workspace import MANUFACTURING, ROOT

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
    adopt_keys: bool = typer.Option(
        False,
        "--adopt-keys",
        help="Use the keys that already exist at --root-key/--ca-key instead of generating.",
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
    ca = initialise(space, organization, algorithm, root_key, ca_key, adopt=adopt_keys)
    with Authority.open(space) as authority:
        uris = {role: parse_key_uri(authority.key_uri(role)) for role in (ROOT, MANUFACTURING)}
    console.print(f"[green]initialised[/] {escape(str(space.home))}")
    for title, certificate, role in (
        ("root CA", ca.chain[-1], ROOT),
        ("manufacturing CA", ca.certificate, MANUFACTURING),
    ):
        kind = KeyAlgorithm.of(certificate.public_key())
        subject = certificate.subject.rfc4514_string()
        console.print(f"  {title:<17} {subject} ({kind})", markup=False)
        console.print(f"  {'  key':<17} {uris[role]}", markup=False)  # str() redacts a PIN
    console.print(f"  registry          {space.database_url}", markup=False)
    _warn_soft_root(uris[ROOT].scheme, uris[MANUFACTURING].scheme)


def _warn_soft_root(root_scheme: str, ca_scheme: str) -> None:
    """A root key in a plain file is the weakest link, worse when the CA key is in hardware."""
    if root_scheme != "soft":
        return
    where = f" while the manufacturing CA key is in {ca_scheme}" if ca_scheme != "soft" else ""
    print_error(
        f"root CA key is a plain file (soft){where}: keep it offline or use --root-key pkcs11:...",
        label="warning:",
        style="yellow",
    )
