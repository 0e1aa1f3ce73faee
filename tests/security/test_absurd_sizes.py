"""Issue 12: sizes and characters are bounded where recipes are parsed.

``serial = "A{seq:99999999d}"`` ran 23 s and grew the database to 800 MB; a
product name with NUL went into certificates.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from keyfab.errors import ConfigError
from keyfab.provision import parse_recipe
from tests.conftest import RECIPE, Keyfab
from tests.security.test_validate_first import assert_one_line, nothing_recorded, recipe


def _with_serial(template: str) -> str:
    return RECIPE.replace('"AGW-{seq:08d}"', f'"{template}"')


def test_huge_serial_width(keyfab: Keyfab, tmp_path: Path) -> None:
    assert keyfab("init")[0] == 0
    bad = recipe(tmp_path, _with_serial("A{seq:99999999d}"))
    started = time.monotonic()
    assert_one_line(keyfab("provision", "-r", str(bad), "-n", "10", "-b", "w"), "widths")
    assert time.monotonic() - started < 5
    nothing_recorded(keyfab)


def test_product_name_with_nul(keyfab: Keyfab, tmp_path: Path) -> None:
    assert keyfab("init")[0] == 0
    bad = recipe(tmp_path, RECIPE.replace('"acme-gateway"', '"acme\\u0000gateway"'))
    assert_one_line(keyfab("provision", "-r", str(bad), "-n", "1", "-b", "nul"), "product name")
    nothing_recorded(keyfab)


@pytest.mark.parametrize(
    ("template", "why"),
    [
        ("A{seq:0999999d}", "widths"),
        ("A{seq:.99}", "widths"),
        ("A\\u0000{seq}", "control"),
        ("A\\n{seq}", "control"),
        ("{product!r}{seq}", "conversion"),
        ("{seq:{seq}}", "nested"),
        ("{product:d}{seq}", "bad serial template"),
        ("S" * 130 + "{seq}", "128"),
    ],
)
def test_serial_templates_are_bounded(template: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        parse_recipe(_with_serial(template))


def test_organization_with_control_characters() -> None:
    with pytest.raises(ConfigError, match="control characters"):
        parse_recipe(RECIPE.replace('"Acme"', '"Acme\\u001b[31m"'))


def test_widths_up_to_32_still_work() -> None:
    recipe = parse_recipe(_with_serial("{product}-{seq:032d}"))
    assert recipe.serial(1, 0, "b") == "acme-gateway-" + "0" * 31 + "1"
