"""``keyfab attest``: remote attestation of devices in the field."""

from __future__ import annotations

import typer

from keyfab.cli._output import KeyfabGroup
from keyfab.cli.attest_policy import app as policy_app

app = typer.Typer(
    help="Remote attestation: policies, evidence and verdicts.",
    no_args_is_help=True,
    cls=KeyfabGroup,
)
app.add_typer(policy_app, name="policy")
