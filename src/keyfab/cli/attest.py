"""``keyfab attest``: remote attestation of devices in the field.

This group only gathers the subcommands; each lives in its own ``attest_*``
module, so reading an event log loads nothing of the verifier's service.
"""

from __future__ import annotations

import typer

from keyfab.cli import attest_service
from keyfab.cli._output import KeyfabGroup
from keyfab.cli.attest_eventlog import eventlog
from keyfab.cli.attest_policy import app as policy_app

app = typer.Typer(
    help="Remote attestation: boot event logs, policies, evidence and verdicts.",
    no_args_is_help=True,
    cls=KeyfabGroup,
)
app.add_typer(policy_app, name="policy")
app.command("eventlog")(eventlog)
attest_service.register(app)
