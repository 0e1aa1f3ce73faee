"""``keyfab fit``: build, sign, verify and inspect U-Boot FIT images."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from keyfab.boot import (
    FitVerificationError,
    SignatureAlgorithm,
    Signer,
    SignImagesWarning,
    VerifyReport,
    add_key,
    sign_fit,
    verify_fit,
)
from keyfab.boot._build import load_description
from keyfab.boot._files import load_dtb, load_fit, write_atomic
from keyfab.boot._inspect import describe
from keyfab.errors import KeyfabError
from keyfab.rot import load_key, open_rot

app = typer.Typer(help="U-Boot verified boot: FIT images and control-DTB keys.",
                  no_args_is_help=True)
console = Console()
P = ParamSpec("P")
R = TypeVar("R")


def _one_line_errors(command: Callable[P, R]) -> Callable[P, R]:
    """KeyfabError becomes one line on stderr and exit code 1, never a traceback."""
    @wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except KeyfabError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1) from None

    return run


@app.command()
@_one_line_errors
def sign(
    image: Annotated[Path, typer.Argument(help="FIT image (.itb) to sign in place")],
    key: Annotated[str, typer.Option(help="signing key URI: soft:, pkcs11:, tpm2:")],
    key_name_hint: Annotated[str, typer.Option(help="key name in the control DTB")],
    algo: Annotated[str | None, typer.Option(help="sha256,rsa2048 ...; default: from key")] = None,
    padding: Annotated[str | None, typer.Option(help="pss for RSA-PSS")] = None,
    conf: Annotated[list[str] | None, typer.Option(help="configuration(s); default all")] = None,
    required: Annotated[str | None, typer.Option(help="mark key required: conf|image")] = None,
    control: Annotated[Path | None, typer.Option(help="control DTB to add the key to")] = None,
    sign_images: Annotated[bool, typer.Option(help="also sign each image")] = False,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="write here")] = None,
) -> None:
    """Add hashes, sign configurations (and images) and write the key into the control DTB."""
    private = load_key(key)
    algorithm = (SignatureAlgorithm.parse(algo, padding) if algo
                 else SignatureAlgorithm.for_key(private, pss=padding == "pss"))
    fit = load_fit(image)
    dtb = load_dtb(control) if control is not None else None
    if dtb is not None:  # before writing anything: a bad --required stops here
        add_key(dtb, private.public_key(), key_name_hint, algorithm.name, required)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        signed = sign_fit(fit, Signer(private, key_name_hint, algorithm), conf,
                          images=sign_images)
    for warning in caught:
        if issubclass(warning.category, SignImagesWarning):
            typer.echo(f"warning: {warning.message}", err=True)
    write_atomic(output or image, fit.chunks())
    if control is not None and dtb is not None:
        write_atomic(control, dtb.chunks())
    console.print(f"signed {', '.join(signed)} with {algorithm.name}:{key_name_hint}")


def _print_report(report: VerifyReport) -> None:
    table = Table(title=f"configuration {report.config}")
    for column in ("node", "kind", "result", "detail"):
        table.add_column(column)
    labels = {True: "[green]ok[/]", False: "[red]FAILED[/]", None: "[yellow]unchecked[/]"}
    for node in report.nodes:
        table.add_row(node.path, node.kind, labels[node.ok], node.detail)
    console.print(table)


@app.command()
@_one_line_errors
def verify(
    image: Annotated[Path, typer.Argument(help="FIT image (.itb)")],
    control: Annotated[Path | None, typer.Option(help="U-Boot control DTB with keys")] = None,
    conf: Annotated[str | None, typer.Option(help="configuration (default: default)")] = None,
    min_version: Annotated[int | None, typer.Option(help="minimum rollback-index")] = None,
    counter_rot: Annotated[str | None, typer.Option(help="rot URI holding a counter")] = None,
    counter: Annotated[str, typer.Option(help="monotonic counter name")] = "rollback",
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable report")] = False,
) -> None:
    """Verify as U-Boot would: required keys, every signature node, every image hash."""
    if counter_rot is not None:
        floor = open_rot(counter_rot).counter(counter).read()
        min_version = max(floor, min_version or 0)
    report = verify_fit(load_fit(image), load_dtb(control) if control else None, conf,
                        min_version)
    if as_json:
        typer.echo(json.dumps({"config": report.config, "ok": report.ok,
                               "reason": report.reason,
                               "nodes": [vars(n) for n in report.nodes]}, indent=2))
    else:
        _print_report(report)
    if not report.ok:
        raise FitVerificationError(f"configuration {report.config!r}: {report.reason}")


def _tree(label: str, content: dict[str, Any]) -> Tree:
    tree = Tree(label)
    for key, value in content.items():
        if isinstance(value, dict):
            tree.add(_tree(f"[bold]{key}[/]", value))
        else:
            tree.add(f"{key} = {value}")
    return tree


@app.command()
@_one_line_errors
def inspect(
    image: Annotated[Path, typer.Argument(help="FIT image (.itb)")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Show the images, configurations, hashes and signatures of a FIT."""
    summary = describe(load_fit(image))
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        console.print(_tree(f"[bold]{image.name}[/]", summary))


@app.command()
@_one_line_errors
def build(
    description: Annotated[Path, typer.Argument(help="TOML description of the FIT")],
    output: Annotated[Path, typer.Option("-o", "--output", help="the .itb to write")],
) -> None:
    """Build a FIT (with hash nodes) from a TOML description; sign it with `fit sign`."""
    fit = load_description(description)
    write_atomic(output, fit.chunks())
    console.print(f"wrote {output} ({len(fit.images())} images)")


if __name__ == "__main__":
    app()
