"""The one table of root-of-trust drivers, and everything that derives from it."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from sqlalchemy import func, select

import keyfab
from keyfab.errors import ConfigError, MissingExtraError
from keyfab.provision import parse_recipe
from keyfab.provision.devices import open_device
from keyfab.provision.recipe import with_driver
from keyfab.registry import Batch
from keyfab.rot import DRIVERS, check_options, driver, driver_names, drivers, open_rot
from keyfab.rot.options import DriverOptions
from keyfab.rot.uri import SCHEMES
from keyfab.workspace import Workspace

from .conftest import RECIPE, Keyfab

CHOICES = "choose soft, pkcs11, tpm2 or puf"
_OPTIONAL = ("pkcs11", "tpm2_pytss", "numpy", "bchlib")


def test_the_table_lists_the_drivers_that_exist() -> None:
    assert driver_names() == ("soft", "pkcs11", "tpm2", "puf")
    for name, entry in DRIVERS.items():
        assert entry.name == name
        assert entry.module == f"keyfab.rot.{name}"
        assert issubclass(entry.options_model, DriverOptions)
        assert entry.summary
    assert [DRIVERS[n].extra for n in driver_names()] == [None, "pkcs11", "tpm2", "puf"]
    assert driver_names() == SCHEMES


@pytest.mark.parametrize("name", ["se050", "", "Soft", "keyfab.rot.soft"])
def test_unknown_driver_is_refused_with_the_list(name: str) -> None:
    with pytest.raises(ConfigError) as error:
        driver(name)
    assert str(error.value) == f"unknown root-of-trust driver {name!r}: {CHOICES}"
    with pytest.raises(ConfigError, match=CHOICES):
        check_options(name, {})


def test_uri_schemes_come_from_the_table() -> None:
    with pytest.raises(ConfigError, match="soft:, pkcs11:, tpm2:, puf:"):
        open_rot("se050:device=1")


def test_recipe_refuses_an_unknown_driver_in_one_line() -> None:
    with pytest.raises(ConfigError) as error:
        parse_recipe(RECIPE.replace('driver = "soft"', 'driver = "se050"'), "r.toml")
    assert (
        str(error.value) == f"r.toml: rot.driver: unknown root-of-trust driver 'se050': {CHOICES}"
    )


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("soft", {}),
        ("soft", {"path": "{home}/devices/{batch}/{slot:06d}"}),
        ("pkcs11", {"token": "dev-{slot}", "pin_file": "{home}/pin", "initialize": True}),
        ("pkcs11", {"serial": "0123", "module": "/usr/lib/softhsm/libsofthsm2.so", "pin": "1"}),
        ("tpm2", {"tcti": "swtpm:host=127.0.0.1,port=2321"}),
        ("puf", {}),
        ("puf", {"path": "{home}/devices/{batch}/{slot:06d}", "ber": 0.15, "bias": 0.6}),
        ("puf", {"source": "files", "dumps": "{home}/dumps/{slot}", "cells": 8192}),
        ("puf", {"chip": "{batch}-{slot}", "temperature": -40, "age": 10}),
        (
            "tpm2",
            {
                "tcti": ["swtpm:port=2321", "device:/dev/tpmrm{slot}"],
                "handles": {"idevid": "0x81020001", "iak": 0x81020000},
                "nv": {"cert": 0x01000010},
                "counters": {"rollback": "0x01000020"},
                "iak": "iak",
                "iak_algorithm": "rsa-2048",
                "ek": "ec-p256",
                "ek_roots": ["ek-roots/"],
            },
        ),
    ],
)
def test_every_option_a_driver_takes_today_passes(name: str, options: dict[str, Any]) -> None:
    check_options(name, options)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("soft", {"colour": "red"}, "soft driver: unknown [rot] option 'colour' (it takes path)"),
        ("pkcs11", {"path": "x", "token": "t"}, "pkcs11 driver: unknown [rot] option 'path'"),
        ("tpm2", {"tcti": "swtpm:", "path": "x"}, "tpm2 driver: unknown [rot] option 'path'"),
        ("tpm2", {}, "tpm2 driver: [rot] needs tcti ="),
        ("puf", {"source": "files"}, 'puf driver: [rot] source = "files" needs dumps ='),
        ("puf", {"source": "sram"}, "puf driver: [rot] source:"),
        ("puf", {"ber": 0.5}, "puf driver: [rot] ber:"),
        ("puf", {"cells": 1000}, "puf driver: [rot] cells: must be a multiple of 16"),
        ("puf", {"tcti": "x"}, "puf driver: unknown [rot] option 'tcti'"),
        ("pkcs11", {"pin": "1"}, "pkcs11 driver: [rot] needs token = or serial ="),
        ("pkcs11", {"token": "t", "initialize": "yes"}, "pkcs11 driver: [rot] initialize:"),
        ("soft", {"path": 3}, "soft driver: [rot] path:"),
        ("tpm2", {"tcti": "swtpm:", "handles": {"k": 1.5}}, "tpm2 driver: [rot] handles.k"),
    ],
)
def test_a_bad_option_is_named_in_one_line(
    name: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        check_options(name, options)
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_an_inline_pin_is_never_in_the_message() -> None:
    with pytest.raises(ConfigError) as error:
        check_options("pkcs11", {"pin": "s3cret-pin", "so_pin": 1234})
    assert "s3cret" not in str(error.value)


def test_recipe_options_are_checked_against_the_driver_at_parse_time() -> None:
    pkcs11 = with_driver(RECIPE, "pkcs11")
    with pytest.raises(ConfigError) as error:
        parse_recipe(pkcs11, "r.toml")
    assert str(error.value).startswith("r.toml: rot: pkcs11 driver: unknown [rot] option 'path'")
    assert parse_recipe(with_driver(RECIPE, "soft")).rot.driver == "soft"


def test_with_driver_refuses_a_driver_that_does_not_exist() -> None:
    with pytest.raises(ConfigError, match=CHOICES):
        with_driver(RECIPE, "se050")


def _batches(home: Path) -> int:
    with Workspace(home).registry().transaction() as session:
        return int(session.scalar(select(func.count()).select_from(Batch)) or 0)


@pytest.mark.parametrize(
    ("args", "recipe", "message"),
    [
        (("--backend", "se050"), RECIPE, f"unknown root-of-trust driver 'se050': {CHOICES}"),
        ((), RECIPE.replace('driver = "soft"', 'driver = "se050"'), CHOICES),
        (("--backend", "pkcs11"), RECIPE, "pkcs11 driver: unknown [rot] option 'path'"),
        (("--backend", "tpm2"), RECIPE, "tpm2 driver: unknown [rot] option 'path'"),
    ],
)
def test_provision_refuses_before_anything_is_written(
    keyfab: Keyfab, home: Path, tmp_path: Path, args: tuple[str, ...], recipe: str, message: str
) -> None:
    assert keyfab("init")[0] == 0
    path = tmp_path / "recipe.toml"
    path.write_text(recipe)
    code, _, err = keyfab("provision", "-r", str(path), "-n", "3", "-b", "b1", *args)
    assert code == 1
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert json.loads(keyfab("devices", "list", "--json")[1]) == []
    assert _batches(home) == 0


def test_backend_help_is_generated_from_the_table(keyfab: Keyfab) -> None:
    code, out, _ = keyfab("provision", "--help")
    assert code == 0
    flat = " ".join(out.split())
    for entry in DRIVERS.values():
        assert entry.name in flat
    assert "se050" not in flat


def test_importing_the_table_imports_no_optional_library() -> None:
    check = (
        "import sys\n"
        "import keyfab.rot.drivers, keyfab.rot.options, keyfab.rot, keyfab.provision\n"
        "import keyfab.cli.provision\n"
        f"loaded = [m for m in {_OPTIONAL!r} if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(keyfab.__file__).parents[1])}
    result = subprocess.run(
        [sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture
def without(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make a library unimportable, and forget the driver modules that imported it."""

    def hide(library: str, package: str) -> None:
        monkeypatch.setitem(sys.modules, library, None)
        for name in [n for n in sys.modules if n == package or n.startswith(f"{package}.")]:
            monkeypatch.delitem(sys.modules, name)

    return hide


