"""``keyfab serve``'s output: one access line per request, no secrets, warnings as lines.

The server is the real CLI with two workers (uvicorn spawns them: fresh
processes that do not inherit the CLI's warning set-up); its output is read
after it stopped.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from keyfab.authority import Role
from tests.server.conftest import Server, free_port, make_tokens, make_workspace

WORKERS = 2
SOFT_WARNING = "soft root of trust: private keys are ordinary files"


def _requests(server: Server, token: str) -> None:
    with server.client(token) as client:
        for _ in range(3):
            assert client.get("/api/v1/devices", params={"limit": 2}).status_code == 200
        assert client.get("/api/v1/devices/NOPE-1").status_code == 404
    basic = httpx.BasicAuth("t-auditor", "kf_wrong_secret_in_basic")
    with server.client(auth=basic) as client:
        assert client.get("/api/v1/audit").status_code == 401
    with server.client() as client:
        assert client.get("/api/v1/devices", params={"secret": "query-value"}).status_code == 401


def test_one_line_per_request_without_secrets(tmp_path: Path) -> None:
    home = tmp_path / "home"
    tokens = make_tokens(make_workspace(home))
    server = Server(home, free_port(), workers=WORKERS, env={"KEYFAB_DATABASE_URL": ""}).start()
    try:
        _requests(server, tokens[Role.ADMIN])
    finally:
        server.stop()
    output = server.output()

    line = r'\S+Z 127\.0\.0\.1:\d+ - {who} "GET {path} HTTP/1\.1" {status} \d+\.\dms$'
    listed = re.compile(line.format(who="t-admin", path="/api/v1/devices", status=200), re.M)
    assert len(listed.findall(output)) == 3, output
    missing = line.format(who="t-admin", path="/api/v1/devices/NOPE-1", status=404)
    assert len(re.findall(missing, output, re.M)) == 1, output
    assert len(re.findall(line.format(who="-", path="/api/v1/audit", status=401), output, re.M))
    assert len(re.findall(line.format(who="-", path="/api/v1/devices", status=401), output, re.M))
    assert "uvicorn.access" not in output
    assert '" 200 OK' not in output

    for secret in (*tokens.values(), "kf_wrong_secret_in_basic", "query-value", "Authorization"):
        assert secret not in output


def test_soft_key_warning_once_per_process_as_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    tokens = make_tokens(make_workspace(home))
    server = Server(home, free_port(), workers=WORKERS, env={"KEYFAB_DATABASE_URL": ""}).start()
    try:
        _requests(server, tokens[Role.OPERATOR])
        _requests(server, tokens[Role.OPERATOR])
    finally:
        server.stop()
    output = server.output()
    warned = [line for line in output.splitlines() if SOFT_WARNING in line]
    assert 1 <= len(warned) <= WORKERS + 1, output  # the CLI's process, then each worker
    assert all(line.startswith("warning: ") for line in warned), output
    for trace in ("Traceback", "SoftRotWarning", "soft.py"):  # no traceback, no source line
        assert trace not in output, output
