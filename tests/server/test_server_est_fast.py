"""EST token enrolments answered before the framework (``server.est_fast``) answer
exactly as the route does, are access-logged, and refuse with the route's problem documents."""

from __future__ import annotations

from collections.abc import Iterator

from keyfab.authority import Role
from tests.server.conftest import Server
from tests.server.est_client import new_csr, unwrap

PATH = "/.well-known/est/simpleenroll"
PKCS10 = {"Content-Type": "application/pkcs10"}


def _chunks(body: bytes) -> Iterator[bytes]:
    """A body sent chunked (no Content-Length): the fast path leaves it to the route."""
    yield body[:100]
    yield body[100:]


def test_fast_and_routed_answers_match(server: Server, tokens: dict[Role, str]) -> None:
    with server.client(tokens[Role.OPERATOR]) as client:
        fast = client.post(PATH, content=new_csr("FAST-1")[1], headers=PKCS10)
        routed = client.post(PATH, content=_chunks(new_csr("FAST-2")[1]), headers=PKCS10)
    assert fast.status_code == routed.status_code == 200
    for name in ("content-type", "content-transfer-encoding"):
        assert fast.headers[name] == routed.headers[name]
    assert int(fast.headers["content-length"]) == len(fast.content)
    assert unwrap(fast.content)[0].subject.rfc4514_string().startswith("2.5.4.5=FAST-1,")
    assert unwrap(routed.content)[0].subject.rfc4514_string().startswith("2.5.4.5=FAST-2,")
    lines = [line for line in server.output().splitlines() if f"POST {PATH}" in line]
    assert any(" - t-operator " in line and '" 200 ' in line for line in lines)


def test_refusals_are_the_routes_problems(server: Server, tokens: dict[Role, str]) -> None:
    with server.client("kf_0000000000000000_" + "x" * 43) as client:
        unknown = client.post(PATH, content=new_csr("FAST-3")[1], headers=PKCS10)
    with server.client(tokens[Role.AUDITOR]) as client:
        auditor = client.post(PATH, content=new_csr("FAST-4")[1], headers=PKCS10)
        garbage = client.post(PATH, content=b"not base64 !", headers=PKCS10)
    assert unknown.status_code == 401
    assert unknown.headers["www-authenticate"]
    assert auditor.status_code == 403
    assert garbage.status_code == 400  # the body is judged before the auditor's role
    for answer in (unknown, auditor, garbage):
        assert answer.headers["content-type"] == "application/problem+json"
