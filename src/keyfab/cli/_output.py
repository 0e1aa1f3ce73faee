"""How the CLI speaks: Rich tables for people, JSON for scripts, one-line errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from keyfab.authority import Revocation

console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)

JSON_OPTION = typer.Option(False, "--json", help="Print JSON for scripts instead of a table.")


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    view = Table(title=title, title_justify="left")
    for column in columns:
        view.add_column(column)
    for row in rows:
        view.add_row(*(str(cell) if cell is not None else "" for cell in row))
    console.print(view)


def fields(title: str, values: Mapping[str, object]) -> None:
    view = Table(title=title, title_justify="left", show_header=False)
    view.add_column(style="bold")
    view.add_column()
    for name, value in values.items():
        view.add_row(name, "" if value is None else str(value))
    console.print(view)


def fail(message: str) -> None:
    errors.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)


def say_revoked(what: str, revocation: Revocation) -> None:
    """One line for a revocation, or for the no-op of revoking what is already revoked."""
    if not revocation.changed:
        console.print(f"{what} is already revoked: nothing changed", markup=False)
        return
    count = len(revocation.revoked)
    console.print(
        f"revoked {what} ({count} certificate(s), reason {revocation.reason})", markup=False
    )
