"""Issue 12: names have one alphabet, and no path keyfab builds leaves the workspace.

``keyfab provision --batch ../../ESCAPED`` wrote device keys outside the
workspace, and a batch name with a newline was accepted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from keyfab.names import InvalidNameError, check_name
from tests.conftest import RECIPE, Keyfab
from tests.security.test_validate_first import (
    assert_name_free,
    assert_one_line,
    nothing_recorded,
    provision,
    recipe,
)


@pytest.fixture
def good(keyfab: Keyfab, tmp_path: Path) -> Path:
    assert keyfab("init")[0] == 0
    return recipe(tmp_path, RECIPE, "good.toml")


def test_batch_name_escaping_the_workspace(keyfab: Keyfab, good: Path, tmp_path: Path) -> None:
    assert_one_line(provision(keyfab, good, "../../ESCAPED"), "batch name")
    assert not list(tmp_path.parent.rglob("ESCAPED"))
    nothing_recorded(keyfab)


def test_batch_name_with_newline(keyfab: Keyfab, good: Path) -> None:
    assert_one_line(provision(keyfab, good, "line\nbreak"), "batch name")
    nothing_recorded(keyfab)


@pytest.mark.parametrize("name", ["a..b", "-lead", ".hidden", "a/b", "a b", "x" * 129])
def test_batch_names_outside_the_alphabet(keyfab: Keyfab, good: Path, name: str) -> None:
    assert_one_line(provision(keyfab, good, name))
    nothing_recorded(keyfab)


def test_path_template_leaving_home(keyfab: Keyfab, good: Path, tmp_path: Path) -> None:
    outside = RECIPE.replace("{home}/devices/{batch}", "{home}/../outside/{batch}")
    assert_one_line(provision(keyfab, recipe(tmp_path, outside), "p"), "outside")
    assert not (tmp_path / "outside").exists()
    nothing_recorded(keyfab)
    assert_name_free(keyfab, good, "p")


def test_symlink_in_the_devices_path_leaving_home(
    keyfab: Keyfab, good: Path, home: Path, tmp_path: Path
) -> None:
    (tmp_path / "elsewhere").mkdir()
    (home / "devices").symlink_to(tmp_path / "elsewhere")
    assert_one_line(provision(keyfab, good, "s"), "outside")
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_product_name_with_a_slash(keyfab: Keyfab, good: Path, tmp_path: Path) -> None:
    bad = recipe(tmp_path, RECIPE.replace('"acme-gateway"', '"acme/../gateway"'))
    assert_one_line(provision(keyfab, bad, "n"), "product name")


def test_key_label_with_dotdot(keyfab: Keyfab, good: Path, tmp_path: Path) -> None:
    bad = recipe(tmp_path, RECIPE.replace('label = "idevid"', 'label = "id..evid"'))
    assert_one_line(provision(keyfab, bad, "l"), "'..'")


@pytest.mark.parametrize("name", ["a..b", "alice@example", "new\nline"])
def test_token_names_share_the_alphabet(keyfab: Keyfab, good: Path, name: str) -> None:
    assert_one_line(keyfab("tokens", "create", name, "--role", "auditor"), "token name")


def test_station_name_with_dotdot(keyfab: Keyfab, good: Path, tmp_path: Path) -> None:
    result = keyfab("stations", "issue", "a..b", "--out", str(tmp_path / "out"))
    assert_one_line(result, "station name")


def test_one_rule_for_every_kind() -> None:
    assert check_name("batch", "b" * 128) == "b" * 128
    assert check_name("token", "t" * 64) == "t" * 64
    for kind, too_long in (("batch", 129), ("product", 65), ("token", 65), ("station", 49)):
        with pytest.raises(InvalidNameError):
            check_name(kind, "n" * too_long)
    with pytest.raises(InvalidNameError):
        check_name("label", "nul\x00")
