"""What every attack test checks: one ``error:`` line, exit 1, and the name still free."""

from __future__ import annotations

from pathlib import Path

from ..conftest import RECIPE, Keyfab


def assert_one_line(result: tuple[int, str, str], *words: str) -> str:
    """Exit 1 with exactly one ``error:`` line (no traceback) mentioning ``words``."""
    code, _, err = result
    lines = err.strip().splitlines()
    assert code == 1, err
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def recipe(tmp_path: Path, text: str = RECIPE, name: str = "recipe.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def provision(keyfab: Keyfab, recipe_file: Path, batch: str, *extra: str) -> tuple[int, str, str]:
    return keyfab("provision", "-r", str(recipe_file), "-n", "2", "-b", batch, *extra)


def assert_name_free(keyfab: Keyfab, good_recipe: Path, batch: str) -> None:
    """A refused batch left nothing behind: a correct run with the same name succeeds."""
    code, _, err = provision(keyfab, good_recipe, batch)
    assert code == 0, err
