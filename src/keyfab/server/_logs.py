"""The service's logs: one access line per request, warnings as one line each.

The access line follows the shape users know from uvicorn's access log and the
Common Log Format, with the caller where CLF puts the user::

    2026-12-02T16:55:00Z 127.0.0.1:50412 - t-admin "GET /api/v1/devices HTTP/1.1" 200 3.1ms

It holds the method, the path without its query string, the status, the time
taken and the principal's name (``-`` when anonymous or refused), never a
header, token or body: a log is read by more people than the registry is.
uvicorn's own access log is off (``keyfab serve``) so each request is one line.
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from typing import Any, TextIO

from starlette.types import ASGIApp, Message, Receive, Scope, Send

ACCESS = logging.getLogger("keyfab.server.access")
WARNINGS = logging.getLogger("keyfab.server.warnings")
PRINCIPAL = "principal"
"""The key under which ``auth.identify`` leaves the caller's name in the request state."""


class UtcFormatter(logging.Formatter):
    """Timestamps in UTC, ISO 8601, whole seconds: like every time in keyfab."""

    def __init__(self, fmt: str | None = None) -> None:
        super().__init__(fmt, datefmt="%Y-%m-%dT%H:%M:%SZ")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return time.strftime(datefmt or "%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))


class AccessLog:
    """ASGI middleware: log each HTTP request once it has been answered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state: dict[str, Any] = scope.setdefault("state", {})
        status = 500  # what the client sees if nothing was sent at all

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            _log_request(scope, str(state.get(PRINCIPAL) or "-"), status, started)


def log_request(scope: Scope, principal: str, status: int, started: float) -> None:
    """One access-log line, for an answer sent outside the application (``est_fast``)."""
    _log_request(scope, principal, status, started)


def _log_request(scope: Scope, principal: str, status: int, started: float) -> None:
    client = scope.get("client")
    peer = f"{client[0]}:{client[1]}" if client else "-"
    elapsed = (time.perf_counter() - started) * 1000
    request = f"{scope['method']} {scope['path']} HTTP/{scope.get('http_version', '1.1')}"
    ACCESS.info('%s - %s "%s" %d %.1fms', peer, principal, request, status, elapsed)


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """One ``warning:`` line, no source file and line: operators read these, not developers."""
    WARNINGS.warning("%s", message)


def one_line_warnings() -> None:
    """Each distinct warning once per process, as one log line (the CLI does the same)."""
    warnings.simplefilter("once")
    warnings.showwarning = _show_warning


def log_config(base: dict[str, Any]) -> dict[str, Any]:
    """uvicorn's logging configuration ``base`` plus keyfab's access and warning loggers."""
    config = copy.deepcopy(base)
    config["formatters"]["keyfab-access"] = {"()": UtcFormatter, "fmt": "%(asctime)s %(message)s"}
    config["formatters"]["keyfab-warning"] = {"format": "warning: %(message)s"}
    config["handlers"]["keyfab-access"] = _stream("keyfab-access", "ext://sys.stdout")
    config["handlers"]["keyfab-warning"] = _stream("keyfab-warning", "ext://sys.stderr")
    config["loggers"][ACCESS.name] = _logger("keyfab-access", "INFO")
    config["loggers"][WARNINGS.name] = _logger("keyfab-warning", "WARNING")
    return config


def _stream(formatter: str, stream: str) -> dict[str, str]:
    return {"class": "logging.StreamHandler", "formatter": formatter, "stream": stream}


def _logger(handler: str, level: str) -> dict[str, Any]:
    return {"handlers": [handler], "level": level, "propagate": False}
