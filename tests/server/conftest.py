"""Fixtures for the service tests: a workspace, tokens per role, a real ``keyfab serve``.

The server is the real CLI in its own process on a free loopback port; readiness
is polled with a deadline (never a fixed sleep), and the process is stopped and
reaped when the fixture ends.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from keyfab.authority import Authority, Role, initialise
from keyfab.authority import tokens as store
from keyfab.registry import Registry
from keyfab.rot.soft import SoftRotWarning
from keyfab.workspace import Workspace
from tests.server.postgres import Cluster, binaries

RECIPE = """\
[product]
name = "acme-gateway"
organization = "Acme"
hw_type = "1.3.6.1.4.1.99999.1.1"
serial = "{batch}-{seq:06d}"

[rot]
driver = "soft"
path = "{home}/devices/{batch}/{slot:06d}"

[[keys]]
label = "idevid"
algorithm = "ec-p256"
"""
KEYFAB = Path(sys.executable).with_name("keyfab")
READY_DEADLINE = 90.0  # generous: CI machines are shared; start-up issues TLS credentials


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def make_workspace(home: Path) -> Workspace:
    """An initialised workspace whose recipes/ holds RECIPE as 'gateway'."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SoftRotWarning)
        space = Workspace(home)
        initialise(space, "Acme")
    (home / "recipes").mkdir()
    (home / "recipes" / "gateway.toml").write_text(RECIPE)
    return space


def make_tokens(space: Workspace) -> dict[Role, str]:
    with Authority.open(space) as authority:
        return {role: store.create(authority, f"t-{role}", role).secret for role in Role}


@dataclass
class Server:
    """A running ``keyfab serve``: its URL, its trust anchor, and a client factory."""

    home: Path
    port: int
    tls: bool = True
    workers: int = 1
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def trust(self) -> Path:
        """The CA chain (manufacturing CA, root) clients check the server against."""
        return self.home / "server" / "trust.pem"

    @property
    def root(self) -> Path:
        """The root certificate alone: the one anchor a device keeps."""
        path = self.home / "server" / "root.pem"
        if not path.exists():
            root = x509.load_pem_x509_certificates(self.trust.read_bytes())[-1]
            path.write_bytes(root.public_bytes(Encoding.PEM))
        return path

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.trust))

    def client(self, token: str | None = None, **kwargs: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        verify: ssl.SSLContext | bool = self.context() if self.tls else False
        return httpx.Client(
            base_url=self.url,
            verify=verify,
            headers=headers,
            timeout=30.0,
            **kwargs,  # type: ignore[arg-type]
        )

    @property
    def log(self) -> Path:
        """Where the server's output goes: a file, so a long run never fills a pipe."""
        return self.home.parent / f"serve-{self.port}.log"

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def start(self) -> Server:
        args = [str(KEYFAB), "--home", str(self.home), "serve", "--port", str(self.port)]
        args += ["--workers", str(self.workers)]
        if not self.tls:
            args.append("--insecure-http")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + READY_DEADLINE
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise RuntimeError(f"keyfab serve exited {code}: {self.output()}")
            try:
                if self.tls and not self.trust.exists():
                    raise httpx.ConnectError("no trust file yet")
                with self.client() as client:
                    if client.get("/api/v1/health").status_code == 200:
                        return
            except httpx.TransportError:
                pass
            time.sleep(0.05)  # polling interval, not synchronisation
        self.stop()
        raise RuntimeError(f"keyfab serve did not become ready in time: {self.output()[-2000:]}")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


@pytest.fixture(scope="session")
def service_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("service") / "home"
    make_workspace(home)
    return home


@pytest.fixture(scope="session")
def tokens(service_home: Path) -> dict[Role, str]:
    return make_tokens(Workspace(service_home))


@pytest.fixture(scope="session")
def server(service_home: Path, tokens: dict[Role, str]) -> Iterator[Server]:
    env = {"KEYFAB_DATABASE_URL": ""}
    running = Server(service_home, free_port(), env=env).start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def registry(service_home: Path) -> Iterator[Registry]:
    opened = Workspace(service_home).registry()
    yield opened
    opened.dispose()


@pytest.fixture(scope="session")
def authority(service_home: Path, registry: Registry) -> Authority:
    """The service workspace's authority, on the session's registry (tokens need it)."""
    return Authority.open(Workspace(service_home), registry)


@pytest.fixture(scope="session")
def admin(server: Server, tokens: dict[Role, str]) -> Iterator[httpx.Client]:
    with server.client(tokens[Role.ADMIN]) as client:
        yield client


def wait_for_batch(client: httpx.Client, name: str, deadline: float = 60.0) -> dict[str, object]:
    """Poll a batch's progress until it is finished (bounded)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        progress: dict[str, object] = client.get(f"/api/v1/batches/{name}").json()
        if progress["state"] == "finished" and not progress["running"]:
            return progress
        time.sleep(0.05)
    raise AssertionError(f"batch {name} did not finish: {progress}")


RENEWABLE = RECIPE + "\n[ldevid]\nvalidity_days = 30\nrenewal_days = 30\n"
"""RECIPE whose devices may renew their operational certificate at once."""


def batch_device(server: Server, admin: httpx.Client, name: str, recipe: str = RENEWABLE) -> str:
    """Provision a one-device batch ``name`` made from ``recipe``; the device's serial."""
    (server.home / "recipes" / f"{name}.toml").write_text(recipe)
    answer = admin.post("/api/v1/batches", json={"name": name, "recipe": name, "count": 1})
    assert answer.status_code == 201, answer.text
    wait_for_batch(admin, name)
    (device,) = admin.get("/api/v1/devices", params={"batch": name}).json()["items"]
    return str(device["serial"])


@pytest.fixture(scope="session")
def batch(admin: httpx.Client) -> str:
    """A small batch provisioned through the API: five devices."""
    answer = admin.post("/api/v1/batches", json={"name": "b1", "recipe": "gateway", "count": 5})
    assert answer.status_code == 201, answer.text
    progress = wait_for_batch(admin, "b1")
    assert progress["devices"] == {"provisioned": 5}
    return "b1"


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    """A PostgreSQL cluster for the whole session; dropped (directory and all) after."""
    bin_dir = binaries()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (make setup installs Debian's postgresql)")
    cluster = Cluster.start(bin_dir)
    yield cluster
    cluster.stop()
