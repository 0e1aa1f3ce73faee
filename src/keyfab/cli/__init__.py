"""The ``keyfab`` command."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from typing import TextIO

import typer

from keyfab import __version__
from keyfab.cli import audit, ca, demo, devices, export, fit, init, manifest, provision
from keyfab.cli._output import errors, fail
from keyfab.errors import KeyfabError
from keyfab.workspace import Workspace, default_home

app = typer.Typer(
    name="keyfab",
    help="Hardware root of trust and device provisioning: PKI, batches, audit.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("init")(init.init)
app.add_typer(ca.app, name="ca")
app.add_typer(provision.app, name="provision")
app.add_typer(devices.app, name="devices")
app.add_typer(audit.app, name="audit")
app.add_typer(fit.app, name="fit")
app.add_typer(manifest.app, name="manifest")
app.add_typer(export.app, name="export")
app.command("demo")(demo.demo)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"keyfab {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    ctx: typer.Context,
    home: Path = typer.Option(
        None, "--home", envvar="KEYFAB_HOME", help="Workspace directory [default: ~/.keyfab]."
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
    ctx.obj = Workspace((home or default_home()).expanduser().absolute())


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    errors.print(f"[yellow]warning:[/] {message}", highlight=False)


def main() -> None:
    """Entry point: KeyfabError becomes one line on stderr and exit status 1."""
    warnings.simplefilter("once")
    warnings.showwarning = _show_warning
    try:
        app()
    except KeyfabError as error:
        fail(str(error))
        sys.exit(1)
    except KeyboardInterrupt:
        fail("interrupted; 'keyfab provision resume' finishes an interrupted batch")
        sys.exit(130)
