"""The REST API against a real ``keyfab serve``: devices, certificates, batches, CA, audit."""

from __future__ import annotations

import sqlite3
import subprocess

import httpx
import pytest
from cryptography import x509

from keyfab.authority import Role
from keyfab.provision import create_batch
from keyfab.workspace import Workspace
from tests.server.conftest import RECIPE, Server, wait_for_batch


def test_health_and_openapi_need_no_token(server: Server) -> None:
    with server.client() as client:
        assert client.get("/api/v1/health").json() == {"status": "ok", "database": "ok"}
        spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    for path in ("/api/v1/devices", "/api/v1/batches", "/.well-known/est/simpleenroll"):
        assert any(p.startswith(path) for p in spec["paths"])


def test_server_certificate_comes_from_keyfab_pki(server: Server) -> None:
    """curl trusting only the keyfab root accepts the service; with no anchor it refuses."""
    ok = subprocess.run(
        ["curl", "-sS", "--cacert", str(server.root), f"{server.url}/api/v1/health"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    refused = subprocess.run(
        ["curl", "-sS", f"{server.url}/api/v1/health"], capture_output=True, text=True, check=False
    )
    assert refused.returncode == 60  # peer certificate cannot be authenticated


def test_batch_devices_list_filter_paginate(admin: httpx.Client, batch: str) -> None:
    page = admin.get("/api/v1/devices", params={"batch": batch, "limit": 2}).json()
    assert page["limit"] == 2
    assert [d["slot"] for d in page["items"]] == [0, 1]
    slots = [d["slot"] for d in page["items"]]
    while page["next_cursor"] is not None:
        page = admin.get(
            "/api/v1/devices", params={"batch": batch, "limit": 2, "cursor": page["next_cursor"]}
        ).json()
        slots += [d["slot"] for d in page["items"]]
    assert slots == [0, 1, 2, 3, 4]
    after = admin.get("/api/v1/devices", params={"batch": batch, "limit": 2}).json()
    serial = after["items"][1]["serial"]
    rest = admin.get("/api/v1/devices", params={"batch": batch, "after": serial}).json()
    assert [d["slot"] for d in rest["items"]] == [2, 3, 4]
    assert all(d["state"] == "provisioned" and d["batch"] == batch for d in rest["items"])
    none = admin.get("/api/v1/devices", params={"batch": batch, "state": "failed"}).json()
    assert none == {"items": [], "next_cursor": None, "limit": 100}


@pytest.mark.parametrize(
    ("params", "status", "slug"),
    [
        ({"offset": "1"}, 400, "offset-removed"),
        ({"cursor": "AQAAAAAAAAAqAAAAAB"}, 400, "invalid-cursor"),
        ({"cursor": "x" * 65}, 422, "invalid-request"),
    ],
)
def test_device_listing_refusals_are_problems(
    admin: httpx.Client, params: dict[str, str], status: int, slug: str
) -> None:
    answer = admin.get("/api/v1/devices", params=params)
    assert answer.status_code == status
    assert answer.json()["type"].endswith(slug)


def test_a_cursor_under_other_filters_is_refused(admin: httpx.Client, batch: str) -> None:
    page = admin.get("/api/v1/devices", params={"batch": batch, "limit": 1}).json()
    other = admin.get("/api/v1/devices", params={"state": "failed", "cursor": page["next_cursor"]})
    assert other.status_code == 400
    assert other.json()["type"] == "urn:keyfab:problem:cursor-mismatch"


def _serial(admin: httpx.Client, batch: str, slot: int) -> str:
    page = admin.get("/api/v1/devices", params={"batch": batch, "limit": slot + 1})
    serial: str = page.json()["items"][slot]["serial"]
    return serial


def test_device_and_certificate_show_and_download(admin: httpx.Client, batch: str) -> None:
    serial = _serial(admin, batch, 1)
    device = admin.get(f"/api/v1/devices/{serial}").json()
    assert device["serial"] == serial
    assert device["rot"] == "soft"
    (cert,) = device["certificates"]
    assert cert["profile"] == "idevid"
    number = cert["serial_number"]
    info = admin.get(f"/api/v1/certificates/{number}").json()
    assert info["device"] == serial
    assert len(info["sha256"]) == 64
    pem = admin.get(f"/api/v1/certificates/{number}/pem")
    der = admin.get(f"/api/v1/certificates/{number}/der")
    assert pem.headers["content-type"] == "application/pem-certificate-chain"
    assert der.headers["content-type"] == "application/pkix-cert"
    assert x509.load_pem_x509_certificate(pem.content) == x509.load_der_x509_certificate(
        der.content
    )
    text = subprocess.run(
        ["openssl", "x509", "-inform", "DER", "-noout", "-serial", "-subject"],
        input=der.content,
        capture_output=True,
        check=True,
    ).stdout.decode()
    assert f"serial={number.upper().zfill(len(number) + len(number) % 2)}" in text
    assert f"serialNumber = {serial}" in text


def test_revoke_then_crl_lists_it(admin: httpx.Client, server: Server, batch: str) -> None:
    serial = _serial(admin, batch, 2)
    number = admin.get(f"/api/v1/devices/{serial}").json()["certificates"][0]["serial_number"]
    answer = admin.post(f"/api/v1/devices/{serial}/revoke", json={"reason": "keyCompromise"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["revoked_certificates"] == [number]
    assert answer.json()["changed"] is True
    assert answer.json()["reason"] == "keyCompromise"
    again = admin.post(f"/api/v1/devices/{serial}/revoke", json={})
    assert again.status_code == 200, again.text  # revoking again is a reported no-op
    assert again.json()["changed"] is False
    assert again.json()["revoked_certificates"] == []
    with server.client() as anonymous:
        crl = anonymous.get("/api/v1/ca/crl").content
        chain = anonymous.get("/api/v1/ca/chain").text
    listed = subprocess.run(
        ["openssl", "crl", "-inform", "DER", "-noout", "-text"],
        input=crl,
        capture_output=True,
        check=True,
    ).stdout.decode()
    assert number.upper() in listed.replace(":", "")
    assert "Key Compromise" in listed  # the reason is in the CRL entry
    assert chain.count("BEGIN CERTIFICATE") == 2
    assert admin.get(f"/api/v1/devices/{serial}").json()["state"] == "revoked"


def test_audit_status_verifies(server: Server, tokens: dict[Role, str], batch: str) -> None:
    with server.client(tokens[Role.AUDITOR]) as auditor:
        status = auditor.get("/api/v1/audit").json()
    assert status["ok"] is True
    assert status["events"] > 5
    assert status["broken_at"] is None


def test_batch_resume_and_conflicts(admin: httpx.Client) -> None:
    created = admin.post("/api/v1/batches", json={"name": "b2", "recipe": "gateway", "count": 2})
    assert created.status_code == 201
    assert created.json()["count"] == 2
    wait_for_batch(admin, "b2")
    finished = admin.post("/api/v1/batches/b2/resume")
    assert finished.status_code == 409
    assert finished.json()["type"] == "urn:keyfab:problem:batch-finished"
    duplicate = admin.post("/api/v1/batches", json={"name": "b2", "recipe": "gateway", "count": 1})
    assert duplicate.status_code == 409
    assert admin.get("/api/v1/batches/nope").status_code == 404


def test_resume_finishes_a_batch_created_elsewhere(admin: httpx.Client, server: Server) -> None:
    """A batch recorded by a station that stopped before provisioning is finished by the API."""
    create_batch(Workspace(server.home), RECIPE, server.home, "b3", 3)
    pending = admin.get("/api/v1/batches/b3").json()
    assert pending["devices"] == {"pending": 3}
    assert pending["state"] == "running"
    accepted = admin.post("/api/v1/batches/b3/resume")
    assert accepted.status_code == 202, accepted.text
    assert wait_for_batch(admin, "b3")["devices"] == {"provisioned": 3}


def test_batches_list_and_cancel(admin: httpx.Client, server: Server, batch: str) -> None:
    """GET /batches lists every batch; cancel releases pending devices and refuses resume."""
    create_batch(Workspace(server.home), RECIPE, server.home, "b4", 2)
    listed = {b["name"]: b for b in admin.get("/api/v1/batches").json()["items"]}
    assert sum(listed[batch]["devices"].values()) == 5
    assert listed[batch]["devices_per_second"] > 0
    assert listed["b4"]["devices"] == {"pending": 2}
    assert listed["b4"]["devices_per_second"] is None
    cancelled = admin.post("/api/v1/batches/b4/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json() == {
        "name": "b4",
        "changed": True,
        "released": 2,
        "issued": 0,
        "stopped": False,
    }
    assert admin.post("/api/v1/batches/b4/cancel").json()["changed"] is False
    refused = admin.post("/api/v1/batches/b4/resume")
    assert refused.status_code == 409
    assert refused.json()["type"] == "urn:keyfab:problem:batch-cancelled"
    assert admin.get("/api/v1/batches/b4").json()["devices"] == {"cancelled": 2}
    assert admin.post("/api/v1/batches/nope/cancel").status_code == 404


def test_failed_device_says_why(admin: httpx.Client, server: Server) -> None:
    """The failure reason is in the device listing and in the device itself."""
    create_batch(Workspace(server.home), RECIPE, server.home, "b5", 1)
    with sqlite3.connect(server.home / "keyfab.db") as db:  # as a failing station records it
        db.execute("UPDATE devices SET state = 'failed', failure = 'no answer' WHERE slot = 0")
    page = admin.get("/api/v1/devices", params={"batch": "b5"}).json()
    assert page["items"][0]["failure"] == "no answer"
    serial = page["items"][0]["serial"]
    assert admin.get(f"/api/v1/devices/{serial}").json()["failure"] == "no answer"
