"""keyfab's own HTML: a landing page at ``/`` and the API reference at ``/docs``.

FastAPI's Swagger UI and ReDoc load their scripts from a CDN, which a factory
network cannot reach, and no installed package ships those assets; so they are
switched off and the reference is rendered here, on the server, from the same
OpenAPI document ``/openapi.json`` serves. The pages need no JavaScript and
reference nothing but keyfab's own paths (the stylesheet is package data under
``/static``).
"""

from __future__ import annotations

from html import escape
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from keyfab import __version__
from keyfab.errors import RegistryError
from keyfab.registry import queries
from keyfab.server.auth import service

router = APIRouter(include_in_schema=False)
STYLESHEET = "/static/keyfab.css"
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
    """Add the pages and their packaged stylesheet to ``app``."""
    app.include_router(router)
    app.mount("/static", StaticFiles(packages=[("keyfab.server", "static")]), name="static")


def _page(title: str, body: str) -> HTMLResponse:
    html = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{escape(title)}</title><link rel="stylesheet" href="{STYLESHEET}">'
        f"</head><body>{body}</body></html>\n"
    )
    return HTMLResponse(html)


def _health(request: Request) -> str:
    try:
        queries.ping(service(request).registry)
    except RegistryError:
        return '<span class="down">registry unavailable</span>'
    return '<span class="ok">ok</span>'


@router.get("/", response_class=HTMLResponse)
def landing(request: Request) -> HTMLResponse:
    """What this service is and where its public parts are."""
    rows = "".join(
        f'<tr><td><a href="{escape(href)}">{escape(name)}</a></td><td>{escape(what)}</td></tr>'
        for href, name, what in LINKS
    )
    body = (
        f"<h1>keyfab {escape(__version__)}</h1>"
        "<p>The device provisioning service of this factory: the device registry, "
        "provisioning batches, the manufacturing CA, the audit log, and EST (RFC 7030) "
        "enrolment under <code>/.well-known/est/</code>.</p>"
        f"<p>Status: {_health(request)}</p>"
        f"<table><tr><th>link</th><th>what</th></tr>{rows}</table>"
        "<p>The REST API needs a token (<code>keyfab tokens create</code>) sent as "
        "<code>Authorization: Bearer</code>; the CA chain, CRL and EST cacerts are public.</p>"
    )
    return _page("keyfab", body)


@router.get("/docs", response_class=HTMLResponse)
def reference(request: Request) -> HTMLResponse:
    """The API reference, rendered from the OpenAPI document."""
    spec = request.app.openapi()
    operations = "".join(
        _operation(method, path, op)
        for path, item in spec.get("paths", {}).items()
        for method, op in item.items()
        if method in METHODS
    )
    info = spec.get("info", {})
    body = (
        '<nav><a href="/">keyfab</a><a href="/openapi.json">openapi.json</a></nav>'
        f"<h1>{escape(str(info.get('title', 'API')))} {escape(str(info.get('version', '')))}"
        f"</h1><p>{escape(str(info.get('description', '')))}</p>"
        "<p>Errors are RFC 9457 problem documents (<code>application/problem+json</code>): "
        "branch on <code>type</code>.</p>"
        f"{operations}"
    )
    return _page("keyfab API reference", body)


def _operation(method: str, path: str, op: dict[str, Any]) -> str:
    summary = escape(str(op.get("summary", "")))
    description = escape(str(op.get("description", ""))).replace("\n\n", "<br><br>")
    return (
        f'<section class="operation"><h3><span class="method">{method}</span>'
        f'<span class="path">{escape(path)}</span></h3><p><b>{summary}</b></p>'
        f"<p>{description}</p>{_parameters(op)}{_body(op)}{_responses(op)}</section>"
    )


def _parameters(op: dict[str, Any]) -> str:
    params = op.get("parameters", [])
    if not params:
        return ""
    rows = "".join(
        f"<tr><td><code>{escape(str(p.get('name')))}</code></td><td>{escape(str(p.get('in')))}"
        f"</td><td>{'yes' if p.get('required') else 'no'}</td>"
        f"<td>{escape(_schema(p.get('schema', {})))}</td></tr>"
        for p in params
    )
    return (
        "<h4>Parameters</h4><table><tr><th>name</th><th>in</th><th>required</th>"
        f"<th>type</th></tr>{rows}</table>"
    )


def _body(op: dict[str, Any]) -> str:
    content = op.get("requestBody", {}).get("content", {})
    if not content:
        return ""
    kinds = "".join(
        f"<li><code>{escape(media)}</code>: {escape(_schema(entry.get('schema', {})))}</li>"
        for media, entry in content.items()
    )
    return f"<h4>Request body</h4><ul>{kinds}</ul>"


def _responses(op: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{escape(str(status))}</td><td>{escape(str(answer.get('description', '')))}"
        f"</td><td>{escape(', '.join(answer.get('content', {})))}</td></tr>"
        for status, answer in sorted(op.get("responses", {}).items())
    )
    return (
        "<h4>Responses</h4><table><tr><th>status</th><th>meaning</th><th>media types</th></tr>"
        f"{rows}</table>"
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
