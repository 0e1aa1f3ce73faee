"""Real swtpm instances for the tpm2 tests, each with EK certificates from a throw-away CA.

``swtpm_setup --create-ek-cert`` manufactures the TPM state (EKs persisted, EK
certificates in their TCG NV indices) signed by ``swtpm_localca`` whose config
points into a temporary directory, so nothing is written to /etc or /var.
Each swtpm listens on free loopback ports and is stopped after its test or module.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from keyfab.attest import Tpm2Policy
from keyfab.errors import KeyNotFoundError

if not (shutil.which("swtpm") and shutil.which("swtpm_setup")):
    pytest.skip(
        "swtpm/swtpm_setup not installed (scripts/system-packages.txt)", allow_module_level=True
    )
pytest.importorskip("tpm2_pytss", reason="tpm2-pytss needs libtss2-dev to build")

from keyfab.authority import Authority
from keyfab.rot.tpm2 import Tpm2RootOfTrust, open_device
from keyfab.workspace import Workspace

from .fleet import Fleet, provision

_READY_SECONDS = 10.0


@dataclass(frozen=True)
class LocalCa:
    """A throw-away swtpm_localca: its directory, setup config and root certificate."""

    directory: Path
    setup_config: Path

    @property
    def root(self) -> Path:
        return self.directory / "swtpm-localca-rootca-cert.pem"

    @property
    def issuer(self) -> Path:
        return self.directory / "issuercert.pem"

    def policy(self, **kwargs: object) -> Tpm2Policy:
        return Tpm2Policy.from_paths([self.root, self.issuer], **kwargs)


def make_local_ca(directory: Path, manufacturer: str = "keyfab-test") -> LocalCa:
    directory.mkdir(parents=True)
    (directory / "swtpm-localca.conf").write_text(
        f"statedir = {directory}\nsigningkey = {directory}/signkey.pem\n"
        f"issuercert = {directory}/issuercert.pem\ncertserial = {directory}/certserial\n"
    )
    (directory / "swtpm-localca.options").write_text(
        f"--platform-manufacturer {manufacturer}\n--platform-version 1.0\n--platform-model test\n"
    )
    setup = directory / "swtpm_setup.conf"
    setup.write_text(
        "create_certs_tool = /usr/bin/swtpm_localca\n"
        f"create_certs_tool_config = {directory}/swtpm-localca.conf\n"
        f"create_certs_tool_options = {directory}/swtpm-localca.options\n"
        "active_pcr_banks = sha256\n"
    )
    return LocalCa(directory, setup)


def free_port_pair() -> int:
    """A free port P with P+1 free too: the swtpm TCTI finds the control port at P+1."""
    for _ in range(50):
        with socket.socket() as probe, socket.socket() as control:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
            try:
                control.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no two adjacent free loopback ports")


@dataclass
class Swtpm:
    """One running swtpm; ``tcti`` is what the driver's ``tcti=`` takes."""

    process: subprocess.Popen[bytes]
    port: int
    state: Path
    ca: LocalCa

    @property
    def tcti(self) -> str:
        return f"swtpm:host=127.0.0.1,port={self.port}"

    @property
    def uri(self) -> str:
        return f"tpm2:tcti={self.tcti}"

    def open(self, **options: object) -> Tpm2RootOfTrust:
        return open_device({"tcti": self.tcti, **options}, 0)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def manufacture(state: Path, ca: LocalCa) -> None:
    state.mkdir(parents=True)
    subprocess.run(
        [
            "swtpm_setup",
            "--tpm2",
            "--tpmstate",
            str(state),
            "--create-ek-cert",
            "--ecc",
            "--config",
            str(ca.setup_config),
            "--overwrite",
            "--logfile",
            str(state / "setup.log"),
        ],
        check=True,
        capture_output=True,
    )


def start_swtpm(state: Path, ca: LocalCa, port: int | None = None) -> Swtpm:
    """A swtpm on ``state``; ``port``: the same port again (a restarted TPM, same TCTI)."""
    port = port or free_port_pair()
    ctrl = port + 1
    process = subprocess.Popen(
        [
            "swtpm",
            "socket",
            "--tpm2",
            "--tpmstate",
            f"dir={state}",
            "--server",
            f"type=tcp,port={port},bindaddr=127.0.0.1",
            "--ctrl",
            f"type=tcp,port={ctrl},bindaddr=127.0.0.1",
            "--flags",
            "not-need-init,startup-clear",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + _READY_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"swtpm exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return Swtpm(process, port, state, ca)
        except OSError:
            continue
    process.kill()
    raise RuntimeError("swtpm did not listen in time")


@pytest.fixture(scope="session")
def local_ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCa:
    return make_local_ca(tmp_path_factory.mktemp("tpm-vendor") / "ca")


@pytest.fixture(scope="session")
def rogue_ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCa:
    """A second vendor CA nobody configured: its EKs must be refused."""
    return make_local_ca(tmp_path_factory.mktemp("rogue-vendor") / "ca", "rogue")


SwtpmFactory = Callable[[LocalCa], Swtpm]


@pytest.fixture(scope="module")
def swtpm_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwtpmFactory]:
    running: list[Swtpm] = []

    def make(ca: LocalCa) -> Swtpm:
        state = tmp_path_factory.mktemp("swtpm") / "state"
        manufacture(state, ca)
        tpm = start_swtpm(state, ca)
        running.append(tpm)
        return tpm

    yield make
    for tpm in running:
        tpm.stop()


@pytest.fixture(scope="module")
def swtpm(swtpm_factory: SwtpmFactory, local_ca: LocalCa) -> Swtpm:
    return swtpm_factory(local_ca)


@pytest.fixture
def rot(swtpm: Swtpm) -> Iterator[Tpm2RootOfTrust]:
    """A driver on the module's swtpm; keys it made are evicted after the test."""
    device = swtpm.open()
    yield device
    device.close()
    with swtpm.open() as cleaner:
        wipe(cleaner)


def wipe(device: Tpm2RootOfTrust) -> None:
    """Evict the keys tests make, whichever exist."""
    for label in ("idevid", "iak", "other"):
        with contextlib.suppress(KeyNotFoundError):
            device.delete_key(label)


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory, swtpm_factory: SwtpmFactory, local_ca: LocalCa
) -> Iterator[Fleet]:
    """Two swtpm devices of product acme-gateway, provisioned and booted (tests/tpm2/fleet.py)."""
    home = tmp_path_factory.mktemp("attest") / "home"
    devices = provision(home, [swtpm_factory(local_ca) for _ in range(2)], local_ca)
    with Authority.open(Workspace(home)) as authority:
        yield Fleet(home, authority, *devices)
