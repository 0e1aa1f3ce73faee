"""Issue 12: every setting is checked before the first write, so a refusal uses up nothing.

The helpers at the top (one ``error:`` line, a name still free) serve the other
attack tests of this folder too.

Each case runs a bad ``keyfab provision`` (exit 1, one line), then shows that
nothing was recorded: the audit log still holds only the two CA events and a
correct run with the same batch name succeeds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import RECIPE, Keyfab


def assert_one_line(result: tuple[int, str, str], *words: str) -> str:
    """Exit 1 with exactly one ``error:`` line (no traceback) mentioning ``words``."""
    code, _, err = result
    lines = err.strip().splitlines()
    assert code == 1, err
    assert len(lines) == 1, err
    assert lines[0].startswith("error:"), err
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


def nothing_recorded(keyfab: Keyfab) -> None:
    code, out, err = keyfab("audit", "verify", "--json")
    assert code == 0, err
    assert json.loads(out)["events"] == 2  # the two CAs, no batch.started


@pytest.fixture
def good(keyfab: Keyfab, tmp_path: Path) -> Path:
    assert keyfab("init")[0] == 0
    return recipe(tmp_path, RECIPE, "good.toml")


@pytest.mark.parametrize("workers", ["0", "-3", "100000"])
def test_bad_worker_count_leaves_no_batch(keyfab: Keyfab, good: Path, workers: str) -> None:
    assert_one_line(provision(keyfab, good, "w", "--workers", workers), "--workers")
    nothing_recorded(keyfab)
    assert_name_free(keyfab, good, "w")


def test_long_serial_template_leaves_no_batch(keyfab: Keyfab, good: Path, tmp_path: Path) -> None:
    template = "S" * 190 + "{seq:08d}"
    bad = recipe(tmp_path, RECIPE.replace('"AGW-{seq:08d}"', f'"{template}"'))
    assert_one_line(provision(keyfab, bad, "s"), "serial")
    nothing_recorded(keyfab)
    assert_name_free(keyfab, good, "s")


def test_serial_longer_than_the_column_leaves_no_batch(
    keyfab: Keyfab, good: Path, tmp_path: Path
) -> None:
    template = "S" * 60 + "{seq:08d}"  # a short template, a 68-character serial
    bad = recipe(tmp_path, RECIPE.replace('"AGW-{seq:08d}"', f'"{template}"'))
    assert_one_line(provision(keyfab, bad, "s"), "64")
    nothing_recorded(keyfab)
    assert_name_free(keyfab, good, "s")


def test_unknown_rot_option_leaves_no_batch(keyfab: Keyfab, good: Path, tmp_path: Path) -> None:
    bad = recipe(tmp_path, RECIPE.replace('driver = "soft"', 'driver = "soft"\nbogus = 1'))
    assert_one_line(provision(keyfab, bad, "o"), "bogus")
    nothing_recorded(keyfab)
    assert_name_free(keyfab, good, "o")


def test_unknown_placeholder_in_path_leaves_no_batch(
    keyfab: Keyfab, good: Path, tmp_path: Path
) -> None:
    bad = recipe(tmp_path, RECIPE.replace("{slot:06d}", "{uid}"))
    assert_one_line(provision(keyfab, bad, "u"), "{slot}")
    nothing_recorded(keyfab)
    assert_name_free(keyfab, good, "u")


def test_300_character_batch_name_leaves_no_batch(keyfab: Keyfab, good: Path) -> None:
    assert_one_line(provision(keyfab, good, "b" * 300), "batch name")
    nothing_recorded(keyfab)
    assert_name_free(keyfab, good, "b" * 128)  # the longest name the registry keeps


def test_backend_puf_provisions_the_batch(keyfab: Keyfab, good: Path) -> None:
    """Issue 17: ``--backend puf`` exists now and runs the same recipe end to end."""
    code, _, err = provision(keyfab, good, "p", "--backend", "puf")
    assert code == 0, err
    devices = json.loads(keyfab("devices", "list", "--json")[1])
    assert [d["state"] for d in devices] == ["provisioned"] * 2


def test_backend_puf_with_a_bad_model_leaves_no_batch(
    keyfab: Keyfab, good: Path, tmp_path: Path
) -> None:
    bad = recipe(tmp_path, RECIPE.replace('driver = "soft"', 'driver = "soft"\nber = 0.7'))
    assert_one_line(provision(keyfab, bad, "p", "--backend", "puf"), "ber")
    nothing_recorded(keyfab)
    assert_name_free(keyfab, good, "p")


def test_unreadable_object_leaves_no_batch(keyfab: Keyfab, good: Path, tmp_path: Path) -> None:
    bad = recipe(tmp_path, RECIPE + '\n[[objects]]\nlabel = "blob"\nfile = "missing.bin"\n')
    assert_one_line(provision(keyfab, bad, "j"), "missing.bin")
    nothing_recorded(keyfab)
    assert_name_free(keyfab, good, "j")
