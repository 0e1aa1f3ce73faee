"""Strict JSON request bodies for the REST API: declared, well-formed, unambiguous.

FastAPI parses a body as JSON whatever its ``Content-Type`` (or none), and
``json.loads`` keeps the last of two equal keys, so ``{"count":1,"count":100000}``
is read as 100,000 by us while a proxy or log that keeps the first saw 1. This
middleware reads each API body once (inside the body limit, which counts the
bytes first), refuses malformed JSON (422) and duplicate keys (400), insists on
``application/json`` (415), each with a problem document, and hands the same
bytes on.
EST (``/.well-known/est``) carries PKCS#10 and PKCS#7, not JSON: it is left alone.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyfab.server.problems import ProblemError, request_header, send_problem

API_PREFIX = "/api/"
_METHODS = frozenset({"POST", "PUT", "PATCH"})


class _DuplicateKeyError(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(key)
        result[key] = value
    return result


def _media_type(scope: Scope) -> str:
    return (request_header(scope, b"content-type") or "").split(";", 1)[0].strip().lower()


def check_json(body: bytes, media_type: str) -> tuple[int, str, str] | None:
    """(status, slug, detail) if ``body`` is not acceptable JSON, else None.

    A body that is no JSON at all is 422, as FastAPI answered before (whatever
    its label); duplicate keys are 400; well-formed JSON sent without
    ``Content-Type: application/json`` is 415, since it was never declared JSON.
    """
    try:
        json.loads(body, object_pairs_hook=_no_duplicates)
    except _DuplicateKeyError as error:
        return 400, "invalid-request", f"duplicate key {str(error)[:64]!r} in the JSON body"
    except (ValueError, RecursionError):  # bad UTF-8 or JSON, huge numbers, deep nesting
        return 422, "invalid-request", "the request body is not valid JSON"
    if media_type != "application/json":
        return 415, "unsupported-media-type", "send request bodies as application/json"
    return None


class StrictJsonBodies:
    """ASGI middleware: API bodies are checked JSON or a 415/400 problem."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in _METHODS
            or not scope["path"].startswith(API_PREFIX)
        ):
            await self.app(scope, receive, send)
            return
        body = await _read(receive)
        refusal = check_json(body, _media_type(scope)) if body else None
        if refusal is not None:
            status, slug, detail = refusal
            await send_problem(scope, send, ProblemError(status, slug, detail))
            return
        await self.app(scope, _replay(body, receive), send)


async def _read(receive: Receive) -> bytes:
    """The whole body (the body limit outside us stops it at its cap)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive channel that yields ``body`` once, then the real channel (disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
