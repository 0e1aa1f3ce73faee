"""REST: provisioning batches (create and start, progress, resume).

A batch runs in a background thread of the worker that accepted it; its state
lives in the registry, so progress can be read from any worker and a batch
cut short by a restart is finished by ``resume`` (here or with the CLI).

The API names a recipe, it does not upload one: recipes live in the
workspace's ``recipes/`` directory, put there by whoever administers the
server. A recipe chooses which driver code and files the server uses (a
PKCS#11 module is a shared library, objects are files read from disk), so a
token holder must not be able to write one.
"""

from __future__ import annotations

import pathlib
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from starlette.status import HTTP_201_CREATED, HTTP_202_ACCEPTED

from keyfab.authority import READERS, WRITERS, Principal
from keyfab.errors import KeyfabError
from keyfab.names import pattern
from keyfab.provision import cancel_batch, create_batch, parse_recipe
from keyfab.provision.recipe import read_recipe
from keyfab.registry import queries
from keyfab.server._service import Service
from keyfab.server.auth import require, service
from keyfab.server.models import (
    BatchCancellation,
    BatchList,
    BatchProgress,
    BatchRequest,
    BatchSummary,
)
from keyfab.server.problems import ProblemError

router = APIRouter(prefix="/api/v1/batches", tags=["batches"])
Reader = Annotated[Principal, Depends(require(*READERS))]
Writer = Annotated[Principal, Depends(require(*WRITERS))]
RECIPES = "recipes"
Name = Annotated[str, Path(pattern=pattern("batch"))]


def _progress(request: Request, name: str) -> BatchProgress:
    svc = service(request)
    found = queries.batch_summary(svc.registry, name)
    batch = found.batch
    return BatchProgress(
        name=batch.name,
        product=batch.product,
        count=batch.count,
        state=batch.state,
        running=svc.running(name),
        devices=dict(found.devices),
        created_at=batch.created_at,
        finished_at=batch.finished_at,
    )


def _recipe(svc: Service, name: str) -> tuple[str, pathlib.Path]:
    """(recipe text, its directory) for a recipe in the workspace's recipes/ directory."""
    folder = svc.workspace.home / RECIPES
    path = folder / f"{name}.toml"
    if not path.exists():
        raise ProblemError(404, "recipe-not-found", f"no recipe {name!r} in {RECIPES}/")
    try:
        return read_recipe(path), folder
    except KeyfabError:
        raise ProblemError(400, "invalid-recipe", f"recipe {name!r} cannot be read") from None


@router.post("", response_model=BatchProgress, status_code=HTTP_201_CREATED)
def create(request: Request, _: Writer, body: BatchRequest) -> BatchProgress:
    """Record a batch (one serial per device, reserved now) and start provisioning it."""
    svc = service(request)
    text, folder = _recipe(svc, body.recipe)
    try:
        parse_recipe(text, f"recipe {body.recipe}")
    except KeyfabError as error:
        raise ProblemError(400, "invalid-recipe", str(error)) from None
    create_batch(svc.workspace, text, folder, body.name, body.count)
    svc.start_batch(body.name)
    return _progress(request, body.name)


def _summary(found: queries.BatchSummary) -> BatchSummary:
    batch, rate = found.batch, found.rate
    return BatchSummary(
        name=batch.name,
        product=batch.product,
        count=batch.count,
        state=batch.state,
        devices=dict(found.devices),
        created_at=batch.created_at,
        finished_at=batch.finished_at,
        devices_per_second=None if rate is None else round(rate, 1),
    )


@router.get("", response_model=BatchList)
def list_batches(request: Request, _: Reader) -> BatchList:
    """Every batch, oldest first: devices per state, times and provisioning rate."""
    return BatchList(items=[_summary(b) for b in queries.batches(service(request).registry)])


@router.get("/{name}", response_model=BatchProgress)
def progress(request: Request, _: Reader, name: Name) -> BatchProgress:
    """How far a batch is: devices per state, and whether it is running here."""
    return _progress(request, name)


@router.post("/{name}/resume", response_model=BatchProgress, status_code=HTTP_202_ACCEPTED)
def resume(request: Request, _: Writer, name: Name) -> BatchProgress:
    """Finish a batch's pending and issued devices; no device is provisioned twice."""
    current = _progress(request, name)
    if current.state != "running":
        raise ProblemError(409, f"batch-{current.state}", f"batch {name!r} is {current.state}")
    if not service(request).start_batch(name):
        raise ProblemError(409, "batch-running", f"batch {name!r} is already running")
    return _progress(request, name)


@router.post("/{name}/cancel", response_model=BatchCancellation)
def cancel(request: Request, principal: Writer, name: Name) -> BatchCancellation:
    """Stop a batch for good: a running batch stops after its chunk in hand, then
    pending devices become ``cancelled``; issued ones stay.

    409 ``batch-running`` only if this worker's run cannot finish its chunk in
    time (try again); cancelling a cancelled batch changes nothing (``changed``
    is false).
    """
    done = cancel_batch(service(request).workspace, name, by=principal.name)
    return BatchCancellation(
        name=name,
        changed=done.changed,
        released=done.released,
        issued=done.issued,
        stopped=done.stopped,
    )
