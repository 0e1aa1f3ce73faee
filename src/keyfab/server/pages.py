"""keyfab's own public HTML: a landing page at ``/`` and the API reference at ``/docs``.

FastAPI's Swagger UI and ReDoc load their scripts from a CDN, which a factory
network cannot reach, and no installed package ships those assets; so they are
switched off and the reference is rendered here, on the server, from the same
OpenAPI document ``/openapi.json`` serves (templates ``landing.html`` and
``reference.html``). The pages reference nothing but keyfab's own paths (the
stylesheet and the dashboard's small script are package data under ``/static``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from keyfab.errors import RegistryError
from keyfab.registry import queries
from keyfab.server._html import render
from keyfab.server.auth import service

router = APIRouter(include_in_schema=False)
METHODS = ("get", "put", "post", "delete", "patch")
LINKS = (
    ("/docs", "API reference", "every operation, its parameters and its answers"),
    ("/openapi.json", "OpenAPI document", "the same, for tools and client generators"),
    ("/api/v1/ca/chain", "CA chain", "manufacturing CA and root, PEM"),
    ("/api/v1/ca/crl?encoding=pem", "CRL", "the manufacturing CA's current revocation list"),
    ("/.well-known/est/cacerts", "EST cacerts", "the chain as RFC 7030 certs-only PKCS#7"),
    ("/api/v1/health", "Health", "liveness and database reachability, JSON"),
)


def install(app: FastAPI) -> None:
    """Add the pages and their packaged stylesheet and script to ``app``."""
    app.include_router(router)
    app.mount("/static", StaticFiles(packages=[("keyfab.server", "static")]), name="static")


def _healthy(request: Request) -> bool:
    try:
        queries.ping(service(request).registry)
    except RegistryError:
        return False
    return True


@router.get("/", response_class=HTMLResponse)
def landing(request: Request) -> HTMLResponse:
    """What this service is and where its public parts are."""
    return render(request, "landing.html", viewer=None, links=LINKS, healthy=_healthy(request))


@router.get("/docs", response_class=HTMLResponse)
def reference(request: Request) -> HTMLResponse:
    """The API reference, rendered from the OpenAPI document."""
    spec = request.app.openapi()
    operations = [
        (method, path, op)
        for path, item in spec.get("paths", {}).items()
        for method, op in item.items()
        if method in METHODS
    ]
    return render(
        request,
        "reference.html",
        viewer=None,
        info=spec.get("info", {}),
        operations=operations,
        schema=_schema,
    )


def _schema(schema: dict[str, Any]) -> str:
    """A schema in a few words: its component name, its type, or its alternatives."""
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " or ".join(_schema(part) for part in schema["anyOf"])
    kind = str(schema.get("type", "any"))
    if kind == "array":
        return f"array of {_schema(schema.get('items', {}))}"
    pattern = schema.get("pattern") or schema.get("enum")
    return f"{kind} ({pattern})" if pattern else kind
