"""How the CLI speaks: Rich tables for people, JSON for scripts, one-line errors.

:class:`KeyfabGroup` is the CLI's one error boundary: a command raises
:class:`~keyfab.errors.KeyfabError` and the boundary prints ``error: <message>``
as one line on stderr and exits 1. Commands that ran but failed some items (a
manifest entry, a device to export) list each with :func:`print_error` and then
exit with their own code. Nothing a user or a file supplies is read as Rich
markup: ``[rot]`` in a message and ``[default: ...]`` in help text show as written.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from keyfab.clock import utc_now
from keyfab.errors import KeyfabError

if TYPE_CHECKING:
    from keyfab.authority import Revocation
    from keyfab.registry import Certificate

console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)

JSON_OPTION = typer.Option(False, "--json", help="Print JSON for scripts instead of a table.")


def reason_option(default: str = "unspecified") -> Any:
    """``--reason``: an RFC 5280 revocation reason, named as the CRL entry will carry it."""
    from keyfab.pki import RevocationReason

    choices = ", ".join(reason.value for reason in RevocationReason)
    return typer.Option(default, "--reason", help=f"RFC 5280 reason, as in the CRL: {choices}.")


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    identifiers: Collection[str] = (),
    caption: str | None = None,
) -> None:
    """A Rich table of plain-text cells; ``identifiers`` columns are never cut.

    Names and serials are copied into the next command, so on a narrow terminal
    they keep their full width (the other columns wrap) instead of ending in '...'.
    """
    view = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    for index, column in enumerate(columns):
        if column in identifiers:
            longest = max(
                (len(str(row[index])) for row in rows if row[index] is not None), default=0
            )
            view.add_column(column, no_wrap=True, overflow="fold", min_width=max(longest, 1))
        else:
            heading = max(len(word) for word in column.split() or [""])
            view.add_column(column, overflow="fold", min_width=max(heading, 1))
    for row in rows:  # cells are text, not markup: a "[x]" in a value stays
        view.add_row(*(Text(str(cell)) if cell is not None else "" for cell in row))
    # Too narrow for the identifiers and a word of each other column: overflow
    # the terminal rather than squeeze columns to nothing.
    unbounded = console.options.update(max_width=10_000)
    needed = Measurement.get(console, unbounded, view).minimum
    if needed <= console.width:
        console.print(view)
    else:  # Console.print caps its width at the terminal's: a wider console renders it
        Console(file=console.file, width=needed, force_terminal=console.is_terminal).print(view)


def fields(title: str, values: Mapping[str, object]) -> None:
    view = Table(title=title, title_justify="left", show_header=False)
    view.add_column(style="bold")
    view.add_column()
    for name, value in values.items():
        view.add_row(name, Text("" if value is None else str(value)))
    console.print(view)


INTERRUPTED = "interrupted; 'keyfab provision resume' finishes an interrupted batch"


def print_error(message: str, *, label: str = "error:", style: str = "bold red") -> None:
    """One line on stderr: ``label`` (in colour on a terminal), then ``message`` as written.

    Every error line of the CLI goes through here: the boundary's and each item
    a command could not do. ``message`` is plain text, never markup.
    """
    errors.print(Text.assemble((label, style), " ", message), highlight=False, soft_wrap=True)


def _literal_help(command: Any) -> None:
    """Escape the help of ``command``, its parameters and subcommands (once each).

    Typer reads help text as Rich markup, which drops ``[default: ...]`` and any
    other bracketed word; escaped, it shows as written.
    """
    if getattr(command, "_keyfab_literal_help", False):
        return
    command._keyfab_literal_help = True
    if getattr(command, "rich_markup_mode", None) == "rich":
        for item in (command, *command.params):
            for attribute in ("help", "short_help"):
                text = getattr(item, attribute, None)
                if isinstance(text, str):
                    setattr(item, attribute, escape(text))
    for subcommand in getattr(command, "commands", {}).values():
        _literal_help(subcommand)


class KeyfabGroup(TyperGroup):
    """A command group that is keyfab's error boundary and shows its help literally.

    ``keyfab`` itself is one; so is each sub-app that also runs on its own
    (``python -m keyfab.cli.fit``, tests that invoke it). The innermost catches.
    """

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        _literal_help(self)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyfabError as error:
            print_error(str(error))
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            print_error(INTERRUPTED)
            raise typer.Exit(130) from None


def say_revoked(what: str, revocation: Revocation) -> None:
    """One line for a revocation, or for the no-op of revoking what is already revoked."""
    if not revocation.changed:
        console.print(f"{what} is already revoked: nothing changed", markup=False)
        return
    count = len(revocation.revoked)
    console.print(
        f"revoked {what} ({count} certificate(s), reason {revocation.reason})", markup=False
    )


def certificate_fields(certificate: Certificate) -> dict[str, object]:
    """A recorded certificate as the CLI shows it (``--json`` and tables alike)."""
    from keyfab.pki.display import readable_subject

    revoked = certificate.revoked_at
    return {
        "key": certificate.key_label,
        "profile": certificate.profile,
        "issuer": certificate.issuer,  # the CA whose CRL lists it once revoked
        "serial_number": certificate.serial_number,
        "subject": readable_subject(certificate.der),  # rows before 0.2 stored 2.5.4.5=
        "not_after": certificate.not_after.isoformat(),
        "status": str(certificate.status(utc_now())),
        "revoked_at": revoked.isoformat() if revoked else None,
        "revocation_reason": certificate.revocation_reason,
    }
