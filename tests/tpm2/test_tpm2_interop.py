"""tpm2-tools see what keyfab wrote, and check keyfab's quote on their own.

swtpm serves one client at a time, so every tool runs after the driver closed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from keyfab.attest import parse_public, verify_quote
from keyfab.attest._tpm2_crypto import public_key
from keyfab.rot import KeyAlgorithm, KeySpec

from .conftest import Swtpm, wipe

pytestmark = pytest.mark.skipif(
    not shutil.which("tpm2_nvread"), reason="tpm2-tools not installed (scripts/system-packages.txt)"
)


def _tool(swtpm: Swtpm, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([args[0], "-T", swtpm.tcti, *args[1:]], capture_output=True, timeout=60)


def test_tpm2_interop_nvread_sees_the_certificate(swtpm: Swtpm) -> None:
    with swtpm.open(nv={"idevid-cert": "0x01300000"}) as device:
        certificate = device.ek.certificate  # any DER certificate will do
        device.store_object("idevid-cert", certificate)
    result = _tool(swtpm, "tpm2_nvread", "0x01300000")
    assert result.returncode == 0, result.stderr
    assert result.stdout == certificate
    owner = _tool(swtpm, "tpm2_nvread", "-C", "o", "0x01300000")
    assert owner.stdout == certificate
    with swtpm.open(nv={"idevid-cert": "0x01300000"}) as device:
        device.delete_object("idevid-cert")


def test_tpm2_interop_readpublic_sees_the_keys(swtpm: Swtpm) -> None:
    with swtpm.open() as device:
        device.generate_key("idevid", KeySpec(KeyAlgorithm.EC_P256))
        evidence = device.certify("idevid", os.urandom(16))
    try:
        for part, handle in (("public", "0x81020001"), ("iak_public", "0x81020000")):
            result = _tool(swtpm, "tpm2_readpublic", "-c", handle)
            assert result.returncode == 0, result.stderr
            name = re.search(rb"^name: ([0-9a-f]+)$", result.stdout, re.MULTILINE)
            assert name is not None
            assert name.group(1).decode() == parse_public(evidence.parts[part]).name.hex()
            assert b"fixedtpm|fixedparent|sensitivedataorigin" in result.stdout
        iak = _tool(swtpm, "tpm2_readpublic", "-c", "0x81020000").stdout
        assert b"restricted" in iak
    finally:
        with swtpm.open() as device:
            wipe(device)


def test_tpm2_interop_checkquote_accepts_keyfab_quote(swtpm: Swtpm, tmp_path: Path) -> None:
    nonce = os.urandom(20)
    with swtpm.open() as device:
        quote = device.quote([0, 1, 2, 3, 7], nonce)
        wipe(device)
    iak = public_key(parse_public(quote.parts["iak_public"]))
    assert verify_quote(quote, nonce, iak).pcrs == (0, 1, 2, 3, 7)
    (tmp_path / "iak.pem").write_bytes(
        iak.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    (tmp_path / "quote.msg").write_bytes(quote.parts["attest"])
    (tmp_path / "quote.sig").write_bytes(quote.parts["signature"])
    command = [
        "tpm2_checkquote",
        "-u",
        "iak.pem",
        "-m",
        "quote.msg",
        "-s",
        "quote.sig",
        "-g",
        "sha256",
    ]
    good = subprocess.run(
        [*command, "-q", nonce.hex()], cwd=tmp_path, capture_output=True, timeout=60
    )
    assert good.returncode == 0, good.stderr
    bad = subprocess.run(
        [*command, "-q", bytes(20).hex()], cwd=tmp_path, capture_output=True, timeout=60
    )
    assert bad.returncode != 0
