"""The service describes itself offline: a landing page, an API reference, OpenAPI problems.

A factory network has no Internet: every page must work with what keyfab serves
itself, and the OpenAPI document must say which problem documents each
operation can answer, not only FastAPI's 422.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import httpx

from tests.server.conftest import Server

PAGES = ("/", "/docs")
PUBLIC = {
    ("get", "/api/v1/health"),
    ("get", "/api/v1/ca/chain"),
    ("get", "/api/v1/ca/crl"),
    ("get", "/.well-known/est/cacerts"),
    ("get", "/.well-known/est/csrattrs"),
}
PROTOCOL = {  # authenticated inside the message (CMP protection), not by HTTP
    ("post", "/.well-known/cmp"),
    ("post", "/.well-known/cmp/p/{label}"),
}
PUBLIC_TEMPLATES = {  # public too, tested in test_ocsp.py (their paths need a value)
    ("post", "/ocsp"),
    ("get", "/ocsp/{encoded}"),
    ("get", "/crl/{name}.crl"),
    ("get", "/ca/{name}.crt"),
}
PROBLEM_JSON = "application/problem+json"
URL = re.compile(r"""(?:https?:)?//[^\s"'<>)]+""")


class References(HTMLParser):
    """Every href and src in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found += [value for name, value in attrs if name in ("href", "src") and value]


def references(html: str) -> list[str]:
    parser = References()
    parser.feed(html)
    return parser.found


def test_pages_reference_only_keyfab_itself(server: Server) -> None:
    with server.client() as client:
        for page in PAGES:
            answer = client.get(page)
            assert answer.status_code == 200, page
            assert answer.headers["content-type"].startswith("text/html")
            assert URL.findall(answer.text) == [], page  # no CDN, no other host
            for link in references(answer.text):
                assert link.startswith("/"), (page, link)
                assert client.get(link).status_code == 200, (page, link)


def test_landing_page_links_the_public_parts(server: Server) -> None:
    with server.client() as client:
        links = references(client.get("/").text)
    for path in ("/docs", "/openapi.json", "/api/v1/ca/chain", "/.well-known/est/cacerts"):
        assert path in links
    assert any(link.startswith("/api/v1/ca/crl") for link in links)
    assert "/api/v1/health" in links


def test_reference_lists_every_operation(server: Server) -> None:
    with server.client() as client:
        spec = client.get("/openapi.json").json()
        html = client.get("/docs").text
        assert client.get("/redoc").status_code == 404  # its scripts would come from a CDN
    for path in spec["paths"]:
        assert path in html


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op) for path, item in spec["paths"].items() for method, op in item.items()
    ]


def public_templates_exist(spec: dict[str, Any]) -> bool:
    declared = {(method, path) for method, path, _ in operations(spec)}
    return declared >= PUBLIC_TEMPLATES


def test_openapi_declares_problem_responses(server: Server) -> None:
    with server.client() as client:
        spec = client.get("/openapi.json").json()
        for method, path in PUBLIC:  # the public set is truly public
            assert client.request(method, path).status_code == 200, path
    public = PUBLIC | PUBLIC_TEMPLATES
    assert public_templates_exist(spec)
    protected = [(m, p, op) for m, p, op in operations(spec) if (m, p) not in public | PROTOCOL]
    assert len(protected) >= 8
    for method, path, op in protected:
        for status in ("401", "403", "413"):
            content = op["responses"].get(status, {}).get("content", {})
            assert PROBLEM_JSON in content, (method, path, status)
            assert content[PROBLEM_JSON]["schema"]["required"][0] == "type"
    for method, path, op in operations(spec):  # every declared error is a problem document
        for status, answer in op["responses"].items():
            if status.startswith(("4", "5")):
                assert list(answer.get("content", {})) == [PROBLEM_JSON], (method, path, status)


def test_protected_operations_answer_problems_anonymously(server: Server) -> None:
    with httpx.Client(base_url=server.url, verify=server.context()) as client:
        answer = client.get("/api/v1/devices")
    assert answer.status_code == 401
    assert answer.headers["content-type"] == PROBLEM_JSON
