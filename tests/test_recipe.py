import contextlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyfab.errors import ConfigError
from keyfab.provision import parse_recipe
from keyfab.provision.recipe import load_objects

from .conftest import RECIPE


def test_valid_recipe() -> None:
    recipe = parse_recipe(RECIPE)
    assert recipe.product.name == "acme-gateway"
    assert recipe.rot.driver == "soft"
    assert recipe.rot.options() == {"path": "{home}/devices/{batch}/{slot:06d}"}
    assert recipe.serial(7, 0, "b") == "AGW-00000007"
    assert recipe.counters == {"rollback": 3}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("[finish]", "[finish]\nlok = true"), "finish.lok: Extra inputs are not permitted"),
        (('algorithm = "ec-p256"', 'algorithm = "ec-p999"'), "keys.0.algorithm"),
        (('hw_type = "1.3.6.1.4.1.99999.1.1"', "hw_type = 12"), "product.hw_type"),
        (('hw_type = "1.3.6.1.4.1.99999.1.1"', 'hw_type = "not.an.oid"'), "product.hw_type"),
        (('serial = "AGW-{seq:08d}"', 'serial = "{seq.__class__}"'), "serial template"),
        (('serial = "AGW-{seq:08d}"', 'serial = "AGW-fixed"'), "serial template"),
        (('label = "idevid"', 'label = "../x"'), "invalid label"),
        (("rollback = 3", "rollback = -1"), "below zero"),
        (('driver = "soft"', 'driver = "magic"'), "rot.driver"),
        (("[product]", "[product\n"), "not valid TOML"),
    ],
)
def test_bad_recipes_give_one_line(change: tuple[str, str], message: str) -> None:
    text = (
        RECIPE.replace(*change) if change[0] != "[finish]" else RECIPE + "\n[finish]\nlok = true\n"
    )
    with pytest.raises(ConfigError) as error:
        parse_recipe(text, "r.toml")
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_recipe_needs_a_key() -> None:
    text = RECIPE.split("[[keys]]")[0]
    with pytest.raises(ConfigError, match="keys"):
        parse_recipe(text)


def test_objects_are_read_and_bounded(tmp_path: Path) -> None:
    (tmp_path / "fw.pem").write_bytes(b"public key")
    recipe = parse_recipe(RECIPE + '\n[[objects]]\nlabel = "fit-key"\nfile = "fw.pem"\n')
    assert load_objects(recipe, tmp_path) == {"fit-key": b"public key"}
    with pytest.raises(ConfigError, match="cannot read"):
        load_objects(recipe, tmp_path / "elsewhere")


@given(st.text(max_size=300))
def test_any_text_is_a_recipe_or_a_config_error(text: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_recipe(text)
