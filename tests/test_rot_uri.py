import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyfab.errors import ConfigError
from keyfab.rot import parse_key_uri, read_pin
from keyfab.rot.uri import KeyUri


def test_pkcs11_uri_rfc7512() -> None:
    uri = parse_key_uri(
        "pkcs11:token=My%20Token;object=mfg-ca;type=private?module-path=/usr/lib/x.so&pin-value=1234"
    )
    assert uri.attributes == {"token": "My Token", "object": "mfg-ca", "type": "private"}
    assert uri.query["module-path"] == "/usr/lib/x.so"
    assert uri.label == "mfg-ca"
    assert read_pin(uri) == "1234"


def test_pin_never_shown() -> None:
    uri = parse_key_uri("pkcs11:object=k?pin-value=s3cret")
    assert "s3cret" not in str(uri)
    assert "s3cret" not in repr(uri)
    assert "s3cret" in uri.render(redact=False)


def test_pin_from_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "pin").write_text("0000\n")
    assert read_pin(parse_key_uri(f"pkcs11:object=k?pin-source=file:{tmp_path / 'pin'}")) == "0000"
    with pytest.raises(ConfigError, match="cannot read PIN file"):
        read_pin(parse_key_uri(f"pkcs11:object=k?pin-source=file:{tmp_path / 'missing'}"))


def test_tpm2_and_soft() -> None:
    uri = parse_key_uri("tpm2:tcti=swtpm:host=127.0.0.1,port=2321;persistent=0x81010002")
    assert uri.attributes["tcti"] == "swtpm:host=127.0.0.1,port=2321"
    assert uri.label == "0x81010002"
    assert parse_key_uri("soft:./keys/dev.pem").label == "dev"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("http://x", "must start with"),
        ("pkcs11:token", "name=value"),
        ("pkcs11:bogus=1", "unknown attribute"),
        ("pkcs11:object=a;object=b", "repeats"),
        ("soft:", "needs a file path"),
        ("pkcs11:object=%ff", "not valid UTF-8"),
        ("pkcs11:" + "a" * 5000, "longer than"),
    ],
)
def test_malformed(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_key_uri(text)


@given(st.text(max_size=200))
def test_any_text_parses_or_gives_config_error(text: str) -> None:
    try:
        uri = parse_key_uri(text)
    except ConfigError:
        return
    assert isinstance(uri, KeyUri)


values = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)


@given(token=values, obj=values, pin=values)
def test_render_round_trips(token: str, obj: str, pin: str) -> None:
    uri = KeyUri("pkcs11", {"token": token, "object": obj}, {"pin-value": pin})
    again = parse_key_uri(uri.render(redact=False))
    assert dict(again.attributes) == {"token": token, "object": obj}
    assert again.query["pin-value"] == pin
