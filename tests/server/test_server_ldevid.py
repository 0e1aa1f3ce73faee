"""Operational certificates (IEEE 802.1AR LDevID) in the field: a device proves its
IDevID over mutual TLS, gets an LDevID for a key of its own, renews it inside the
product's window with a new key, and its history and the expiring list say so.
The chain is judged by the real ``openssl verify``.
"""

from __future__ import annotations

import datetime
import itertools
import json
import subprocess
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.conftest import Keyfab
from tests.server.conftest import RECIPE, RENEWABLE, Server, batch_device
from tests.server.est_client import new_csr, unwrap, write_identity

EST = "/.well-known/est"
PKCS10 = {"Content-Type": "application/pkcs10"}
STRICT = RECIPE + "\n[ldevid]\nvalidity_days = 60\nrenewal_days = 10\n"


class FieldDevice:
    """A provisioned device in the field: its IDevID files, then its LDevIDs."""

    def __init__(self, server: Server, admin: httpx.Client, folder: Path, serial: str):
        self.server, self.folder, self.serial = server, folder, serial
        info = admin.get(f"/api/v1/devices/{serial}").json()
        (idevid,) = [c for c in info["certificates"] if c["profile"] == "idevid"]
        pem = admin.get(f"/api/v1/certificates/{idevid['serial_number']}/pem").content
        self.idevid = folder / "idevid.pem"
        self.idevid.write_bytes(pem)
        batch = info["batch"]
        self.idevid_key = server.home / "devices" / batch / "000000" / "idevid.pem"

    def client(self, identity: tuple[Path, Path]) -> httpx.Client:
        context = self.server.context()
        context.load_cert_chain(*identity)
        return httpx.Client(base_url=self.server.url, verify=context, timeout=30.0)

    def post(
        self, path: str, identity: tuple[Path, Path], key: ec.EllipticCurvePrivateKey | None = None
    ) -> tuple[httpx.Response, ec.EllipticCurvePrivateKey]:
        key, csr = new_csr(self.serial, key)
        with self.client(identity) as client:
            return client.post(f"{EST}/{path}", content=csr, headers=PKCS10), key

    def keep(self, answer: httpx.Response, key: ec.EllipticCurvePrivateKey, name: str) -> Path:
        assert answer.status_code == 200, answer.text
        (certificate,) = unwrap(answer.content)
        cert_path, _ = write_identity(self.folder, name, key, certificate)
        return cert_path

    def verify(self, certificate: Path) -> None:
        out = subprocess.run(
            ["openssl", "verify", "-CAfile", str(self.server.root), "-untrusted",
             str(self.server.trust), "-purpose", "sslclient", str(certificate)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip().endswith(": OK")


_BATCHES = itertools.count(1)


@pytest.fixture
def field_device(server: Server, admin: httpx.Client, tmp_path: Path) -> FieldDevice:
    """A device of its own one-device batch, whose recipe lets it renew at once."""
    name = f"ld-{next(_BATCHES)}"
    return FieldDevice(server, admin, tmp_path, batch_device(server, admin, name, RENEWABLE))


def identity(device: FieldDevice) -> tuple[Path, Path]:
    return device.idevid, device.idevid_key


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_idevid_enrols_an_ldevid_then_renews_with_a_new_key(
    field_device: FieldDevice, admin: httpx.Client, server: Server
) -> None:
    device = field_device
    answer, key = device.post("simpleenroll", identity(device))
    first = device.keep(answer, key, "ldevid-1")
    device.verify(first)
    certificate = load(first)
    assert certificate.not_valid_after_utc - certificate.not_valid_before_utc == datetime.timedelta(
        days=30
    )
    usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]

    ldevid = (first, device.folder / "ldevid-1.key")
    answer, _ = device.post("simplereenroll", ldevid, key)  # the same key again
    assert answer.status_code == 400
    assert answer.json()["type"] == "urn:keyfab:problem:key-reused"

    answer, new_key = device.post("simplereenroll", ldevid)
    second = device.keep(answer, new_key, "ldevid-2")
    device.verify(second)
    assert load(second).subject == certificate.subject

    history = admin.get(f"/api/v1/devices/{device.serial}").json()["certificates"]
    assert [(c["profile"], c["status"]) for c in history] == [
        ("idevid", "good"),
        ("ldevid", "good"),  # the renewed one stays good until it expires or is revoked
        ("ldevid", "good"),
    ]
    code, out, err = Keyfab(server.home)("devices", "show", device.serial, "--json")
    assert code == 0, err
    assert [c["status"] for c in json.loads(out)["certificates"]] == ["good"] * 3

    renewed, newest = (format(load(p).serial_number, "x") for p in (first, second))
    expiring = admin.get("/api/v1/certificates/expiring", params={"within": "31d"}).json()
    listed = {c["serial_number"] for c in expiring}
    assert newest in listed
    assert renewed not in listed  # the device already renewed it
    everything = admin.get(
        "/api/v1/certificates/expiring", params={"within": "31d", "include_renewed": "true"}
    ).json()
    assert {renewed, newest} <= {c["serial_number"] for c in everything}
    assert newest not in {
        c["serial_number"]
        for c in admin.get("/api/v1/certificates/expiring", params={"within": "29d"}).json()
    }


def test_ldevid_never_for_the_idevid_key(field_device: FieldDevice) -> None:
    device = field_device
    idevid_key = serialization.load_pem_private_key(device.idevid_key.read_bytes(), None)
    assert isinstance(idevid_key, ec.EllipticCurvePrivateKey)
    answer, _ = device.post("simpleenroll", identity(device), idevid_key)
    assert answer.status_code == 400
    assert answer.json()["type"] == "urn:keyfab:problem:birth-key"
    assert "IDevID key" in answer.json()["detail"]


def test_idevid_enrols_only_itself_and_does_not_renew(field_device: FieldDevice) -> None:
    device = field_device
    other = FieldDevice.__new__(FieldDevice)
    other.__dict__.update(device.__dict__, serial="SOMEONE-ELSE")
    answer, _ = other.post("simpleenroll", identity(device))
    assert answer.status_code == 403
    answer, _ = device.post("simplereenroll", identity(device))
    assert answer.status_code == 403
    assert answer.json()["type"] == "urn:keyfab:problem:not-renewable"


def test_renewal_before_the_window_is_refused(
    server: Server, admin: httpx.Client, tmp_path: Path
) -> None:
    device = FieldDevice(server, admin, tmp_path, batch_device(server, admin, "ldstrict", STRICT))
    answer, key = device.post("simpleenroll", identity(device))
    first = device.keep(answer, key, "ldevid")
    assert load(first).not_valid_after_utc - load(first).not_valid_before_utc == datetime.timedelta(
        days=60
    )
    answer, _ = device.post("simplereenroll", (first, tmp_path / "ldevid.key"))
    assert answer.status_code == 403
    problem = answer.json()
    assert problem["type"] == "urn:keyfab:problem:renewal-not-due"
    assert "10 days before" in problem["detail"]
    history = admin.get(f"/api/v1/devices/{device.serial}").json()["certificates"]
    assert [c["profile"] for c in history] == ["idevid", "ldevid"]  # nothing more was issued


def test_operational_certificate_cannot_bootstrap_again(field_device: FieldDevice) -> None:
    device = field_device
    answer, key = device.post("simpleenroll", identity(device))
    first = device.keep(answer, key, "ldevid")
    answer, _ = device.post("simpleenroll", (first, device.folder / "ldevid.key"))
    assert answer.status_code == 403
    assert "simplereenroll" in answer.json()["detail"]


def test_revoked_certificate_shows_in_the_history(
    field_device: FieldDevice, admin: httpx.Client, server: Server
) -> None:
    device = field_device
    answer, key = device.post("simpleenroll", identity(device))
    ldevid = format(load(device.keep(answer, key, "ldevid")).serial_number, "x")
    assert admin.post(f"/api/v1/certificates/{ldevid}/revoke").status_code == 200
    history = admin.get(f"/api/v1/devices/{device.serial}").json()["certificates"]
    assert [(c["profile"], c["status"]) for c in history] == [
        ("idevid", "good"),
        ("ldevid", "revoked"),
    ]
    code, out, _ = Keyfab(server.home)("certificates", "expiring", "--within", "400d", "--json")
    assert code == 0
    assert ldevid not in {c["serial_number"] for c in json.loads(out)}


def test_expiring_cli_table_and_bad_window(field_device: FieldDevice, server: Server) -> None:
    device = field_device
    answer, key = device.post("simpleenroll", identity(device))
    ldevid = format(load(device.keep(answer, key, "ldevid")).serial_number, "x")
    cli = Keyfab(server.home)
    code, out, err = cli("certificates", "expiring", "--within", "31d", "--json")
    assert code == 0, err
    (mine,) = [c for c in json.loads(out) if c["serial_number"] == ldevid]
    assert mine["device"] == device.serial
    assert mine["profile"] == "ldevid"
    code, out, err = cli("certificates", "expiring", "--within", "soon")
    assert code == 1
    assert err.strip().splitlines() == [
        "error: --within 'soon': give a number and s, m, h or d (e.g. 30d)"
    ]


def test_expiring_api_refuses_a_bad_window(admin: httpx.Client) -> None:
    answer = admin.get("/api/v1/certificates/expiring", params={"within": "0d"})
    assert answer.status_code == 422
