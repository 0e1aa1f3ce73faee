"""Issue 12: the API reads request bodies strictly (types, media type, duplicate keys)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
from httpx import Response
from starlette.testclient import TestClient

from keyfab.authority import Role
from keyfab.rot.soft import SoftRotWarning
from keyfab.server import create_app
from tests.server.conftest import make_tokens, make_workspace

BATCHES = "/api/v1/batches"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    home = tmp_path_factory.mktemp("api-parsing") / "home"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SoftRotWarning)
        space = make_workspace(home)
        token = make_tokens(space)[Role.ADMIN]
        with TestClient(create_app(space)) as client:
            client.headers["Authorization"] = f"Bearer {token}"
            yield client


def _absent(client: TestClient, name: str) -> None:
    assert client.get(f"{BATCHES}/{name}").status_code == 404


def _problem(response: Response, status: int, slug: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == f"urn:keyfab:problem:{slug}"


def test_count_as_string_is_refused(client: TestClient) -> None:
    response = client.post(BATCHES, json={"name": "str", "recipe": "gateway", "count": "5"})
    _problem(response, 422, "invalid-request")
    _absent(client, "str")


def test_count_as_boolean_is_refused(client: TestClient) -> None:
    response = client.post(BATCHES, json={"name": "bool", "recipe": "gateway", "count": True})
    _problem(response, 422, "invalid-request")
    _absent(client, "bool")


def test_body_without_content_type_is_refused(client: TestClient) -> None:
    body = b'{"name": "bare", "recipe": "gateway", "count": 1}'
    response = client.post(BATCHES, content=body, headers={"Content-Type": ""})
    _problem(response, 415, "unsupported-media-type")
    _absent(client, "bare")


def test_body_as_text_plain_is_refused(client: TestClient) -> None:
    body = b'{"name": "plain", "recipe": "gateway", "count": 1}'
    response = client.post(BATCHES, content=body, headers={"Content-Type": "text/plain"})
    _problem(response, 415, "unsupported-media-type")
    _absent(client, "plain")


def test_duplicate_keys_are_refused(client: TestClient) -> None:
    body = b'{"name": "dup", "recipe": "gateway", "count": 1, "count": 100000}'
    response = client.post(BATCHES, content=body, headers={"Content-Type": "application/json"})
    _problem(response, 400, "invalid-request")
    assert "count" in response.json()["detail"]
    _absent(client, "dup")


def test_batch_name_with_dotdot_is_refused(client: TestClient) -> None:
    response = client.post(BATCHES, json={"name": "a..b", "recipe": "gateway", "count": 1})
    _problem(response, 422, "invalid-request")


def test_body_limit_still_holds(client: TestClient) -> None:
    body = b'{"name": "big", "recipe": "gateway", "count": 1, "pad": "' + b"x" * 70_000 + b'"}'
    response = client.post(BATCHES, content=body, headers={"Content-Type": "application/json"})
    _problem(response, 413, "payload-too-large")


def test_a_correct_body_is_accepted(client: TestClient) -> None:
    body = b'{"name": "fine", "recipe": "gateway", "count": 1}'
    headers = {"Content-Type": "application/json; charset=utf-8"}
    response = client.post(BATCHES, content=body, headers=headers)
    assert response.status_code == 201, response.text


def test_malformed_json_is_422_whatever_its_label(client: TestClient) -> None:
    for content_type in ("application/json", "text/plain"):
        response = client.post(
            BATCHES, content=b"{not json", headers={"Content-Type": content_type}
        )
        _problem(response, 422, "invalid-request")
