"""The workspace chosen by ``--home`` / ``KEYFAB_HOME``, handed to every command."""

from __future__ import annotations

import typer

from keyfab.cli._softhsm import use_workspace_softhsm
from keyfab.workspace import Workspace


def workspace(ctx: typer.Context) -> Workspace:
    obj = ctx.find_root().obj
    assert isinstance(obj, Workspace)
    use_workspace_softhsm(obj.home)  # CA keys in the workspace's SoftHSM2 token, if any
    return obj
