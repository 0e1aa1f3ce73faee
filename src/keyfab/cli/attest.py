"""``keyfab attest``: remote attestation (the commands live in their own modules)."""

from __future__ import annotations

import typer

from keyfab.cli import attest_service

app = typer.Typer(help="Remote attestation of TPM devices.", no_args_is_help=True)
attest_service.register(app)
