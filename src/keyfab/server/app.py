"""The FastAPI application: REST API, EST, problem documents, body limit."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from starlette.types import ASGIApp

from keyfab import __version__
from keyfab.server import (
    MAX_BODY,
    api_attestation,
    api_batches,
    api_device_events,
    api_devices,
    api_system,
    cmp,
    dashboard,
    est,
    ocsp,
    pages,
    problems,
)
from keyfab.server._json_body import StrictJsonBodies
from keyfab.server._limits import BodyLimit
from keyfab.server._logs import AccessLog, one_line_warnings
from keyfab.server._service import Service
from keyfab.workspace import Workspace, default_home


def create_app(workspace: Workspace, *, max_body: int = MAX_BODY) -> FastAPI:
    """The service for one workspace (its registry and CA are opened now)."""
    svc = Service.open(workspace)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        svc.close()

    app = FastAPI(
        title="keyfab",
        version=__version__,
        description="Device identities: registry, batches, CA, audit, and EST enrolment.",
        lifespan=lifespan,
        docs_url=None,  # Swagger UI and ReDoc load from a CDN: pages.py serves /docs instead
        redoc_url=None,
    )
    app.state.service = svc
    problems.install(app)
    app.add_middleware(StrictJsonBodies)  # inside the limit: it reads bodies already capped
    app.add_middleware(BodyLimit, limit=max_body)
    app.add_middleware(AccessLog)  # it sees every answer, the 413s included
    app.include_router(api_system.router)
    app.include_router(api_devices.router, responses=problems.REST)
    app.include_router(api_attestation.router, responses={**problems.REST, **_CONFLICT})
    app.include_router(api_device_events.router, responses=problems.REST)
    app.include_router(api_batches.router, responses={**problems.REST, **_CONFLICT})
    app.include_router(est.router)
    app.include_router(cmp.router)
    app.include_router(ocsp.router)
    app.include_router(dashboard.router)
    pages.install(app)
    return app


_CONFLICT = problems.problem_responses(409)


def from_environment() -> ASGIApp:
    """uvicorn's factory for worker processes: the workspace comes from KEYFAB_HOME.

    The application is wrapped in the OCSP cache (``ocsp.CachedAnswers``), outside
    everything Starlette and FastAPI add, so a cached answer costs only uvicorn.

    A worker is a fresh process: it does not inherit the CLI's warning display,
    so it sets the same one-line, once-per-process display before opening the CA.
    """
    one_line_warnings()
    limit = int(os.environ.get("KEYFAB_MAX_BODY") or MAX_BODY)
    app = create_app(Workspace(Path(default_home()).absolute()), max_body=limit)
    return ocsp.CachedAnswers(app, app.state.service.ocsp)
