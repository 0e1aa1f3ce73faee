"""Issue 12: inputs that ended in a traceback end in one ``error:`` line instead.

The in-process runner re-raises anything that is not a KeyfabError, so on the
old code each of these tests fails with the traceback's exception.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import RECIPE, Keyfab
from tests.security.test_validate_first import assert_one_line, nothing_recorded, recipe


def test_recipe_nested_5000_deep(keyfab: Keyfab, tmp_path: Path) -> None:
    assert keyfab("init")[0] == 0
    deep = RECIPE + "\n[extra]\nx = " + "[" * 5000 + "]" * 5000 + "\n"
    result = keyfab("provision", "-r", str(recipe(tmp_path, deep)), "-n", "1", "-b", "deep")
    assert_one_line(result, "nested too deeply")
    nothing_recorded(keyfab)


def test_init_with_a_100_character_org_leaves_nothing(keyfab: Keyfab, home: Path) -> None:
    assert_one_line(keyfab("init", "--org", "O" * 100), "--org")
    assert not (home / "keyfab.db").exists()
    assert not home.exists()
    assert keyfab("init", "--org", "O" * 47)[0] == 0


def test_failed_init_in_an_existing_home_removes_only_its_database(
    keyfab: Keyfab, home: Path
) -> None:
    home.mkdir()
    (home / "keep.txt").write_text("mine")
    result = keyfab("init", "--root-key", "pkcs11:token=none;object=x?module-path=/nonexistent")
    assert result[0] == 1
    assert sorted(p.name for p in home.iterdir()) == ["keep.txt"]


def test_ca_crl_to_an_unwritable_path_signs_nothing(keyfab: Keyfab) -> None:
    assert keyfab("init")[0] == 0
    assert_one_line(keyfab("ca", "crl", "--out", "/nonexistent/x"), "/nonexistent/x")
    nothing_recorded(keyfab)  # no ca.crl event for a CRL nobody received


def test_ca_crl_to_a_file_still_works(keyfab: Keyfab, tmp_path: Path) -> None:
    assert keyfab("init")[0] == 0
    assert keyfab("ca", "crl", "--out", str(tmp_path / "ca.crl"))[0] == 0
    assert (tmp_path / "ca.crl").read_bytes().startswith(b"-----BEGIN X509 CRL")
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_registry_file_that_is_not_a_database(keyfab: Keyfab, home: Path) -> None:
    home.mkdir()
    (home / "keyfab.db").write_bytes(b"not a database, just text " * 10)
    assert_one_line(keyfab("devices", "list"), "not a database")


def test_manifest_with_a_100000_digit_number(keyfab: Keyfab, tmp_path: Path) -> None:
    assert keyfab("init")[0] == 0
    roots = tmp_path / "roots.pem"
    roots.write_text(keyfab("ca", "show", "--pem")[1])
    signers = tmp_path / "signers"
    signers.mkdir()
    (signers / "ca.pem").write_text(roots.read_text())
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps([{"payload": 0}]).replace("0", "1" * 100_000))
    result = keyfab(
        "manifest", "verify", str(manifest), "--signers", str(signers), "--roots", str(roots)
    )
    assert_one_line(result, "not valid JSON")
