"""One spelling for the same option everywhere: -b for --batch, -o for --out."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import typer

# `ca crl` belongs to cli/ca.py, changed elsewhere at the same time; its help
# is worded there.
NOT_YET_WORDED: set[tuple[str, ...]] = set()


def _commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, group
    for name, command in getattr(group, "commands", {}).items():
        yield from _commands(command, (*path, name))


def _options(flag: str) -> list[tuple[tuple[str, ...], Any]]:
    from keyfab.cli import app

    root = typer.main.get_command(app)
    return [
        (path, param)
        for path, command in _commands(root)
        for param in command.params
        if flag in getattr(param, "opts", ())
    ]


def test_every_batch_option_has_its_short_form() -> None:
    found = _options("--batch")
    assert len(found) >= 6
    assert [path for path, option in found if "-b" not in option.opts] == []


def test_every_out_option_says_file_or_directory_and_has_its_short_form() -> None:
    found = _options("--out")
    assert len(found) >= 6
    assert [path for path, option in found if "-o" not in option.opts] == []
    unclear = [
        path
        for path, option in found
        if path not in NOT_YET_WORDED
        and not any(word in (option.help or "").lower() for word in ("file", "directory"))
    ]
    assert unclear == []
