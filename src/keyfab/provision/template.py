"""Recipe templates and recipe checks, both derived from the recipe models.

``keyfab recipe new`` writes a commented recipe and ``keyfab recipe check``
validates one without a workspace. The template is rendered from the pydantic
models themselves (each field's description, default and example), so a field
added to :mod:`keyfab.provision.recipe` or :mod:`keyfab.rot.options` shows up in
the template without anyone remembering to edit it, and it cannot drift.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from keyfab.authority.lifecycle import LdevidPolicy
from keyfab.errors import ConfigError
from keyfab.provision.devices import device_options
from keyfab.provision.recipe import (
    MAX_SERIAL,
    Finish,
    KeyEntry,
    ObjectEntry,
    Product,
    Recipe,
    RotSettings,
    load_objects,
    load_recipe,
)
from keyfab.rot import driver

__all__ = ["RecipeCheck", "check_recipe_file", "render_template"]

_CHECK_HOME = "/nonexistent-keyfab-home"
"""``{home}`` while checking a recipe: paths are only checked, never opened."""


def _toml_value(value: Any) -> str:
    """One value in TOML syntax (via tomli_w, so quoting is always right)."""
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, Path):
        value = str(value)
    return tomli_w.dumps({"v": value}).partition("=")[2].strip()


def _default(info: FieldInfo) -> Any:
    """A field's default (None when it has none or it is None)."""
    if info.default_factory is not None:
        return info.default_factory()  # type: ignore[call-arg]
    return None if info.default is PydanticUndefined else info.default


def _field_lines(name: str, info: FieldInfo) -> Iterator[str]:
    """Comment and assignment of one field: the example if it has one, else its default."""
    default = _default(info)
    if info.is_required():
        said = "required"
    else:
        said = f"default: {'none' if default in (None, {}, []) else _toml_value(default)}"
    yield from _comment(f"{info.description or name} ({said})")
    if info.examples:
        yield f"{name} = {_toml_value(info.examples[0])}"
    elif default is None or default in ({}, []):
        yield f"# {name} = ..."
    else:
        yield f"{name} = {_toml_value(default)}"


def _comment(text: str) -> list[str]:
    """Text as ``#`` lines short enough to read in an editor."""
    return [f"# {line}" for line in textwrap.wrap(text, 76)]


def _model_lines(model: type[BaseModel], skip: frozenset[str] = frozenset()) -> Iterator[str]:
    for name, info in model.model_fields.items():
        if name not in skip:
            yield from _field_lines(name, info)


def _section(header: str) -> list[str]:
    """A table's header with the recipe field's description above it."""
    return [f"# {Recipe.model_fields[header.strip('[]')].description}", header]


def _rot_lines(driver_name: str) -> Iterator[str]:
    """``[rot]``: the driver and every option of that driver's schema."""
    chosen = driver(driver_name)
    yield from _section("[rot]")
    yield from _comment(str(RotSettings.model_fields["driver"].description))
    yield f"driver = {_toml_value(chosen.name)}"
    yield f"# {chosen.name} options ({chosen.summary}); strings may use {{slot}} {{batch}} {{home}}"
    yield from _model_lines(chosen.options_model)


def render_template(driver_name: str = "soft") -> str:
    """A commented recipe for ``driver_name`` that ``check_recipe_file`` accepts as written."""
    lines = [
        f"# keyfab recipe for the {driver_name} driver, from 'keyfab recipe new'.",
        "# Every key is explained in docs/recipes.md; unknown keys are errors.",
        "# Check it with 'keyfab recipe check FILE --count N'.",
        "",
        *_section("[product]"),
        *_model_lines(Product),
        "",
        *_rot_lines(driver_name),
        "",
        *_section("[[keys]]"),
        *_model_lines(KeyEntry),
        "",
        f"# {Recipe.model_fields['objects'].description} (default: none)",
        "# [[objects]]",
        *(f"# {line}" for line in _model_lines(ObjectEntry)),
        "",
        f"# {Recipe.model_fields['counters'].description} (default: none)",
        "# [counters]",
        "# rollback = 0",
        "",
        *_section("[finish]"),
        *_model_lines(Finish),
        "",
        *_section("[ldevid]"),
        *_model_lines(LdevidPolicy),
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class RecipeCheck:
    """What a valid recipe makes: for the one-line summary of ``keyfab recipe check``."""

    product: str
    driver: str
    keys: tuple[str, ...]
    first_serial: str
    last_serial: str
    count: int


def check_recipe_file(path: Path, count: int = 1, batch: str = "batch") -> RecipeCheck:
    """Everything a batch checks before reserving serials, without a workspace.

    Model, driver options, placeholders (filled for the first and last slot),
    objects readable, and the serials ``count`` devices would get counting
    ``{seq}`` from 1; ConfigError naming the first problem.
    """
    if count < 1:
        raise ConfigError("--count must be at least 1")
    recipe, _ = load_recipe(path)
    load_objects(recipe, path.parent)
    for slot in {0, count - 1}:
        device_options(recipe.rot.options(), slot, batch, _CHECK_HOME)
    first, last = recipe.serial(1, 0, batch), recipe.serial(count, count - 1, batch)
    if max(len(first), len(last)) > MAX_SERIAL:
        raise ConfigError(f"product.serial makes serials longer than {MAX_SERIAL} characters")
    return RecipeCheck(
        recipe.product.name,
        recipe.rot.driver,
        tuple(key.label for key in recipe.keys),
        first,
        last,
        count,
    )
