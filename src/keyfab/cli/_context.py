"""The workspace chosen by ``--home`` / ``KEYFAB_HOME``, and who runs the command."""

from __future__ import annotations

import getpass
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from keyfab.authority import Authority, Revocation
    from keyfab.pki import RevocationReason
    from keyfab.workspace import Workspace

    Revoke = Callable[[Authority, RevocationReason, str], Revocation]


def workspace(ctx: typer.Context) -> Workspace:
    """The workspace of this invocation (imported here: not every command needs one)."""
    from keyfab.cli._softhsm import use_workspace_softhsm
    from keyfab.workspace import Workspace, default_home

    given = ctx.find_root().obj  # a home path from --home, or a Workspace when embedded
    if isinstance(given, Workspace):
        space = given
    else:
        space = Workspace(Path(given or default_home()).expanduser().absolute())
    use_workspace_softhsm(space.home)  # CA keys in the workspace's SoftHSM2 token, if any
    return space


def operator() -> str:
    """Who acts, for the audit log: the local user running the CLI."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli"


def revoke(ctx: typer.Context, what: str, reason: str, action: Revoke) -> None:
    """Parse ``reason``, run one authority revocation as this user, say what it did."""
    from keyfab.authority import Authority
    from keyfab.cli._output import say_revoked
    from keyfab.pki import RevocationReason

    parsed = RevocationReason.parse(reason)
    with Authority.open(workspace(ctx)) as authority:
        say_revoked(what, action(authority, parsed, operator()))
