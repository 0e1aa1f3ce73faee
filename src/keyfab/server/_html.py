"""Rendering keyfab's HTML: one Jinja2 environment over the packaged templates.

Autoescaping is on for every template, so a serial, a failure reason or an
audit subject (all of which a device or an operator chose) is text, never
markup. Every page is sent with a Content-Security-Policy that admits only
keyfab's own stylesheet and script: an injected tag could not load or run
anything even if escaping were ever missed.
"""

from __future__ import annotations

import datetime
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape

from keyfab import __version__

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _when(value: datetime.datetime | None) -> str:
    """Times as people on a factory floor read them: UTC, to the second."""
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("keyfab.server", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.globals["version"] = __version__
    return env


ENVIRONMENT = _environment()


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """``template`` rendered with ``context`` (and the request) as a page with keyfab's headers."""
    html = ENVIRONMENT.get_template(template).render(request=request, **context)
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)
