"""The ``keyfab`` command.

Each subcommand lives in its own module and is imported only when it runs:
``keyfab fit verify`` should not pay for the registry, SQLAlchemy and pydantic
before it hashes a single byte. ``app`` (what tests and ``--help`` use) is the
whole command with every subcommand loaded.

Errors end in one place, :class:`keyfab.cli._output.KeyfabGroup`: a KeyfabError
becomes ``error: <message>`` on stderr and exit status 1.
"""

from __future__ import annotations

import importlib
import logging
import sys
import warnings
from pathlib import Path
from typing import TextIO

import typer

from keyfab import __version__
from keyfab.cli._output import KeyfabGroup, print_error

# name: (module, attribute, is a group of commands)
_SUBCOMMANDS = {
    "init": ("keyfab.cli.init", "init", False),
    "ca": ("keyfab.cli.ca", "app", True),
    "provision": ("keyfab.cli.provision", "app", True),
    "devices": ("keyfab.cli.devices", "app", True),
    "certificates": ("keyfab.cli.certificates", "app", True),
    "batches": ("keyfab.cli.batches", "app", True),
    "audit": ("keyfab.cli.audit", "app", True),
    "fit": ("keyfab.cli.fit", "app", True),
    "manifest": ("keyfab.cli.manifest", "app", True),
    "export": ("keyfab.cli.export", "app", True),
    "demo": ("keyfab.cli.demo", "demo", False),
    "serve": ("keyfab.cli.serve", "serve", False),
    "tokens": ("keyfab.cli.tokens", "app", True),
    "stations": ("keyfab.cli.stations", "app", True),
    "cmp": ("keyfab.cli.cmp", "app", True),
    "recipe": ("keyfab.cli.recipe", "app", True),
    "attest": ("keyfab.cli.attest", "app", True),
    "report": ("keyfab.cli.report", "app", True),
    "device": ("keyfab.cli.device", "app", True),
    "agent": ("keyfab.cli.agent", "app", True),
}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"keyfab {__version__}")
        raise typer.Exit


def _root(
    ctx: typer.Context,
    home: Path = typer.Option(
        None,
        "--home",
        envvar="KEYFAB_HOME",
        help="Workspace directory; else $KEYFAB_HOME [default: ~/.keyfab].",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what keyfab does."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version."
    ),
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    ctx.meta["home_given"] = home is not None
    ctx.obj = home  # the workspace itself is opened by the commands that need one


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    print_error(str(message), label="warning:", style="yellow")


def build_app(only: str | None = None) -> typer.Typer:
    """The ``keyfab`` command with every subcommand, or just ``only``."""
    command = typer.Typer(
        name="keyfab",
        cls=KeyfabGroup,
        help="Hardware root of trust and device provisioning: PKI, batches, audit, "
        "lifecycle, attestation, the device API.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    command.callback()(_root)
    for name, (module, attribute, group) in _SUBCOMMANDS.items():
        if only in (None, name):
            target = getattr(importlib.import_module(module), attribute)
            if group:
                command.add_typer(target, name=name)
            else:
                command.command(name)(target)
    return command


def _invoked(arguments: list[str]) -> str | None:
    """The subcommand named on the command line, if it is one we know."""
    values = iter(arguments)
    for argument in values:
        if argument == "--home":
            next(values, None)
        elif not argument.startswith("-"):
            return argument if argument in _SUBCOMMANDS else None
    return None


def __getattr__(name: str) -> typer.Typer:
    if name == "app":
        return build_app()
    raise AttributeError(name)


def main() -> None:
    """Entry point: the command with only the subcommand named loaded; warnings as lines."""
    warnings.simplefilter("once")
    warnings.showwarning = _show_warning
    build_app(_invoked(sys.argv[1:]))()
