"""Names that become file names, certificate fields and URL parts: one alphabet for all.

Batches, products, key and object labels, recipes, tokens and stations are all
chosen by someone else (a recipe author, an operator, an API caller) and end up
in paths (``{home}/devices/{batch}``), certificate subjects and audit events. A
single rule, defined here and nowhere else, keeps a ``/``, a ``..``, a newline
or a NUL out of every one of them: letters, digits, ``.``, ``_`` and ``-``,
starting with a letter or digit, never ``..``, 1 to 64 characters.

Two kinds are longer or shorter because of where they are stored: batches keep
the 128 characters of the registry's ``batches.name`` column (a default batch
name is the product name plus a timestamp), and stations stop at 48 because
their name is embedded in a 64-character key label.
"""

from __future__ import annotations

import re

from keyfab.errors import ConfigError

MAX_NAME = 64
_LIMITS = {"batch": 128, "station": 48}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class InvalidNameError(ConfigError):
    """A name outside the one alphabet (the message never repeats a control character)."""


def max_length(kind: str) -> int:
    """The longest name of ``kind`` (``batch``, ``station`` or any other kind)."""
    return _LIMITS.get(kind, MAX_NAME)


def pattern(kind: str) -> str:
    """A regular expression of the alphabet and length, for OpenAPI and path parameters.

    It cannot say "no '..'" without look-ahead, which pydantic's regex engine
    lacks; :func:`name_problem` is the whole rule.
    """
    return rf"^[A-Za-z0-9][A-Za-z0-9._-]{{0,{max_length(kind) - 1}}}$"


def name_problem(kind: str, value: object) -> str | None:
    """Why ``value`` is not a valid ``kind`` name, or None if it is."""
    limit = max_length(kind)
    if not isinstance(value, str) or not _NAME.fullmatch(value) or len(value) > limit:
        return (
            f"invalid {kind} name: use 1-{limit} letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if ".." in value:
        return f"invalid {kind} name: '..' is not allowed"
    return None


def check_name(kind: str, value: str) -> str:
    """``value`` if it is a valid ``kind`` name, else InvalidNameError (one line)."""
    problem = name_problem(kind, value)
    if problem is not None:
        raise InvalidNameError(problem)
    return value
