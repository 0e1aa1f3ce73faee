"""``keyfab provision``: run a batch, or resume one after a crash."""

from __future__ import annotations

import time
from pathlib import Path
from typing import NoReturn

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from keyfab.cli._context import workspace
from keyfab.cli._output import JSON_OPTION, console, emit_json, errors, print_error
from keyfab.clock import utc_now
from keyfab.errors import ConfigError, ProvisionError
from keyfab.names import check_name
from keyfab.provision import Summary, create_batch, load_recipe, outstanding, run_batch
from keyfab.provision.batch import MAX_WORKERS
from keyfab.registry import queries
from keyfab.rot.drivers import DRIVERS
from keyfab.workspace import Workspace

app = typer.Typer(
    help="Provision devices in batches.", invoke_without_command=True, no_args_is_help=False
)

_BACKEND_HELP = "Override the recipe's [rot] driver: " + "; ".join(
    f"{d.name} ({d.summary})" for d in DRIVERS.values()
)


@app.callback()
def provision(
    ctx: typer.Context,
    recipe: Path = typer.Option(None, "--recipe", "-r", help="The product recipe (TOML)."),
    count: int = typer.Option(None, "--count", "-n", help="How many devices."),
    workers: int = typer.Option(1, "--workers", "-w", help="Parallel worker processes."),
    batch: str = typer.Option(
        None, "--batch", "-b", help="Batch name [default: <product>-<UTC time>]."
    ),
    backend: str = typer.Option(None, "--backend", help=_BACKEND_HELP),
    as_json: bool = JSON_OPTION,
) -> None:
    """Provision COUNT devices following RECIPE, with a progress bar."""
    if ctx.invoked_subcommand is not None:
        return
    if recipe is None or count is None:
        raise typer.BadParameter("give --recipe and --count (or use 'provision resume BATCH')")
    space = workspace(ctx)
    _check_workers(workers)  # everything is checked before create_batch writes anything
    parsed, text = load_recipe(recipe, backend)  # an unknown backend: one line, nothing written
    name = check_name("batch", batch or f"{parsed.product.name}-{utc_now():%Y%m%dT%H%M%SZ}")
    create_batch(space, text, recipe.parent, name, count)
    run_with_progress(space, name, count, workers, as_json)


@app.command()
def resume(
    ctx: typer.Context,
    batch: str = typer.Argument(..., help="The batch to finish."),
    workers: int = typer.Option(1, "--workers", "-w", help="Parallel worker processes."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Finish a batch that was interrupted: no device is provisioned twice."""
    space = workspace(ctx)
    _check_workers(workers)
    run_with_progress(space, batch, len(outstanding(space, batch)), workers, as_json)


def _check_workers(workers: int) -> None:
    """The worker count run_batch accepts, checked before a batch is recorded."""
    if not 1 <= workers <= MAX_WORKERS:
        raise ConfigError(f"--workers must be 1 to {MAX_WORKERS}")


def run_with_progress(
    space: Workspace, batch: str, todo: int, workers: int, as_json: bool
) -> Summary:
    started = time.perf_counter()
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=errors,
        disable=as_json,
        transient=False,
    ) as progress:
        task = progress.add_task(batch, total=todo, rate="")

        def advance(n: int) -> None:
            progress.advance(task, n)
            done = progress.tasks[0].completed
            progress.update(
                task, rate=f"{done / max(time.perf_counter() - started, 1e-9):,.0f} dev/s"
            )

        try:
            summary = run_batch(space, batch, workers, advance)
        except KeyboardInterrupt:
            progress.stop()  # the bar ends where it was, then one line says where the batch is
            _interrupted(space, batch)
    elapsed = time.perf_counter() - started
    report(summary, elapsed, todo, as_json)
    if summary.stopped:
        raise ProvisionError(
            f"batch {batch} was cancelled while this station ran it: "
            f"stopped after the chunk in hand ({summary.provisioned} provisioned)"
        )
    if summary.failed:
        raise ProvisionError(
            f"{summary.failed} device(s) failed in batch {batch}: "
            f"see 'keyfab devices list --batch {batch} --state failed'"
        )
    return summary


def _interrupted(space: Workspace, batch: str) -> NoReturn:
    """Say how far the batch got, from the registry, and exit 130 as a shell expects.

    Whatever a chunk had not committed was rolled back or left ``issued``, so
    the line's resume command finishes exactly what is missing.
    """
    with space.registry() as registry:
        found = queries.batch_summary(registry, batch)
    done = found.devices.get("provisioned", 0)
    print_error(
        f"{done:,} of {found.batch.count:,} provisioned; "
        f"finish with 'keyfab provision resume {batch}'",
        label="interrupted:",
        style="yellow",
    )
    raise typer.Exit(130)


def report(summary: Summary, elapsed: float, todo: int, as_json: bool) -> None:
    rate = todo / elapsed if elapsed > 0 else 0.0
    if as_json:
        emit_json(
            {
                "batch": summary.batch,
                "count": summary.count,
                "provisioned": summary.provisioned,
                "failed": summary.failed,
                "stopped": summary.stopped,
                "seconds": round(elapsed, 3),
                "devices_per_second": round(rate, 1),
                "failures": [{"serial": s, "reason": r} for s, r in summary.failures],
            }
        )
        return
    for serial, reason in summary.failures[:10]:
        print_error(f"{serial}: {reason}", label="failed", style="red")
    console.print(
        f"batch [bold]{summary.batch}[/]: {summary.provisioned}/{summary.count} provisioned, "
        f"{summary.failed} failed, {todo} this run in {elapsed:.2f}s ({rate:,.0f} devices/s)"
    )
