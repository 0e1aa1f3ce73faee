"""``keyfab attest``: remote attestation, one module per subcommand.

This group only gathers the subcommands; each lives in its own ``attest_*``
module so that reading an event log loads nothing of the verifier's service.
"""

from __future__ import annotations

import typer

from keyfab.cli._output import KeyfabGroup
from keyfab.cli.attest_eventlog import eventlog

app = typer.Typer(
    help="Remote attestation: boot event logs, quotes and their verification.",
    no_args_is_help=True,
    cls=KeyfabGroup,
)
app.command("eventlog")(eventlog)
