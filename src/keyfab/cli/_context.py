"""The workspace chosen by ``--home`` / ``KEYFAB_HOME``, handed to every command."""

from __future__ import annotations

import typer

from keyfab.workspace import Workspace


def workspace(ctx: typer.Context) -> Workspace:
    obj = ctx.find_root().obj
    assert isinstance(obj, Workspace)
    return obj
