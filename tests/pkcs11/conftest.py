"""Throw-away SoftHSM2 tokens for the pkcs11 driver tests.

SoftHSM2 reads its configuration (SOFTHSM2_CONF) and its token directory once,
when a process first initialises the module, and does not see tokens that other
processes create afterwards. So the whole session shares one temporary token
directory, and every token the tests need is made with ``softhsm2-util`` before
anything loads the module. Tests that need a fresh token make one through
keyfab's own ``initialize = true`` path instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
USER_PIN = "4321-user"
SO_PIN = "87654321-so"
TOKENS = (
    "ca", "device", "export", "objects", "errors", "wrong-pin", "interop", "fork", "bench",
    "agent",
)  # fmt: skip


@dataclass(frozen=True)
class SoftHsm:
    """The session's SoftHSM2: its config, token directory and PINs."""

    module: str
    config: Path
    directory: Path
    pin_file: Path
    pin: str = USER_PIN
    so_pin: str = SO_PIN

    def uri(self, token: str, obj: str | None = None, pin: str = USER_PIN) -> str:
        """A key or token URI with the PIN given inline."""
        path = f"token={token}" + (f";object={obj}" if obj else "")
        return f"pkcs11:{path}?module-path={self.module}&pin-value={pin}"

    def uri_with_pin_file(self, token: str, obj: str | None = None) -> str:
        path = f"token={token}" + (f";object={obj}" if obj else "")
        return f"pkcs11:{path}?module-path={self.module}&pin-source=file:{self.pin_file}"

    def env(self) -> dict[str, str]:
        return {**os.environ, "SOFTHSM2_CONF": str(self.config)}

    def tool(self, *args: str) -> str:
        """Run SoftHSM2's tokens through OpenSC's pkcs11-tool (an independent judge)."""
        return subprocess.run(
            ["pkcs11-tool", "--module", self.module, *args],
            check=True,
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=60,
        ).stdout


def _init_token(label: str, env: dict[str, str]) -> None:
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            label,
            "--so-pin",
            SO_PIN,
            "--pin",
            USER_PIN,
        ],
        check=True,
        capture_output=True,
        env=env,
        timeout=60,
    )


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsm]:
    if shutil.which("softhsm2-util") is None or not Path(MODULE).is_file():
        pytest.skip("SoftHSM2 is not installed (Debian package softhsm2; make setup installs it)")
    root = tmp_path_factory.mktemp("softhsm")
    tokens = root / "tokens"
    tokens.mkdir()
    config = root / "softhsm2.conf"
    config.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    pin_file = root / "user.pin"
    pin_file.write_text(USER_PIN + "\n")
    pin_file.chmod(0o600)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOFTHSM2_CONF", str(config))
        hsm = SoftHsm(MODULE, config, tokens, pin_file)
        for label in TOKENS:
            _init_token(label, hsm.env())
        yield hsm


def _make_certificate(
    subject: str,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    issuer: str,
    signer: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    *,
    ca: bool = False,
) -> x509.Certificate:
    """A certificate signed by ``signer`` (a token key), until keyfab.pki exists here."""
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    return builder.sign(signer, hashes.SHA256())


MakeCertificate = Callable[..., x509.Certificate]


@pytest.fixture(scope="session")
def make_certificate() -> MakeCertificate:
    """Builds test certificates signed by token keys (see ``_make_certificate``)."""
    return _make_certificate
