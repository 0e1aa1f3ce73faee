"""Issue 12: user-given files are read only if regular and small, checked before reading.

``file = "/dev/zero"`` as a recipe object got keyfab OOM-killed; ``/dev/urandom``
and ``--recipe /dev/zero`` hung. Each is now one quick line.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from keyfab.errors import ConfigError
from keyfab.manifest._certs import load_certificates
from keyfab.rot.uri import parse_key_uri, read_pin
from tests.conftest import RECIPE, Keyfab
from tests.security.test_validate_first import assert_one_line, nothing_recorded, recipe

DEVICES = ["/dev/zero", "/dev/urandom"]


@pytest.fixture
def initialised(keyfab: Keyfab) -> Keyfab:
    assert keyfab("init")[0] == 0
    return keyfab


@pytest.mark.parametrize("device", DEVICES)
def test_device_file_as_recipe_object(initialised: Keyfab, tmp_path: Path, device: str) -> None:
    bad = recipe(tmp_path, RECIPE + f'\n[[objects]]\nlabel = "blob"\nfile = "{device}"\n')
    started = time.monotonic()
    result = initialised("provision", "-r", str(bad), "-n", "1", "-b", "obj")
    assert_one_line(result, device, "not a regular file")
    assert time.monotonic() - started < 10
    nothing_recorded(initialised)


@pytest.mark.parametrize("device", DEVICES)
def test_device_file_as_recipe(initialised: Keyfab, device: str) -> None:
    started = time.monotonic()
    result = initialised("provision", "-r", device, "-n", "1", "-b", "rec")
    assert_one_line(result, device, "not a regular file")
    assert time.monotonic() - started < 10


def test_fifo_as_recipe_does_not_wait_for_a_writer(initialised: Keyfab, tmp_path: Path) -> None:
    fifo = tmp_path / "recipe.fifo"
    os.mkfifo(fifo)
    result = initialised("provision", "-r", str(fifo), "-n", "1", "-b", "fifo")
    assert_one_line(result, "not a regular file")


def test_oversized_recipe_object_refused_before_reading(
    initialised: Keyfab, tmp_path: Path
) -> None:
    big = tmp_path / "big.bin"
    with big.open("wb") as handle:
        handle.truncate(2 << 20)  # sparse: the size, not the bytes, must refuse it
    bad = recipe(tmp_path, RECIPE + f'\n[[objects]]\nlabel = "blob"\nfile = "{big}"\n')
    assert_one_line(initialised("provision", "-r", str(bad), "-n", "1", "-b", "big"), "larger")


@pytest.mark.parametrize("device", DEVICES)
def test_device_file_as_pin_file(device: str) -> None:
    uri = parse_key_uri(f"pkcs11:token=t;object=o?pin-source=file:{device}")
    with pytest.raises(ConfigError, match="not a regular file"):
        read_pin(uri)


@pytest.mark.parametrize("device", DEVICES)
def test_device_file_as_certificate_file(device: str) -> None:
    with pytest.raises(ConfigError, match="not a regular file"):
        load_certificates(Path(device))
