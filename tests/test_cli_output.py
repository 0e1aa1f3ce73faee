"""How the CLI speaks: help shows bracketed text as written; errors are one literal line."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from keyfab.cli import build_app
from keyfab.cli._output import KeyfabGroup
from keyfab.errors import ConfigError

from .conftest import RECIPE, Keyfab

BRACKETED = re.compile(r"\[[^\[\]\n]+\]")


def _commands(command: typer.core.TyperGroup, path: tuple[str, ...] = ()) -> Iterator[tuple]:
    """(path, click command) for ``keyfab`` and every command and group below it."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def _source_brackets(command: object) -> set[str]:
    """Bracketed text written in a command's help and its parameters' help."""
    texts = [getattr(command, "help", None)]
    texts += [getattr(param, "help", None) for param in getattr(command, "params", [])]
    # The tree is built with its help escaped for Rich (\[...]); read it as written.
    return {
        match
        for text in texts
        if isinstance(text, str)
        for match in BRACKETED.findall(text.replace("\\[", "["))
    }


def _flat(output: str) -> str:
    """Help as one line of words: panels' borders gone, wrapped lines joined."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", output).split())


def test_help_of_every_command_shows_bracketed_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("TERMINAL_WIDTH", "200")
    app = build_app()
    tree = list(_commands(typer.main.get_command(app)))  # type: ignore[arg-type]
    assert len(tree) > 30  # every group and command, not just the top
    checked: set[str] = set()
    runner = CliRunner()
    for path, command in tree:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        shown = _flat(result.stdout)
        assert shown, path
        for text in _source_brackets(command):
            assert _flat(text) in shown, (path, text, result.stdout)
            checked.add(text)
    assert {
        "[default: ~/.keyfab]",
        "[default: soft file in HOME/ca]",
        "[default: stdout]",
        "[default: <product>-<UTC time>]",
        "[rot]",
    } <= checked


def test_an_error_with_brackets_is_one_literal_line() -> None:
    app = typer.Typer(cls=KeyfabGroup)

    @app.command()
    def fail() -> None:
        raise ConfigError("pkcs11: unknown [rot] option(s) [bold]x[/bold]")

    @app.command()
    def other() -> None:  # two commands: a group, as every keyfab app is
        pass

    result = CliRunner().invoke(app, ["fail"])
    assert result.exit_code == 1
    assert result.stderr == "error: pkcs11: unknown [rot] option(s) [bold]x[/bold]\n"
    assert result.stdout == ""


def test_a_recipe_error_names_its_rot_table(keyfab: Keyfab, tmp_path: Path) -> None:
    assert keyfab("init")[0] == 0
    recipe = tmp_path / "tpm2.toml"
    recipe.write_text(RECIPE.replace('driver = "soft"', 'driver = "tpm2"'))
    code, _, err = keyfab("provision", "--recipe", str(recipe), "--count", "1")
    assert code == 1
    (line,) = err.strip().splitlines()
    assert line.startswith("error: ")
    assert "tpm2 driver: unknown [rot] option 'path'" in line  # checked before serials go


def test_init_takes_home_as_the_missing_workspace_hint_says(tmp_path: Path) -> None:
    home = tmp_path / "elsewhere"
    runner = CliRunner()
    result = runner.invoke(build_app(), ["--home", str(home), "devices", "list"])
    assert result.exit_code == 1
    hint = result.stderr.strip().rpartition("run ")[2].strip("'").split()
    assert hint == ["keyfab", "init", "--home", str(home)]
    result = runner.invoke(build_app(), hint[1:])
    assert result.exit_code == 0, result.output
    assert (home / "keyfab.db").is_file()
