"""A keyfab workspace: the home directory and where its registry is.

``KEYFAB_HOME`` (or ``--home``) chooses the directory; ``KEYFAB_DATABASE_URL``
moves the registry off the default SQLite file. The CA certificates and the URIs
of their keys live in the registry (``keyfab.authority`` reads and writes them),
so every station sharing a database issues from the same CA; the keys
themselves stay in their roots of trust.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from keyfab.errors import ConfigError
from keyfab.registry import Registry

ROOT, MANUFACTURING = "root", "manufacturing"


def default_home() -> Path:
    return Path(os.environ.get("KEYFAB_HOME") or Path.home() / ".keyfab")


@dataclass(frozen=True)
class Workspace:
    home: Path

    @property
    def database_url(self) -> str:
        return os.environ.get("KEYFAB_DATABASE_URL") or f"sqlite:///{self.home / 'keyfab.db'}"

    @property
    def uses_default_database(self) -> bool:
        return not os.environ.get("KEYFAB_DATABASE_URL")

    def registry(self) -> Registry:
        """The workspace's registry; it must have been made by ``keyfab init``."""
        if self.uses_default_database and not (self.home / "keyfab.db").is_file():
            raise ConfigError(
                f"{self.home} is not a keyfab workspace: run 'keyfab init --home {self.home}'"
            )
        return Registry.open(self.database_url)

    def make_home(self) -> None:
        """Create the home directory (0700), or say plainly why it cannot be used."""
        try:
            self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
            probe = self.home / ".keyfab-write-test"
            probe.touch()
            probe.unlink()
        except OSError as error:
            raise ConfigError(f"cannot use {self.home} as keyfab home: {error.strerror}") from None
