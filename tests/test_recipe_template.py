"""``keyfab recipe new`` and ``keyfab recipe check``, and docs/recipes.md's completeness."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from pydantic import BaseModel

from keyfab.provision.recipe import Finish, KeyEntry, ObjectEntry, Product, Recipe, RotSettings
from keyfab.rot import KeyAlgorithm
from keyfab.rot.drivers import DRIVERS

if TYPE_CHECKING:
    from tests.conftest import Keyfab

DOCS = Path(__file__).parent.parent / "docs" / "recipes.md"
MODELS: list[type[BaseModel]] = [Recipe, Product, RotSettings, KeyEntry, ObjectEntry, Finish]
MODELS += [d.options_model for d in DRIVERS.values()]


@pytest.mark.parametrize("driver", list(DRIVERS))
def test_template_of_each_driver_checks_unchanged(
    keyfab: Keyfab, tmp_path: Path, driver: str
) -> None:
    recipe = tmp_path / f"{driver}.toml"
    code, _, err = keyfab("recipe", "new", "--driver", driver, "--out", str(recipe))
    assert code == 0, err
    code, out, err = keyfab("recipe", "check", str(recipe), "--count", "100")
    assert code == 0, err
    assert out.strip() == (
        f"OK {recipe}: product acme-gateway, driver {driver}, keys idevid, "
        "serials acme-gateway-00000001 .. acme-gateway-00000100 (100)"
    )


@pytest.mark.parametrize("driver", list(DRIVERS))
def test_template_names_every_option_of_its_driver(keyfab: Keyfab, driver: str) -> None:
    code, out, _ = keyfab("recipe", "new", "--driver", driver)
    assert code == 0
    for model in (Product, KeyEntry, ObjectEntry, Finish, DRIVERS[driver].options_model):
        for name, info in model.model_fields.items():
            assert re.search(rf"^(# )*{name} = ", out, re.MULTILINE), (model, name)
            assert info.description
            assert info.description[:30] in out.replace("\n# ", " ")


def test_recipe_new_refuses_to_overwrite(keyfab: Keyfab, tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.toml"
    recipe.write_text("mine")
    code, _, err = keyfab("recipe", "new", "--out", str(recipe))
    assert code == 1
    assert "exists" in err
    assert recipe.read_text() == "mine"


def test_recipe_check_one_line_error(keyfab: Keyfab, tmp_path: Path) -> None:
    code, out, _ = keyfab("recipe", "new", "--driver", "pkcs11")
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(out.replace('token = "{batch}-{slot}"', 'path = "x"'))
    code, _, err = keyfab("recipe", "check", str(recipe))
    assert code == 1
    assert "rot" in err
    assert "\n" not in err.strip()


def test_recipe_check_catches_unreadable_object_and_long_serials(
    keyfab: Keyfab, tmp_path: Path
) -> None:
    _, template, _ = keyfab("recipe", "new")
    recipe = tmp_path / "recipe.toml"
    objects = template.replace("# [[objects]]", "[[objects]]")
    objects = objects.replace('# label = "fit-key"', 'label = "fit-key"')
    objects = objects.replace('# file = "keys', 'file = "keys')
    recipe.write_text(objects)
    code, _, err = keyfab("recipe", "check", str(recipe))
    assert code == 1
    assert "fit-key" in err
    recipe.write_text(template.replace('"{product}-{seq:08d}"', '"{product}-{batch}-{seq:30d}"'))
    code, _, err = keyfab("recipe", "check", str(recipe), "--batch", "b" * 30)
    assert code == 1
    assert "64" in err


def test_docs_recipes_mention_every_field_option_and_placeholder() -> None:
    text = DOCS.read_text()
    names = {name for model in MODELS for name in model.model_fields}
    names |= {a.value for a in KeyAlgorithm} | {"idevid"} | set(DRIVERS)
    names |= {"{seq}", "{slot}", "{batch}", "{product}", "{home}"}
    missing = sorted(n for n in names if not re.search(rf"`\[*{re.escape(n)}\]*`", text))
    assert not missing, f"docs/recipes.md does not mention {missing}"
    readme = (DOCS.parent.parent / "README.md").read_text()
    assert "docs/recipes.md" in readme.partition("## Recipes")[2]
