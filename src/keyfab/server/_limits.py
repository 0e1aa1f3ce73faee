"""A hard cap on request bodies, enforced before any handler reads them.

Checking ``Content-Length`` alone is not enough (chunked bodies have none), so
the receive channel is wrapped and counts bytes as they arrive; past the cap
the request fails with 413 and nothing has been written anywhere.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyfab.server.problems import ProblemError, request_header, send_problem


class BodyTooLargeError(Exception):
    pass


class BodyLimit:
    """ASGI middleware: refuse bodies over ``limit`` bytes with a 413 problem."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await self._refuse(scope, send)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLargeError
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLargeError:
            if not started:
                await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        detail = f"request bodies are limited to {self.limit} bytes"
        problem = ProblemError(413, "payload-too-large", detail)
        await send_problem(scope, send, problem, [(b"connection", b"close")])


def _content_length(scope: Scope) -> int | None:
    declared = request_header(scope, b"content-length")
    try:
        return None if declared is None else int(declared)
    except ValueError:
        return None
