"""verify_manifest against the real Microchip sample and a keyfab-made PKI."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from cryptography import x509
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from keyfab.manifest import (
    ManifestError,
    SignerSet,
    VerificationPolicy,
    load_certificates,
    parse_entry,
    verify_manifest,
)

from .conftest import SAMPLE, Pki, b64url

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def microchip_policy(folder: Path) -> VerificationPolicy:
    """Microchip's Root CA 002 is not among the fixtures, so the test pins the two
    signer CAs the devices' x5c names as trust anchors: the chain check is real
    (device signature, validity, CA constraints) but one level short of the root."""
    anchors: dict[bytes, x509.Certificate] = {}
    for raw in json.loads(SAMPLE.read_bytes()):
        der = parse_entry(raw, 0).element.keys[0].x5c[1]
        anchors[der] = x509.load_der_x509_certificate(der)
    return VerificationPolicy(SignerSet.from_path(folder), list(anchors.values()))


def reports(data: bytes, policy: VerificationPolicy) -> list[tuple[int, str | None, bool]]:
    return [(r.index, r.unique_id, r.ok) for r in verify_manifest(io.BytesIO(data), policy)]


def test_manifest_verify_real_sample_all_entries(microchip: Path) -> None:
    result = list(verify_manifest(SAMPLE.open("rb"), microchip_policy(microchip)))
    assert [r.describe() for r in result] == [
        "entry 0 (01230390b3d1450c01): verified",
        "entry 1 (0123d26e26e688c901): verified",
    ]
    assert result[0].verified is not None
    signer = result[0].verified.signer.certificate
    assert signer.subject.rfc4514_string().startswith("CN=Log Signer 002")


def _tampered(data: bytes, entry: int, member: str, position: int) -> bytes:
    raw = json.loads(data)
    text = raw[entry][member] if member != "header" else raw[entry]["header"]["uniqueId"]
    at = position % len(text)
    pool = ALPHABET if member != "header" else "0123456789abcdef"
    swapped = pool[(pool.index(text[at]) + 1) % len(pool)]
    changed = text[:at] + swapped + text[at + 1 :]
    if member == "header":
        raw[entry]["header"]["uniqueId"] = changed
    else:
        raw[entry][member] = changed
    return json.dumps(raw, indent=2).encode()


@pytest.mark.parametrize("member", ["payload", "protected", "signature", "header"])
def test_manifest_verify_real_sample_detects_any_changed_byte(microchip: Path, member: str) -> None:
    policy = microchip_policy(microchip)
    data = SAMPLE.read_bytes()
    size = len(json.loads(data)[0][member if member != "header" else "signature"])
    for entry in (0, 1):
        for position in range(0, size, max(1, size // 23)):
            result = reports(_tampered(data, entry, member, position), policy)
            assert [ok for _, _, ok in result] == [entry != 0, entry != 1], (member, position)


def test_manifest_verify_real_sample_wrong_signers(
    microchip: Path, tmp_path: Path, pki: Pki
) -> None:
    policy = VerificationPolicy(
        SignerSet.from_path(pki.signers_dir(tmp_path)), microchip_policy(microchip).roots
    )
    result = list(verify_manifest(SAMPLE.open("rb"), policy))
    assert all(not r.ok and "no trusted signer has x5t#S256" in str(r.error) for r in result)


def test_manifest_verify_real_sample_wrong_roots(microchip: Path, pki: Pki) -> None:
    policy = VerificationPolicy(SignerSet.from_path(microchip), [pki.root])
    result = list(verify_manifest(SAMPLE.open("rb"), policy))
    assert [r.error for r in result] == [
        "device certificate chain: candidates exhausted: no path to a root"
        " (with tolerated generalized-time-before-2050)"  # the error names the deviation
    ] * 2


def _policy(pki: Pki, tmp_path: Path) -> VerificationPolicy:
    return VerificationPolicy(
        SignerSet.from_path(pki.signers_dir(tmp_path)), load_certificates(pki.roots_file(tmp_path))
    )


def test_manifest_verify_keyfab_manifest(pki: Pki, tmp_path: Path) -> None:
    path = pki.write(tmp_path / "m.json", 5)
    result = list(verify_manifest(path.open("rb"), _policy(pki, tmp_path)))
    assert [r.ok for r in result] == [True] * 5
    assert result[0].verified is not None
    assert [c.subject for c in result[0].verified.chain] == [
        result[0].verified.chain[0].subject,
        pki.intermediate.subject,
        pki.root.subject,
    ]


def _with(pki: Pki, tmp_path: Path, extra: list[object]) -> bytes:
    good = json.loads(pki.write(tmp_path / "m.json", 2).read_bytes())
    return json.dumps([good[0], *extra, good[1]]).encode()


def _payload(pki: Pki, uid: str) -> dict[str, object]:
    from keyfab.manifest import element_json

    return element_json(pki.element(uid))


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: "not an object", "is not a JSON object"),
        (
            lambda p: {**p.raw_entry(p.header(), _payload(p, "0102")), "payload": 1},
            "payload must be a string",
        ),
        (
            lambda p: {**p.raw_entry(p.header(), _payload(p, "0102")), "signature": [1]},
            "signature must be a string",
        ),
        (
            lambda p: {**p.raw_entry(p.header(), _payload(p, "0102")), "extra": 1},
            "unknown member 'extra'",
        ),
        (
            lambda p: {"payload": "", "protected": "", "header": {}, "signature": ""},
            "protected header is not valid JSON",
        ),
        (
            lambda p: p.raw_entry(p.header(alg="HS256"), _payload(p, "0102")),
            "unsupported alg 'HS256'",
        ),
        (
            lambda p: p.raw_entry(p.header(alg="none"), _payload(p, "0102")),
            "unsupported alg 'none'",
        ),
        (lambda p: p.raw_entry(p.header(crit=["exp"]), _payload(p, "0102")), "crit"),
        (
            lambda p: p.raw_entry(
                p.header(**{"x5t#S256": b64url(b"\0" * 32)}), _payload(p, "0102")
            ),
            "no trusted signer",
        ),
        (
            lambda p: p.raw_entry(p.header(kid=b64url(b"other")), _payload(p, "0102")),
            "kid is not the signer",
        ),
        (lambda p: p.raw_entry(p.header(), b"{not json"), "payload is not valid JSON"),
        (
            lambda p: p.raw_entry(p.header(), {**_payload(p, "0102"), "version": 3}),
            "unsupported payload version 3",
        ),
        (
            lambda p: p.raw_entry(p.header(), {**_payload(p, "0102"), "uniqueId": "ABCD"}),
            "uniqueId must be lowercase hex",
        ),
        (
            lambda p: p.raw_entry(p.header(), _payload(p, "0102"), unique_id="0103"),
            "header.uniqueId differs",
        ),
        (
            lambda p: p.raw_entry(
                p.header(),
                {**_payload(p, "0102"), "provisioningTimestamp": "2030-01-01T00:00:00.000Z"},
            ),
            "outside the signer certificate's validity",
        ),
    ],
)
def test_manifest_verify_bad_entry_is_named_and_others_pass(
    pki: Pki, tmp_path: Path, make: object, reason: str
) -> None:
    data = _with(pki, tmp_path, [make(pki)])  # type: ignore[operator]
    result = list(verify_manifest(io.BytesIO(data), _policy(pki, tmp_path)))
    assert [r.ok for r in result] == [True, False, True]
    assert reason in str(result[1].error)
    assert result[1].describe().startswith("entry 1")


def test_manifest_verify_jwk_certificate_mismatch(pki: Pki, tmp_path: Path) -> None:
    payload = _payload(pki, "0102")
    other = _payload(pki, "0103")
    keys = payload["publicKeySet"]["keys"]  # type: ignore[index]
    keys[0]["x"] = other["publicKeySet"]["keys"][0]["x"]  # type: ignore[index]
    keys[0]["y"] = other["publicKeySet"]["keys"][0]["y"]  # type: ignore[index]
    data = _with(pki, tmp_path, [pki.raw_entry(pki.header(), payload)])
    result = list(verify_manifest(io.BytesIO(data), _policy(pki, tmp_path)))
    assert result[1].error == "the JWK is not the device certificate's public key"


def test_manifest_verify_duplicate_unique_id(pki: Pki, tmp_path: Path) -> None:
    good = json.loads(pki.write(tmp_path / "m.json", 2).read_bytes())
    data = json.dumps([good[0], good[1], good[0]]).encode()
    result = list(verify_manifest(io.BytesIO(data), _policy(pki, tmp_path)))
    assert [r.ok for r in result] == [True, True, False]
    assert result[2].error == "duplicate uniqueId (first in entry 0)"


def test_manifest_verify_oversized_entry_is_skipped(pki: Pki, tmp_path: Path) -> None:
    data = _with(pki, tmp_path, [{"padding": "A" * 5000}])
    result = list(verify_manifest(io.BytesIO(data), _policy(pki, tmp_path), max_entry_bytes=4500))
    assert [r.ok for r in result] == [True, False, True]
    assert result[1].error == "entry is larger than 4500 bytes"


@pytest.mark.parametrize("data", [b"", b"{}", b"not json", b"[1,", b'[{"a":1}] x'])
def test_manifest_verify_not_a_manifest(pki: Pki, tmp_path: Path, data: bytes) -> None:
    with pytest.raises(ManifestError):
        list(verify_manifest(io.BytesIO(data), _policy(pki, tmp_path)))


def test_manifest_verify_device_chain_to_wrong_root(pki: Pki, tmp_path: Path) -> None:
    path = pki.write(tmp_path / "m.json", 1)
    policy = VerificationPolicy(SignerSet.from_path(pki.signers_dir(tmp_path)), [pki.signer])
    (report,) = verify_manifest(path.open("rb"), policy)
    assert report.error is not None
    assert report.error.startswith("device certificate chain:")


def test_manifest_verify_x5c_is_standard_base64(pki: Pki, tmp_path: Path) -> None:
    payload = _payload(pki, "0102")
    cert = payload["publicKeySet"]["keys"][0]["x5c"][0]  # type: ignore[index]
    urlsafe = base64.urlsafe_b64encode(base64.b64decode(cert)).decode()
    if urlsafe == cert:
        pytest.skip("this certificate's base64 has no + or / to tell the alphabets apart")
    payload["publicKeySet"]["keys"][0]["x5c"][0] = urlsafe  # type: ignore[index]
    data = _with(pki, tmp_path, [pki.raw_entry(pki.header(), payload)])
    result = list(verify_manifest(io.BytesIO(data), _policy(pki, tmp_path)))
    assert "is not padded standard base64" in str(result[1].error)


def test_manifest_verify_real_sample_checks_time(microchip: Path) -> None:
    import datetime

    later = datetime.datetime(2060, 1, 1, tzinfo=datetime.UTC)
    policy = microchip_policy(microchip)
    policy = VerificationPolicy(policy.signers, policy.roots, now=later)
    result = list(verify_manifest(SAMPLE.open("rb"), policy))
    assert all("is not valid at 2060-01-01" in str(r.error) for r in result)


@given(
    entry=st.sampled_from([0, 1]),
    member=st.sampled_from(["payload", "protected", "signature"]),
    position=st.integers(0, 4000),
    replacement=st.sampled_from(ALPHABET),
)
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_manifest_verify_real_sample_any_substitution(
    microchip: Path, entry: int, member: str, position: int, replacement: str
) -> None:
    raw = json.loads(SAMPLE.read_bytes())
    text = raw[entry][member]
    at = position % len(text)
    assume(text[at] != replacement)
    raw[entry][member] = text[:at] + replacement + text[at + 1 :]
    result = reports(json.dumps(raw).encode(), microchip_policy(microchip))
    assert [ok for _, _, ok in result] == [entry != 0, entry != 1]
