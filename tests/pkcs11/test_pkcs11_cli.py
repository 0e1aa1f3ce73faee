"""End to end through the CLI: CA keys in a SoftHSM2 token, devices that are tokens."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from cryptography import x509

from keyfab import pki
from keyfab.authority import Authority
from keyfab.rot import parse_key_uri
from keyfab.workspace import Workspace

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import Keyfab

    from .conftest import SoftHsm

DEVICES = 34  # more than one chunk of 32, so two forked workers both provision tokens

RECIPE = """\
[product]
name = "acme-hsm-node"
organization = "Acme"
hw_type = "1.3.6.1.4.1.99999.1.2"
serial = "AHN-{{seq:08d}}"

[rot]
driver = "pkcs11"
module = "{module}"
token = "node-{{slot}}"                # one token per device; made on a blank slot if missing
pin_file = "{pin_file}"
so_pin_file = "{so_pin_file}"
initialize = true

[[keys]]
label = "idevid"
algorithm = "ec-p256"

[finish]
lock = true
"""


def _ca_uris(softhsm: SoftHsm, prefix: str) -> list[str]:
    return [
        f"pkcs11:token=ca;object={prefix}-{role}?module-path={softhsm.module}"
        f"&pin-source=file:{softhsm.pin_file}"
        for role in ("root", "mfg")
    ]


def test_pkcs11_init_ca_in_token_and_provision_tokens(
    keyfab: Keyfab, softhsm: SoftHsm, tmp_path: Path
) -> None:
    root_uri, ca_uri = _ca_uris(softhsm, "e2e")
    code, out, err = keyfab("init", "--org", "Acme", "--root-key", root_uri, "--ca-key", ca_uri)
    assert code == 0, err
    so_pin_file = tmp_path / "so.pin"
    so_pin_file.write_text(softhsm.so_pin)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        RECIPE.format(module=softhsm.module, pin_file=softhsm.pin_file, so_pin_file=so_pin_file)
    )

    code, out, err = keyfab(
        "provision",
        "--recipe",
        str(recipe),
        "--backend",
        "pkcs11",
        "--count",
        str(DEVICES),
        "--workers",
        "2",
        "--batch",
        "hsm-1",
        "--json",
    )
    assert code == 0, err
    summary = json.loads(out)
    assert (summary["provisioned"], summary["failed"]) == (DEVICES, 0)

    devices = json.loads(
        keyfab("devices", "list", "--batch", "hsm-1", "--limit", "100", "--json")[1]
    )
    assert {d["rot"] for d in devices} == {"pkcs11"}
    # Each device's unique id is its token's serial, as pkcs11-tool reports it.
    slots = softhsm.tool("--list-token-slots")
    serials = dict(
        re.findall(r"token label\s*:\s*(node-\d+)\s.*?serial num\s*:\s*(\w+)", slots, re.S)
    )
    assert len(serials) == DEVICES
    assert {d["unique_id"] for d in devices} == set(serials.values())

    # The certificate keyfab wrote into a token chains to the CA whose keys are in the other token.
    out_file = tmp_path / "leaf.der"
    softhsm.tool(
        "--token-label",
        "node-7",
        "--read-object",
        "--type",
        "cert",
        "--label",
        "idevid-cert",
        "-o",
        str(out_file),
    )
    leaf = x509.load_der_x509_certificate(out_file.read_bytes())
    chain = [
        x509.load_pem_x509_certificate(b) for b in _pem_blocks(keyfab("ca", "show", "--pem")[1])
    ]
    pki.verify_device_chain(leaf, chain[:1], chain[1:])
    listing = softhsm.tool("--token-label", "node-7", "--list-objects", "--type", "cert")
    assert {"idevid-cert", "ca-cert-0", "ca-cert-1"} <= set(re.findall(r"label:\s+(\S+)", listing))


def test_pkcs11_init_with_a_wrong_pin_is_one_line(
    keyfab: Keyfab, softhsm: SoftHsm, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.pin"
    wrong.write_text("not-the-pin")
    uri = f"pkcs11:token=wrong-pin;object=mfg?module-path={softhsm.module}&pin-source=file:{wrong}"
    code, _, err = keyfab("init", "--ca-key", uri)
    assert code == 1
    assert err.strip() == (  # printed by the CLI's error boundary, as a user sees it
        "error: cannot create CA key pkcs11:token=wrong-pin;object=mfg?module-path="
        f"{softhsm.module}&pin-source=file:{wrong}: pkcs11 token 'wrong-pin': log in: wrong PIN"
    )
    assert "not-the-pin" not in err


def _pem_blocks(text: str) -> list[bytes]:
    return [f"-----BEGIN{b}".encode() for b in text.split("-----BEGIN")[1:]]


def test_pkcs11_demo_keeps_its_ca_keys_in_softhsm(softhsm: SoftHsm, tmp_path: Path) -> None:
    from tests.conftest import Keyfab

    home = tmp_path / "demo"
    for _ in range(2):  # the second run finds the token and logs in with the stored PIN
        code, out, err = Keyfab(home)("demo", "--count", "5", "--workers", "1")
        assert code == 0, err
        assert "5 of 5" in out
        assert "SoftHSM2 token keyfab-ca-" in out
    pins = home / "softhsm"
    assert {p.name: p.stat().st_mode & 0o777 for p in pins.glob("*.pin")} == {
        "user.pin": 0o600,
        "so.pin": 0o600,
    }
    for role in ("root", "manufacturing"):
        uri = parse_key_uri(Authority(Workspace(home).registry()).key_uri(role))
        assert uri.scheme == "pkcs11"
        assert uri.query["pin-source"] == f"file:{pins / 'user.pin'}"
        assert "pin-value" not in uri.query
