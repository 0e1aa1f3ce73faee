"""A command that needs a missing extra says which one, in one line (in-process checks).

tests/test_packaging.py checks the same on a real install without extras; these
hide one library at a time from this environment instead.
"""

from __future__ import annotations

import sys

import pytest

from keyfab.errors import MissingExtraError
from keyfab.registry import Registry

from .conftest import Keyfab


def _hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make ``import module`` fail as if it were not installed."""
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


@pytest.mark.parametrize("missing", ["uvicorn", "fastapi", "uvloop", "httptools"])
def test_serve_without_the_server_extra(
    keyfab: Keyfab, monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    _hide(monkeypatch, missing)
    code, out, err = keyfab("serve")
    assert code == 1
    assert err == "error: keyfab serve needs: pip install 'keyfab[server]'\n"
    assert out == ""


def test_postgres_url_without_psycopg(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide(monkeypatch, "psycopg")
    with pytest.raises(MissingExtraError) as raised:
        Registry("postgresql+psycopg://keyfab@127.0.0.1:1/keyfab")
    assert str(raised.value) == "a PostgreSQL registry needs: pip install 'keyfab[postgres]'"
    assert raised.value.extra == "postgres"
