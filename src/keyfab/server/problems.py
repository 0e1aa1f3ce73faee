"""RFC 9457 problem details: every error the service returns, with a stable ``type``.

Clients branch on ``type`` (a URN that never changes), people read ``title`` and
``detail``. Handlers here turn keyfab's exception tree, FastAPI's validation
errors and Starlette's HTTP errors into ``application/problem+json`` so no
request ever ends in a bare 500 page or a traceback.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope, Send

from keyfab.errors import (
    AuthenticationError,
    ConfigError,
    ConflictError,
    InvalidRequestError,
    KeyfabError,
    NotFoundError,
    PermissionDeniedError,
    PkiError,
    ProvisionError,
    RefusedError,
    RegistryError,
    VerificationError,
)

PROBLEM_JSON = "application/problem+json"
_CHALLENGE = {"WWW-Authenticate": 'Bearer, Basic realm="keyfab"'}
_PREFIX = "urn:keyfab:problem:"
_log = logging.getLogger(__name__)

_STATUS_SLUGS = {
    400: ("invalid-request", "The request is not valid"),
    401: ("unauthorized", "Authentication required"),
    403: ("forbidden", "Not allowed for this identity"),
    404: ("not-found", "No such resource"),
    405: ("method-not-allowed", "Method not allowed"),
    409: ("conflict", "Conflicts with the current state"),
    413: ("payload-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported content type"),
    422: ("invalid-request", "The request is not valid"),
    503: ("unavailable", "Service unavailable"),
}


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details; branch on type, show title and detail.",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "urn:keyfab:problem:<slug>, stable"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string", "description": "the request path"},
        "errors": {
            "type": "array",
            "description": "422 only: each invalid field",
            "items": {"type": "object"},
        },
    },
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries declaring problem documents for ``statuses``.

    Declaring 422 here also replaces FastAPI's default validation schema, which
    is not what the service sends.
    """
    return {
        status: {
            "description": _STATUS_SLUGS[status][1],
            "content": {PROBLEM_JSON: {"schema": PROBLEM_SCHEMA}},
        }
        for status in statuses
    }


PROTECTED = problem_responses(401, 403, 413)
"""What any operation needing an identity may answer besides its own errors."""
REST = problem_responses(400, 401, 403, 404, 413, 415, 422)
"""The REST routers' problems: every operation there needs a token and may take JSON."""


class ProblemError(Exception):
    """An error answer: raise it anywhere in a handler."""

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        *,
        title: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(detail)
        self.status, self.slug, self.detail = status, slug, detail
        self.title = title or _STATUS_SLUGS.get(status, (slug, slug))[1]
        self.headers = headers


async def send_problem(
    scope: Scope,
    send: Send,
    problem: ProblemError,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Answer with ``problem`` straight on the ASGI channel.

    For middleware that refuses a request before FastAPI has parsed it (the
    body limit, strict JSON bodies): the same document the handlers send.
    """
    body = json.dumps(
        {
            "type": problem_type(problem.slug),
            "title": problem.title,
            "status": problem.status,
            "detail": problem.detail,
            "instance": scope.get("path", ""),
        }
    ).encode()
    start = [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(body)).encode()),
        *headers,
    ]
    await send({"type": "http.response.start", "status": problem.status, "headers": start})
    await send({"type": "http.response.body", "body": body})


def request_header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lowercase) in an ASGI scope, if any."""
    for key, value in scope.get("headers", ()):
        if key == name:
            text: str = value.decode("latin-1")
            return text
    return None


def problem_type(slug: str) -> str:
    return _PREFIX + slug


def _response(
    problem: ProblemError, request: Request, extra: dict[str, Any] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": problem_type(problem.slug),
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        "instance": request.url.path,
    }
    body.update(extra or {})
    return JSONResponse(body, problem.status, headers=problem.headers, media_type=PROBLEM_JSON)


_REFUSALS: tuple[tuple[type[RefusedError], int], ...] = (
    (InvalidRequestError, 400),
    (AuthenticationError, 401),
    (PermissionDeniedError, 403),
    (NotFoundError, 404),
    (ConflictError, 409),
)
"""The authority's refusals by HTTP status; the problem type comes from the error's slug."""

_KEYFAB_ERRORS: tuple[tuple[type[KeyfabError], int, str], ...] = (
    (VerificationError, 400, "verification-failed"),
    (ConfigError, 400, "invalid-request"),
    (ProvisionError, 409, "provisioning-failed"),
    (PkiError, 500, "pki-error"),
    (RegistryError, 503, "registry-unavailable"),
)


def from_keyfab_error(error: KeyfabError) -> ProblemError:
    """The problem for an error keyfab raised on purpose (its message is safe to show)."""
    if isinstance(error, RefusedError):
        status = next((code for kind, code in _REFUSALS if isinstance(error, kind)), 400)
        headers = _CHALLENGE if status == 401 else None
        return ProblemError(status, error.slug, str(error), headers=headers)
    for cls, status, slug in _KEYFAB_ERRORS:
        if isinstance(error, cls):
            return ProblemError(status, slug, str(error))
    return ProblemError(500, "internal-error", str(error), title="keyfab failed")


def install(app: FastAPI) -> None:
    """Register the handlers that make every error a problem document."""

    @app.exception_handler(ProblemError)
    async def _problem(request: Request, problem: ProblemError) -> JSONResponse:
        return _response(problem, request)

    @app.exception_handler(KeyfabError)
    async def _keyfab(request: Request, error: KeyfabError) -> JSONResponse:
        return _response(from_keyfab_error(error), request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": [str(part) for part in e.get("loc", ())], "msg": str(e.get("msg", ""))}
            for e in error.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid"}
        detail = f"{'.'.join(first['loc'])}: {first['msg']}"
        return _response(ProblemError(422, "invalid-request", detail), request, {"errors": errors})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        slug, title = _STATUS_SLUGS.get(error.status_code, ("http-error", "HTTP error"))
        headers = dict(error.headers) if error.headers else None
        problem = ProblemError(
            error.status_code, slug, str(error.detail), title=title, headers=headers
        )
        return _response(problem, request)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        _log.exception("unexpected error on %s %s", request.method, request.url.path)
        problem = ProblemError(
            500, "internal-error", "unexpected server error", title="keyfab failed"
        )
        return _response(problem, request)
