"""The format model: strict parsing, serialization and the streaming array reader."""

from __future__ import annotations

import base64
import datetime
import io
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyfab.manifest import (
    EntryError,
    ManifestError,
    SecureElement,
    element_json,
    iter_array,
    parse_entry,
    parse_payload,
)
from keyfab.manifest._b64 import Base64Error, b64_decode, b64url_decode, b64url_encode

from .conftest import SAMPLE, Pki

_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)


def test_manifest_format_parses_real_sample(microchip: Path) -> None:
    raw = json.loads(SAMPLE.read_bytes())
    entry = parse_entry(raw[0], 0)
    element = entry.element
    assert (element.version, element.model, element.part_number) == (
        1,
        "ATECC608A",
        "ATECC608A-MAH4I",
    )
    assert element.unique_id == "01230390b3d1450c01"
    assert element.provisioned_at == datetime.datetime(
        2020, 6, 9, 22, 49, 52, 470000, tzinfo=datetime.UTC
    )
    assert [k.kid for k in element.keys] == ["0", "1", "2", "3", "4"]
    assert len(element.keys[0].x5c) == 2
    assert not element.keys[1].x5c
    assert (entry.header.alg, entry.header.typ) == ("ES256", "JWT")
    assert len(entry.signature) == 64
    # Writing the model back gives the very payload Microchip signed.
    payload = json.loads(base64.urlsafe_b64decode(entry.payload_b64 + "=="))
    assert element_json(element) == payload


def test_manifest_format_version_2_without_keys() -> None:
    element = parse_payload(
        {
            "version": 2,
            "model": "ATECC608B",
            "partNumber": "X",
            "provisioningTimestamp": "2024-01-02T03:04:05Z",
            "uniqueId": "0123",
        }
    )
    assert element.keys == ()
    assert element.manufacturer is None
    with pytest.raises(ManifestError, match="publicKeySet must be an object"):
        parse_payload(
            {
                "version": 1,
                "model": "m",
                "partNumber": "p",
                "provisioningTimestamp": "2024-01-02T03:04:05Z",
                "uniqueId": "0123",
            }
        )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": True}, "unsupported payload version True"),
        ({"version": "1"}, "unsupported payload version '1'"),
        ({"uniqueId": "123"}, "uniqueId must be lowercase hex"),
        ({"model": 5}, "model must be a string"),
        ({"provisioningTimestamp": "2020-13-01T00:00:00Z"}, "not a real date"),
        ({"provisioningTimestamp": "2020-01-01 00:00:00"}, "provisioningTimestamp is not"),
        ({"manufacturer": []}, "manufacturer is not a JSON object"),
        (
            {"manufacturer": {"organizationName": "x"}},
            "manufacturer.organizationalUnitName must be a string",
        ),
        ({"publicKeySet": {"keys": [{"kty": "RSA"}]}}, "kty 'RSA' is not EC"),
        ({"publicKeySet": {"keys": [{"kty": "EC", "crv": "P-521"}]}}, "crv 'P-521'"),
        (
            {
                "publicKeySet": {
                    "keys": [{"kid": "0", "kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]
                }
            },
            "coordinates are not 32 bytes",
        ),
        (
            {
                "publicKeySet": {
                    "keys": [
                        {
                            "kid": "0",
                            "kty": "EC",
                            "crv": "P-256",
                            "x": b64url_encode(b"\1" * 32),
                            "y": b64url_encode(b"\2" * 32),
                        }
                    ]
                }
            },
            "not a point on P-256",
        ),
        ({"publicKeySet": {"keys": [{}] * 17}}, "more than 16 keys"),
    ],
)
def test_manifest_format_payload_errors(pki: Pki, change: dict[str, object], message: str) -> None:
    fields = {**element_json(pki.element("0a0b")), **change}
    with pytest.raises(ManifestError, match=message):
        parse_payload(fields)


def test_manifest_format_entry_error_names_entry(pki: Pki) -> None:
    entry = pki.raw_entry(
        pki.header(alg="RS256"), element_json(pki.element("0a0b")), unique_id="0a0b"
    )
    with pytest.raises(EntryError) as caught:
        parse_entry(entry, 7)
    assert str(caught.value) == "entry 7 (0a0b): unsupported alg 'RS256' (only ES256)"


