"""The recipe shown in docs/pkcs11.md provisions batch after batch on SoftHSM2."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.conftest import Keyfab

    from .conftest import SoftHsm

DOCS = Path(__file__).parents[2] / "docs" / "pkcs11.md"


def _docs_recipe() -> str:
    """The one ```toml block of docs/pkcs11.md, as written there."""
    blocks = re.findall(r"```toml\n(.*?)```", DOCS.read_text(), re.S)
    assert len(blocks) == 1
    return str(blocks[0])


def test_docs_recipe_provisions_two_batches(
    keyfab: Keyfab, softhsm: SoftHsm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = _docs_recipe()
    assert f'module = "{softhsm.module}"' in recipe
    monkeypatch.chdir(tmp_path)  # the docs' pin files are relative to where keyfab runs
    (tmp_path / "pins").mkdir()
    for name, pin in (("user.pin", softhsm.pin), ("so.pin", softhsm.so_pin)):
        (tmp_path / "pins" / name).write_text(pin + "\n")
        (tmp_path / "pins" / name).chmod(0o600)
    (tmp_path / "recipe.toml").write_text(recipe)
    code, _, err = keyfab("init", "--org", "Acme")
    assert code == 0, err
    for batch in ("docs-a", "docs-b"):
        code, out, err = keyfab(
            "provision", "--recipe", "recipe.toml", "--count", "2", "--batch", batch, "--json"
        )
        assert code == 0, err
        summary = json.loads(out)
        assert (summary["provisioned"], summary["failed"]) == (2, 0), summary
