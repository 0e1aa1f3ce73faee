"""A throw-away PostgreSQL cluster for tests: initdb + pg_ctl in a temp dir, loopback only.

PostgreSQL refuses to run as root, so when the tests run as root the cluster
runs as ``nobody`` (through ``runuser``) in a directory handed to it.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


def binaries() -> Path | None:
    """Debian's PostgreSQL bin directory (newest version), else whatever is on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _version(path: str) -> int:
    try:
        return int(Path(path).parts[4])
    except (IndexError, ValueError):
        return 0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Cluster:
    bin: Path
    folder: Path
    port: int
    user: str | None  # run as this user (when we are root)

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {result.stderr.strip() or result.stdout}")

    @classmethod
    def start(cls, bin_dir: Path) -> Cluster:
        folder = Path(tempfile.mkdtemp(prefix="keyfab-pg-"))
        user = "nobody" if os.geteuid() == 0 else None
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(folder, entry.pw_uid, entry.pw_gid)
        cluster = cls(bin_dir, folder, _free_port(), user)
        data = folder / "data"
        cluster._run("initdb", "-D", str(data), "-A", "trust", "-U", "keyfab", "--no-sync",
                     "-E", "UTF8")  # fmt: skip
        options = (
            f"-c listen_addresses=127.0.0.1 -p {cluster.port} -k {folder} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=300 -c shared_buffers=64MB"
        )
        cluster._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(data), "-o", options,
                     "-l", str(folder / "log"))  # fmt: skip
        return cluster

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://keyfab@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(
            f"postgresql://keyfab@127.0.0.1:{self.port}/postgres", autocommit=True
        ) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')  # test-chosen name
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "stop", "-D", str(self.folder / "data"), "-m", "immediate")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
