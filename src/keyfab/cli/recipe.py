"""``keyfab recipe``: write a commented recipe template, check a recipe before a batch.

As SPSDK's ``get-template``: ``new`` writes every key with what it does and its
default, so nobody starts from a copy of someone else's recipe; ``check`` finds
a recipe's mistakes before ``keyfab provision`` spends a serial on them.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from keyfab.cli._output import console
from keyfab.errors import ConfigError
from keyfab.rot.drivers import choices

app = typer.Typer(help="Write and check recipes.", no_args_is_help=True)


@app.command()
def new(
    driver: str = typer.Option("soft", "--driver", help=f"Root-of-trust driver: {choices()}."),
    out: Path = typer.Option(
        None, "--out", "-o", help="File to write (never overwritten) [default: stdout]."
    ),
) -> None:
    """A commented recipe template: every key, its meaning, its default."""
    from keyfab.provision.template import render_template

    text = render_template(driver)
    if out is None:
        typer.echo(text, nl=False)
        return
    try:
        with out.open("x", encoding="utf-8") as file:
            file.write(text)
    except FileExistsError:
        raise ConfigError(f"{out} exists: not overwritten") from None
    except OSError as error:
        raise ConfigError(f"cannot write {out}: {error.strerror}") from None
    console.print(f"wrote {escape(str(out))}", markup=True)


@app.command()
def check(
    recipe: Path = typer.Argument(..., help="The recipe file."),
    count: int = typer.Option(1, "--count", help="Devices in the batch, for the serials shown."),
    batch: str = typer.Option("batch", "--batch", "-b", help="Batch name filled into {batch}."),
) -> None:
    """Validate a recipe as a batch would, before anything is reserved; one line."""
    from keyfab.provision.template import check_recipe_file

    result = check_recipe_file(recipe, count, batch)
    serials = (
        result.first_serial
        if result.count == 1
        else f"{result.first_serial} .. {result.last_serial}"
    )
    typer.echo(
        f"OK {recipe}: product {result.product}, driver {result.driver}, "
        f"keys {', '.join(result.keys)}, serials {serials} ({result.count})"
    )
