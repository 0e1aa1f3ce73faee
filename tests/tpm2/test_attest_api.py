"""Attestation over a real ``keyfab serve`` and the real ``keyfab attest`` commands, with swtpm.

The device speaks for itself: mutual TLS with its LDevID (a soft key, as a
device that enrolled over EST holds), or a device token bound to its serial.
Another device, an auditor, oversized and garbage evidence are each refused
with a problem document; the CLI's challenge, device-side quote, verify and
history make a round the service accepts and ``tpm2_checkquote`` confirms.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyfab.authority import Principal, Role, enrolment
from keyfab.authority import tokens as store
from keyfab.registry import queries
from tests.conftest import Keyfab
from tests.server.conftest import Server, free_port
from tests.server.est_client import write_identity

from .fleet import Device, Fleet, checkquote

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def served(fleet: Fleet) -> Iterator[Server]:
    running = Server(fleet.home, free_port(), env={"KEYFAB_DATABASE_URL": ""}).start()
    yield running
    running.stop()


def _token(fleet: Fleet, name: str, role: Role, serial: str | None = None) -> str:
    return store.create(fleet.authority, name, role, device_serial=serial).secret


@pytest.fixture(scope="module")
def mtls_a(
    served: Server, fleet: Fleet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    """Device A over mutual TLS with its LDevID certificate (its key in software)."""
    key = ec.generate_private_key(ec.SECP256R1())
    operator = Principal("op", Role.OPERATOR)
    certificate = enrolment.enrol_key(fleet.authority, operator, fleet.a.serial, key.public_key())
    identity = write_identity(tmp_path_factory.mktemp("ldevid"), "ldevid", key, certificate)
    context = served.context()
    context.load_cert_chain(*identity)
    with httpx.Client(base_url=served.url, verify=context, timeout=30.0) as client:
        yield client


@pytest.fixture(scope="module")
def token_a(served: Server, fleet: Fleet) -> Iterator[httpx.Client]:
    """Device A with a device token bound to its serial."""
    with served.client(_token(fleet, "dev-a", Role.DEVICE, fleet.a.serial)) as client:
        yield client


def _path(device: Device, tail: str = "") -> str:
    return f"/api/v1/devices/{device.serial}/attestation{tail}"


def _round(client: httpx.Client, device: Device) -> httpx.Response:
    """Challenge, quote the PCRs it names over its nonce, post the evidence."""
    asked = client.post(_path(device, "/challenge"))
    assert asked.status_code == 200, asked.text
    challenge = asked.json()
    assert challenge["format"] == "keyfab-attestation-v1"
    evidence = device.evidence(base64.b64decode(challenge["nonce"]), challenge["pcrs"])
    return client.post(_path(device), content=evidence.to_json(), headers=_JSON)


_JSON = {"Content-Type": "application/json"}


def _problem(answer: httpx.Response, status: int, slug: str | None = None) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM
    problem: dict[str, Any] = answer.json()
    if slug is not None:
        assert problem["type"] == f"urn:keyfab:problem:{slug}"
    return problem


def test_device_attests_itself_over_mutual_tls(mtls_a: httpx.Client, fleet: Fleet) -> None:
    answer = _round(mtls_a, fleet.a)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert (result["serial"], result["verdict"], result["reasons"]) == (
        fleet.a.serial,
        "trusted",
        [],
    )
    assert sorted(map(int, result["pcrs"]["sha256"])) == list(range(10))
    assert queries.device(fleet.authority.registry, fleet.a.serial).device.attestation == "trusted"


def test_device_token_attests_itself(token_a: httpx.Client, fleet: Fleet) -> None:
    answer = _round(token_a, fleet.a)
    assert answer.status_code == 200, answer.text
    assert answer.json()["verdict"] == "trusted"


def test_another_device_is_refused(
    served: Server, fleet: Fleet, mtls_a: httpx.Client, token_a: httpx.Client
) -> None:
    for client in (mtls_a, token_a):  # A asks for B, by certificate and by token
        _problem(client.post(_path(fleet.b, "/challenge")), 403)
    # B's evidence for its own challenge, posted by A for B
    with served.client(_token(fleet, "dev-b", Role.DEVICE, fleet.b.serial)) as token_b:
        nonce = base64.b64decode(token_b.post(_path(fleet.b, "/challenge")).json()["nonce"])
    evidence = fleet.b.evidence(nonce)
    refused = mtls_a.post(_path(fleet.b), content=evidence.to_json(), headers=_JSON)
    assert "only itself" in _problem(refused, 403)["detail"]


def test_auditor_reads_history_but_cannot_attest(
    served: Server, fleet: Fleet, mtls_a: httpx.Client
) -> None:
    assert _round(mtls_a, fleet.a).json()["verdict"] == "trusted"
    with served.client(_token(fleet, "audit", Role.AUDITOR)) as auditor:
        history = auditor.get(_path(fleet.a), params={"limit": 2})
        assert history.status_code == 200, history.text
        shown = history.json()
        assert (shown["serial"], shown["state"]) == (fleet.a.serial, "trusted")
        assert [r["verdict"] for r in shown["results"]] == ["trusted", "trusted"]
        _problem(auditor.post(_path(fleet.a, "/challenge")), 403)
    with served.client() as anonymous:
        _problem(anonymous.get(_path(fleet.a)), 401)


def test_oversized_evidence_is_413(mtls_a: httpx.Client, fleet: Fleet) -> None:
    body = json.dumps({"format": "keyfab-attestation-v1", "eventlog": "A" * (64 << 10)})
    _problem(mtls_a.post(_path(fleet.a), content=body, headers=_JSON), 413, "payload-too-large")


GARBAGE: list[object] = [
    {},
    [],
    "evidence",
    {"format": "keyfab-attestation-v1"},
    {"format": "keyfab-attestation-v2", "nonce": "AA=="},
    {"format": "keyfab-attestation-v1", "nonce": "!!", "quote": "", "signature": "",
     "pcrs": {"sha256": {}}, "eventlog": ""},
    {"format": "keyfab-attestation-v1", "nonce": "AA==", "quote": "AA==", "signature": "AA==",
     "pcrs": {"sha256": {"99": "00" * 32}}, "eventlog": ""},
    {"format": "keyfab-attestation-v1", "nonce": "AA==", "quote": "AA==", "signature": "AA==",
     "pcrs": {"md5": {}}, "eventlog": ""},
    {"format": "keyfab-attestation-v1", "extra": 1},
]  # fmt: skip


@pytest.mark.parametrize("document", GARBAGE)
def test_garbage_evidence_is_a_400_problem(
    mtls_a: httpx.Client, fleet: Fleet, document: object
) -> None:
    answer = mtls_a.post(_path(fleet.a), content=json.dumps(document), headers=_JSON)
    assert answer.status_code in (400, 422), answer.text  # 422: the body is not an object
    assert answer.headers["content-type"] == PROBLEM


def test_evidence_that_is_no_json_is_a_problem(mtls_a: httpx.Client, fleet: Fleet) -> None:
    _problem(mtls_a.post(_path(fleet.a), content=b"\x00\xff{", headers=_JSON), 422)


_VALUES = st.one_of(
    st.none(), st.integers(), st.text(max_size=40), st.lists(st.integers(), max_size=3)
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    field=st.sampled_from(["nonce", "quote", "signature", "pcrs", "eventlog", "iak_certificate"]),
    value=st.one_of(_VALUES, st.dictionaries(st.text(max_size=4), _VALUES, max_size=3)),
)
def test_mutated_evidence_never_fails_the_server(
    mtls_a: httpx.Client, fleet: Fleet, field: str, value: object
) -> None:
    document = json.loads(_GOOD.setdefault("doc", fleet.a.evidence(bytes(32)).to_json()))
    document[field] = value
    answer = mtls_a.post(_path(fleet.a), content=json.dumps(document), headers=_JSON)
    assert answer.status_code in (200, 400), answer.text
    if answer.status_code == 400:
        assert answer.headers["content-type"] == PROBLEM


_GOOD: dict[str, bytes] = {}


def test_cli_round_with_the_device_side_quote(fleet: Fleet, tmp_path: Path) -> None:
    keyfab = Keyfab(fleet.home)
    code, out, err = keyfab("attest", "challenge", fleet.b.serial, "--json")
    assert code == 0, err
    challenge = json.loads(out)
    (tmp_path / "boot.log").write_bytes(fleet.b.log)
    code, out, err = keyfab(
        "attest", "quote", "--tcti", fleet.b.tpm.tcti, "--nonce", challenge["nonce"],
        "--pcrs", ",".join(map(str, challenge["pcrs"])), "--log", str(tmp_path / "boot.log"),
        "--out", str(tmp_path / "evidence.json"),
    )  # fmt: skip
    assert code == 0, err
    from keyfab.attest.evidence import parse_evidence

    evidence = parse_evidence((tmp_path / "evidence.json").read_bytes())
    assert evidence.nonce.hex() == challenge["nonce"]
    iak = next(
        c.der
        for c in queries.device(fleet.authority.registry, fleet.b.serial).certificates
        if c.profile == "iak"
    )
    checked = checkquote(tmp_path, iak, evidence)  # the independent judge agrees
    assert checked.returncode == 0, checked.stderr

    code, out, err = keyfab("attest", "verify", fleet.b.serial, str(tmp_path / "evidence.json"))
    assert code == 0, err
    assert f"attestation of {fleet.b.serial}: trusted" in out
    # the same evidence again: the nonce is spent, one line, exit 1
    code, out, err = keyfab(
        "attest", "verify", fleet.b.serial, str(tmp_path / "evidence.json"), "--json"
    )
    assert (code, err.strip()) == (1, "error: the attestation nonce was already used")

    code, out, err = keyfab("attest", "history", fleet.b.serial, "--json")
    assert code == 0, err
    history = json.loads(out)
    assert history["state"] == "trusted"
    assert history["results"][0]["verdict"] == "trusted"
    code, out, _ = keyfab("attest", "history", fleet.b.serial)
    assert code == 0
    assert f"{fleet.b.serial}: trusted" in out


def test_cli_verify_failure_is_one_line_and_exit_1(fleet: Fleet, tmp_path: Path) -> None:
    keyfab = Keyfab(fleet.home)
    nonce = bytes.fromhex(
        json.loads(keyfab("attest", "challenge", fleet.b.serial, "--json")[1])["nonce"]
    )
    evidence = fleet.b.evidence(nonce)
    document = json.loads(evidence.to_json())
    signature = bytearray(base64.b64decode(document["signature"]))
    signature[10] ^= 1
    document["signature"] = base64.b64encode(signature).decode()
    (tmp_path / "bad.json").write_text(json.dumps(document))
    code, _out, err = keyfab("attest", "verify", fleet.b.serial, str(tmp_path / "bad.json"))
    assert code == 1
    assert err.startswith(f"{fleet.b.serial} failed attestation: ")
    assert "signature does not verify" in err
    (tmp_path / "junk.json").write_bytes(b"\x00junk")
    code, _, err = keyfab("attest", "verify", fleet.b.serial, str(tmp_path / "junk.json"))
    assert (code, err.strip()) == (1, "error: evidence is not JSON")


def test_cli_quote_bad_input_is_one_line(fleet: Fleet, tmp_path: Path) -> None:
    keyfab = Keyfab(fleet.home)
    (tmp_path / "log").write_bytes(fleet.a.log)
    args = ("attest", "quote", "--tcti", fleet.a.tpm.tcti, "--log", str(tmp_path / "log"))
    code, _, err = keyfab(*args, "--nonce", "zz")
    assert (code, err.strip()) == (1, "error: --nonce must be hex")
    code, _, err = keyfab(*args, "--nonce", "00", "--pcrs", "0-40")
    assert (code, err.strip()) == (1, "error: --pcrs: PCRs are 0 to 23")
