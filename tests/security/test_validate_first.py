"""Issue 12: every setting is checked before the first write, so a refusal uses up nothing.

Each case runs a bad ``keyfab provision`` (exit 1, one line), then shows that
nothing was recorded: the audit log still holds only the two CA events and a
correct run with the same batch name succeeds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ..conftest import RECIPE, Keyfab
from ._helpers import assert_name_free, assert_one_line, provision, recipe


def _nothing_recorded(keyfab: Keyfab) -> None:
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
    _nothing_recorded(keyfab)
    assert_name_free(keyfab, good, "w")


def test_long_serial_template_leaves_no_batch(
    keyfab: Keyfab, good: Path, tmp_path: Path
) -> None:
    template = "S" * 190 + "{seq:08d}"
    bad = recipe(tmp_path, RECIPE.replace('"AGW-{seq:08d}"', f'"{template}"'))
    assert_one_line(provision(keyfab, bad, "s"), "serial")
    _nothing_recorded(keyfab)
    assert_name_free(keyfab, good, "s")


def test_serial_longer_than_the_column_leaves_no_batch(
    keyfab: Keyfab, good: Path, tmp_path: Path
) -> None:
    template = "S" * 60 + "{seq:08d}"  # a short template, a 68-character serial
    bad = recipe(tmp_path, RECIPE.replace('"AGW-{seq:08d}"', f'"{template}"'))
    assert_one_line(provision(keyfab, bad, "s"), "64")
    _nothing_recorded(keyfab)
    assert_name_free(keyfab, good, "s")


def test_unknown_rot_option_leaves_no_batch(keyfab: Keyfab, good: Path, tmp_path: Path) -> None:
    bad = recipe(tmp_path, RECIPE.replace('driver = "soft"', 'driver = "soft"\nbogus = 1'))
    assert_one_line(provision(keyfab, bad, "o"), "bogus")
    _nothing_recorded(keyfab)
    assert_name_free(keyfab, good, "o")


def test_unknown_placeholder_in_path_leaves_no_batch(
    keyfab: Keyfab, good: Path, tmp_path: Path
) -> None:
    bad = recipe(tmp_path, RECIPE.replace("{slot:06d}", "{uid}"))
    assert_one_line(provision(keyfab, bad, "u"), "{slot}")
    _nothing_recorded(keyfab)
    assert_name_free(keyfab, good, "u")


def test_300_character_batch_name_leaves_no_batch(keyfab: Keyfab, good: Path) -> None:
    assert_one_line(provision(keyfab, good, "b" * 300), "batch name")
    _nothing_recorded(keyfab)
    assert_name_free(keyfab, good, "b" * 128)  # the longest name the registry keeps


def test_backend_puf_leaves_no_batch(keyfab: Keyfab, good: Path) -> None:
    assert_one_line(provision(keyfab, good, "p", "--backend", "puf"), "puf")
    _nothing_recorded(keyfab)
    assert_name_free(keyfab, good, "p")


def test_unreadable_object_leaves_no_batch(keyfab: Keyfab, good: Path, tmp_path: Path) -> None:
    bad = recipe(tmp_path, RECIPE + '\n[[objects]]\nlabel = "blob"\nfile = "missing.bin"\n')
    assert_one_line(provision(keyfab, bad, "j"), "missing.bin")
    _nothing_recorded(keyfab)
    assert_name_free(keyfab, good, "j")
