"""``keyfab init`` says where each CA key lives, warns about a soft root key,
records absolute paths, and adopts an existing key only when told to."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import Keyfab

WARNING = "warning: root CA key is a plain file (soft): keep it offline or use --root-key pkcs11:"


def _show(keyfab: Keyfab) -> dict[str, dict[str, str]]:
    code, out, err = keyfab("ca", "show", "--json")
    assert code == 0, err
    return {entry["role"]: entry for entry in json.loads(out)}


def test_init_prints_each_key_and_warns_about_soft_root(
    keyfab: Keyfab, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "keys").mkdir()
    monkeypatch.chdir(tmp_path)
    code, out, err = keyfab("init", "--ca-key", "soft:keys/mfg.pem", "--root-key", "soft:root.pem")
    assert code == 0, err
    assert f"key             soft:{tmp_path / 'root.pem'}" in out
    assert f"key             soft:{tmp_path / 'keys' / 'mfg.pem'}" in out
    assert WARNING in err
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the recorded URIs are absolute: the CA key opens from here
    shown = _show(keyfab)
    assert shown["manufacturing"]["key_uri"] == f"soft:{tmp_path / 'keys' / 'mfg.pem'}"
    assert shown["root"]["key_uri"] == f"soft:{tmp_path / 'root.pem'}"
    code, _, err = keyfab("ca", "crl", "--out", str(tmp_path / "ca.crl"))
    assert code == 0, err


def test_ca_show_names_algorithm_and_curve(keyfab: Keyfab) -> None:
    code, _, err = keyfab("init", "--algorithm", "rsa-3072")
    assert code == 0, err
    assert {e["key"] for e in _show(keyfab).values()} == {"RSA 3072"}
    code, out, _ = keyfab("ca", "show")
    assert "RSA 3072" in out
    assert "key_uri" in out


def test_existing_key_refused_without_adopt_and_used_with_it(
    keyfab: Keyfab, tmp_path: Path, home: Path
) -> None:
    first = home.parent / "first"
    code, _, err = keyfab("init", "--home", str(first), "--root-key", f"soft:{tmp_path}/r.pem")
    assert code == 0, err
    code, _, err = keyfab("init", "--root-key", f"soft:{tmp_path}/r.pem")
    assert code == 1
    assert err.strip().endswith(
        f"a key already exists at soft:{tmp_path}/r.pem: use it with --adopt-keys"
    )
    assert not home.exists()
    code, _, err = keyfab("init", "--root-key", f"soft:{tmp_path}/absent.pem", "--adopt-keys")
    assert code == 1
    assert "--adopt-keys: no key at" in err
    code, _, err = keyfab("init", "--root-key", f"soft:{tmp_path}/r.pem", "--adopt-keys")
    assert code == 0, err
    code, pem, _ = keyfab("ca", "show", "--pem", "--root")
    key = serialization.load_pem_private_key((tmp_path / "r.pem").read_bytes(), None)
    root = x509.load_pem_x509_certificate(pem.encode())
    assert root.public_key().public_numbers() == key.public_key().public_numbers()
