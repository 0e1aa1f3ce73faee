"""Fuzz every operation from the service's own OpenAPI: never a 500, errors as problems.

schemathesis generates valid and invalid inputs for each path, query and body
schema (bounded by ``max_examples`` so CI stays quick) and calls the app
in-process with an admin token, so the requests reach the handlers.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from pyasn1.codec.der import decoder as der_decoder
from pyasn1_modules import rfc4210
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from starlette.testclient import TestClient

from keyfab.authority import Role
from keyfab.rot.soft import SoftRotWarning
from keyfab.server import create_app
from keyfab.workspace import Workspace
from tests.server.conftest import make_tokens, make_workspace

_TOKEN: dict[str, str] = {}


@schemathesis.serializer("application/pkcs10")
def _pkcs10(ctx: object, value: object) -> bytes:
    """EST bodies are text (base64); generated values go out as their UTF-8 text."""
    return value if isinstance(value, bytes) else str(value).encode()


@schemathesis.serializer("application/pkixcmp")
def _pkixcmp(ctx: object, value: object) -> bytes:
    """CMP bodies are DER: generated values go out as bytes (garbage DER included)."""
    return value if isinstance(value, bytes) else str(value).encode()


@schemathesis.serializer("application/ocsp-request")
def _ocsp_request(ctx: object, value: object) -> bytes:
    """OCSP bodies are DER; generated values go out as their UTF-8 text (garbage DER)."""
    return value if isinstance(value, bytes) else str(value).encode()


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    home = tmp_path_factory.mktemp("fuzz") / "home"
    make_workspace(home)
    _TOKEN["admin"] = make_tokens(Workspace(home))[Role.ADMIN]
    app = create_app(Workspace(home))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SoftRotWarning)
        yield app


def _check(case: schemathesis.Case) -> None:
    response = case.call(headers={"Authorization": f"Bearer {_TOKEN['admin']}"})
    case.validate_response(response, checks=[not_a_server_error])
    if response.headers["content-type"] == ["application/pkixcmp"]:  # RFC 6712: a CMP error
        assert case.path.startswith("/.well-known/cmp")
        message, rest = der_decoder.decode(response.content, asn1Spec=rfc4210.PKIMessage())
        assert not rest
        assert message["body"].getName() == "error"
        return
    if response.status_code >= 400:
        assert response.headers["content-type"] == ["application/problem+json"]
        body = response.json()
        assert body["type"].startswith("urn:keyfab:problem:")
        assert body["status"] == response.status_code


def test_api_fuzz_never_500(fuzz_app: FastAPI) -> None:
    """Every operation in /openapi.json, a bounded number of generated cases each.

    (schemathesis's pytest plugin does not load under this pytest, so the
    operations' hypothesis strategies are driven directly.)
    """
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    for operation, mode in itertools.product(operations, GenerationMode):
        run = given(operation.as_strategy(mode))(_check)
        bounded = settings(
            max_examples=8,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )(run)
        try:
            bounded()
        except Unsatisfiable:  # nothing to make invalid: an operation without inputs
            assert mode is GenerationMode.NEGATIVE


def test_unknown_fields_and_wrong_types_are_422(fuzz_app: FastAPI) -> None:
    with TestClient(fuzz_app) as client:
        auth = {"Authorization": f"Bearer {_TOKEN['admin']}"}
        for body in (
            {"name": "x", "recipe": "gateway", "count": 1, "colour": "red"},
            {"name": "x", "recipe": "gateway", "count": "many"},
            {"name": "../x", "recipe": "gateway", "count": 1},
            {"name": "x", "recipe": "../../etc/passwd", "count": 1},
            {"name": "x", "recipe": "gateway", "count": 0},
        ):
            answer = client.post("/api/v1/batches", json=body, headers=auth)
            assert answer.status_code == 422, body
            assert answer.json()["type"] == "urn:keyfab:problem:invalid-request"
        answer = client.post("/api/v1/batches", content=b"{not json", headers=auth)
        assert answer.status_code == 422
        answer = client.get("/api/v1/devices?limit=0", headers=auth)
        assert answer.status_code == 422
        answer = client.delete("/api/v1/devices", headers=auth)
        assert answer.status_code == 405
        assert answer.json()["type"] == "urn:keyfab:problem:method-not-allowed"


def test_invalid_or_missing_recipe_writes_nothing(fuzz_app: FastAPI) -> None:
    """A recipe that does not parse, or is not there, is refused and leaves no batch."""
    home: Path = fuzz_app.state.service.workspace.home
    (home / "recipes" / "broken.toml").write_text("[product\nname=")
    cases = (("broken", 400, "invalid-recipe"), ("absent", 404, "recipe-not-found"))
    with TestClient(fuzz_app) as client:
        auth = {"Authorization": f"Bearer {_TOKEN['admin']}"}
        before = client.get("/api/v1/audit", headers=auth).json()["events"]
        for recipe, status, kind in cases:
            answer = client.post(
                "/api/v1/batches", json={"name": "bad", "recipe": recipe, "count": 1}, headers=auth
            )
            assert answer.status_code == status, answer.text
            assert answer.json()["type"] == f"urn:keyfab:problem:{kind}"
        assert client.get("/api/v1/batches/bad", headers=auth).status_code == 404
        assert client.get("/api/v1/audit", headers=auth).json()["events"] == before