def test_a_missing_pkcs11_library_names_the_extra(without: Any) -> None:
    without("pkcs11", "keyfab.rot.pkcs11")
    with pytest.raises(MissingExtraError) as error:
        open_rot("pkcs11:token=ca;object=root?module-path=/x.so")
    assert str(error.value) == "the pkcs11 driver needs: pip install 'keyfab[pkcs11]'"
    assert error.value.extra == "pkcs11"


def test_a_missing_tpm2_library_names_the_extra(without: Any) -> None:
    without("tpm2_pytss", "keyfab.rot.tpm2")
    with pytest.raises(MissingExtraError) as error:
        open_device("tpm2", {"tcti": "swtpm:"}, 0, "b", "/home")
    assert str(error.value) == "the tpm2 driver needs: pip install 'keyfab[tpm2]'"


@pytest.mark.parametrize("library", ["numpy", "bchlib"])
def test_a_missing_puf_library_names_the_extra(without: Any, library: str) -> None:
    without(library, "keyfab.rot.puf")
    with pytest.raises(MissingExtraError) as error:
        open_device("puf", {}, 0, "b", "/home")
    assert str(error.value) == "the puf driver needs: pip install 'keyfab[puf]'"


def test_a_misspelt_option_is_named_rather_than_the_missing_one() -> None:
    with pytest.raises(ConfigError, match="unknown \\[rot\\] option 'tcit'"):
        check_options("tpm2", {"tcit": "swtpm:"})


def test_a_broken_driver_module_is_a_bug_not_a_missing_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broken = dataclasses.replace(DRIVERS["tpm2"], module="keyfab.rot.no_such_driver")
    monkeypatch.setattr(drivers, "DRIVERS", MappingProxyType({**DRIVERS, "tpm2": broken}))
    with pytest.raises(ModuleNotFoundError):
        open_device("tpm2", {"tcti": "swtpm:"}, 0, "b", "/home")