def test_manifest_format_duplicate_json_member(pki: Pki) -> None:
    entry = pki.raw_entry(pki.header(), b'{"version":1,"version":1}')
    with pytest.raises(EntryError, match="payload has duplicate member 'version'"):
        parse_entry(entry, 0)


@given(st.binary(max_size=200))
def test_manifest_format_b64url_round_trip(data: bytes) -> None:
    assert b64url_decode(b64url_encode(data), "v", 200) == data


@given(st.text(max_size=60))
def test_manifest_format_b64url_accepts_only_canonical(text: str) -> None:
    try:
        data = b64url_decode(text, "v", 100)
    except Base64Error:
        return
    assert b64url_encode(data) == text


@pytest.mark.parametrize("text", ["AB=", "AB==", "A", "AB+/", "AB C", "AF"])
def test_manifest_format_b64url_rejects(text: str) -> None:
    with pytest.raises(Base64Error):
        b64url_decode(text, "v", 100)


def test_manifest_format_b64_limits() -> None:
    with pytest.raises(Base64Error, match="longer than 3 bytes"):
        b64url_decode("AAAAAA", "v", 3)
    with pytest.raises(Base64Error, match="not canonical"):
        b64_decode("AB==", "v", 10)


@given(st.lists(_json, max_size=6), st.integers(1, 17), st.sampled_from(["", " ", "\n  ", "\t"]))
@settings(max_examples=200)
def test_manifest_format_stream_matches_json(items: list[object], chunk: int, gap: str) -> None:
    text = "[" + gap + ("," + gap).join(json.dumps(i) for i in items) + gap + "]" + gap
    raw = list(iter_array(io.BytesIO(text.encode()), 10_000, chunk))
    assert [json.loads(r.data) for r in raw if r.data is not None] == items
    assert [r.index for r in raw] == list(range(len(items)))


@given(st.binary(max_size=80), st.integers(1, 9))
def test_manifest_format_stream_never_crashes(data: bytes, chunk: int) -> None:
    try:
        for item in iter_array(io.BytesIO(data), 50, chunk):
            assert item.data is None or len(item.data) <= 50
    except ManifestError:
        pass


@given(
    st.dictionaries(
        st.sampled_from(["payload", "protected", "header", "signature", "x"]), _json, max_size=5
    )
)
def test_manifest_format_parser_rejects_garbage_cleanly(raw: dict[str, object]) -> None:
    with pytest.raises(EntryError):
        parse_entry(raw, 3)


@given(
    st.integers(0, 999_999),
    st.text("0123456789abcdef", min_size=1, max_size=32),
    st.sampled_from([1, 2]),
)
def test_manifest_format_payload_round_trip(micro: int, hex_id: str, version: int) -> None:
    unique_id = hex_id if len(hex_id) % 2 == 0 else hex_id + "0"
    moment = datetime.datetime(2024, 5, 6, 7, 8, 9, micro // 1000 * 1000, tzinfo=datetime.UTC)
    element = SecureElement(version, "m", "p", None, None, None, None, moment, unique_id, ())
    assert parse_payload(json.loads(json.dumps(element_json(element)))) == element


_name_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=30)


@given(
    st.text("0123456789abcdef", min_size=1, max_size=20),
    _name_text,
    _name_text,
    st.datetimes(min_value=datetime.datetime(2000, 1, 1), max_value=datetime.datetime(2099, 1, 1)),
    st.none() | _name_text,
)
@settings(max_examples=60, deadline=None)
def test_manifest_format_signed_entry_round_trip(
    pki: Pki, hex_id: str, model: str, org: str, moment: datetime.datetime, group: str | None
) -> None:
    """Whatever keyfab signs, keyfab parses back to the same element (unicode too)."""
    from keyfab.manifest import EcJwk, Organization

    unique_id = hex_id if len(hex_id) % 2 == 0 else hex_id + "0"
    when = moment.replace(microsecond=moment.microsecond // 1000 * 1000, tzinfo=datetime.UTC)
    key = pki.element("00").keys[0]
    element = SecureElement(
        1,
        model,
        model[::-1],
        Organization(org, org),
        None,
        Organization(org, ""),
        group,
        when,
        unique_id,
        (EcJwk("0", key.crv, key.x, key.y, key.x5c),),
    )
    entry = pki.entry_signer().sign(element)
    parsed = parse_entry(entry, 0)
    assert parsed.element == element
    assert parsed.header.kid is not None
