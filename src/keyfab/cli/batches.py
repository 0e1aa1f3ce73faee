"""``keyfab batches``: list, show and cancel provisioning batches."""

from __future__ import annotations

from typing import Any

import typer

from keyfab.cli._context import operator, workspace
from keyfab.cli._output import JSON_OPTION, console, emit_json, fields, table
from keyfab.registry import queries

app = typer.Typer(help="Provisioning batches.", no_args_is_help=True)

COUNTED = ("pending", "issued", "provisioned", "failed")


def _view(summary: queries.BatchSummary) -> dict[str, Any]:
    """One batch as both the table and --json show it."""
    batch = summary.batch
    rate = summary.rate
    return {
        "name": batch.name,
        "product": batch.product,
        "state": batch.state,
        "count": batch.count,
        **{state: summary.devices.get(state, 0) for state in COUNTED},
        "cancelled": summary.devices.get("cancelled", 0),
        "created_at": batch.created_at.isoformat(),
        "finished_at": batch.finished_at.isoformat() if batch.finished_at else None,
        "devices_per_second": None if rate is None else round(rate, 1),
    }


@app.command("list")
def list_batches(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """Every batch, oldest first, with its devices per state and its rate."""
    with workspace(ctx).registry() as registry:
        views = [_view(summary) for summary in queries.batches(registry)]
    if as_json:
        emit_json(views)
        return
    columns = ["name", "product", "state", *COUNTED, "created_at", "devices_per_second"]
    table(
        f"batches ({len(views)})",
        [c.replace("_", " ") for c in columns],
        [[view[c] for c in columns] for view in views],
        identifiers=("name", "product"),
    )


@app.command()
def show(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The batch."),
    as_json: bool = JSON_OPTION,
) -> None:
    """One batch: product, state, devices per state, times and rate."""
    with workspace(ctx).registry() as registry:
        view = _view(queries.batch_summary(registry, name))
    if as_json:
        emit_json(view)
    else:
        fields(f"batch {name}", view)


@app.command()
def cancel(ctx: typer.Context, name: str = typer.Argument(..., help="The batch.")) -> None:
    """Stop a batch for good: pending devices become 'cancelled', the batch 'cancelled'.

    Issued devices keep their recorded certificates and stay 'issued' (revoke
    them if they will not ship); 'keyfab provision resume' refuses a cancelled
    batch. A station provisioning the batch stops after the chunk in hand.
    """
    from keyfab.provision import cancel_batch

    done = cancel_batch(workspace(ctx), name, by=operator())
    if not done.changed:
        console.print(f"batch {name} is already cancelled: nothing changed", markup=False)
        return
    console.print(
        f"cancelled batch {name}: {done.released} pending device(s) released, "
        f"{done.issued} issued device(s) left as they are",
        markup=False,
    )
