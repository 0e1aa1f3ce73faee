"""``keyfab serve``: the REST API and EST on uvicorn, over TLS from keyfab's own PKI."""

from __future__ import annotations

import importlib
import ipaddress
import os
import ssl

import typer

from keyfab.cli._context import workspace
from keyfab.cli._output import console
from keyfab.errors import ConfigError, MissingExtraError
from keyfab.server import MAX_BODY, server_files
from keyfab.workspace import Workspace

# What `keyfab serve` runs on: the `server` extra (starlette comes with fastapi).
_SERVER_PACKAGES = ("fastapi", "starlette", "uvicorn", "httptools", "uvloop")


def _require_server_extra() -> None:
    """Import the service's libraries now, or say which extra to install."""
    try:
        for package in _SERVER_PACKAGES:
            importlib.import_module(package)
    except ImportError as error:
        if (error.name or "").partition(".")[0] not in _SERVER_PACKAGES:
            raise
        raise MissingExtraError("keyfab serve", "server") from None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _names(host: str, extra: list[str]) -> tuple[str, ...]:
    """Names for the server certificate: the bind address (unless a wildcard) and --san."""
    names = [] if host in ("0.0.0.0", "::") else [host]  # noqa: S104
    if _loopback(host):
        names += ["localhost", "127.0.0.1"]
    names += extra
    unique = tuple(dict.fromkeys(names))
    if not unique:
        raise ConfigError("binding to a wildcard address: name the host with --san")
    return unique


def _prepare_cmp(space: Workspace) -> None:
    """The CMP responder's key and certificate, once, before the workers start."""
    from keyfab.authority import Authority
    from keyfab.cmp.identity import prepare

    with Authority.open(space) as authority:
        prepare(space, authority)


def serve(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8443, "--port", min=1, max=65535, help="TCP port."),
    workers: int = typer.Option(1, "--workers", "-w", min=1, max=64, help="Worker processes."),
    san: list[str] = typer.Option(
        [], "--san", help="Extra host name or IP for the server certificate (repeatable)."
    ),
    insecure_http: bool = typer.Option(
        False, "--insecure-http", help="Plain HTTP, no TLS: loopback addresses only (testing)."
    ),
    max_body: int = typer.Option(MAX_BODY, "--max-body", min=1024, help="Request body limit."),
) -> None:
    """Serve the REST API and EST (RFC 7030) over TLS, mutual TLS for devices."""
    _require_server_extra()
    import uvicorn

    from keyfab.server import PeerCertHttpToolsProtocol

    space = workspace(ctx)
    if insecure_http and not _loopback(host):
        raise ConfigError("--insecure-http is allowed on loopback addresses only")
    space.registry().dispose()  # fail now, with one clear line, if there is no workspace
    os.environ["KEYFAB_HOME"] = str(space.home)  # what the worker processes open
    os.environ["KEYFAB_MAX_BODY"] = str(max_body)
    _prepare_cmp(space)
    tls: dict[str, object] = {}
    scheme = "http"
    if not insecure_http:
        files = server_files(space, _names(host, san))
        tls = {
            "ssl_certfile": str(files.certificate),
            "ssl_keyfile": str(files.key),
            "ssl_ca_certs": str(files.trust),
            "ssl_cert_reqs": ssl.CERT_OPTIONAL,
        }
        scheme = "https"
        console.print(f"trust anchor for clients: {files.trust}")
    console.print(f"keyfab serving on {scheme}://{host}:{port} with {workers} worker(s)")
    from uvicorn.config import LOGGING_CONFIG

    from keyfab.server._logs import log_config

    uvicorn.run(
        "keyfab.server.app:from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        http=PeerCertHttpToolsProtocol,  # C parser: h11 cost more CPU than enrolment
        loop="uvloop",
        log_level="warning",
        log_config=log_config(LOGGING_CONFIG),  # keyfab.server.access logs each request
        access_log=False,  # or uvicorn would log each request a second time
        server_header=False,
        **tls,  # type: ignore[arg-type]
    )
