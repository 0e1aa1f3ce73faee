"""A product policy decides the verdict of real swtpm quotes, end to end.

The release comes from the factory: ``keyfab fit sign --product --version``
records what U-Boot will measure of a FIT built by Debian's mkimage; the
policy (``keyfab attest policy set``) allows PCR 8 and 9 only as a release
gives them, pins PCR 0, and asks for the fit-release and no-debug rules. A
device that boots the release is trusted; one that boots another initrd fails
with the exact reason, and the policy's failure actions run (its operational
certificate revoked, a webhook to a loopback receiver).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from keyfab.attest import service
from keyfab.attest.eventlog import parse_eventlog, replay
from keyfab.attest.service import Result
from keyfab.authority import Principal, Role, enrolment
from keyfab.pki import serial_hex
from keyfab.registry import AttestationState, queries
from tests.boot.conftest import ITS, KeyMaker, keydir, payloads, require_tool, run
from tests.conftest import Keyfab

from .conftest import start_swtpm
from .fleet import BOOT, BootEvent, Device, Fleet, Received, event_log, webhook_receiver

__all__ = ["keydir", "payloads"]  # the boot tests' session fixtures, used here

EV_COMPACT_HASH, EV_TABLE_OF_DEVICES, EV_EFI_ACTION = 0xC, 0xB, 0x80000007
POLICY = """\
[attestation]
product = "acme-gateway"
bank = "sha256"
pcrs = [0, 1, 7, 8, 9]

[pcr.0]
allowed = ["{pcr0}"]
[pcr.8]
releases = true
[pcr.9]
releases = true

[[rule]]
kind = "fit-release"
[[rule]]
kind = "no-event-type"
types = ["EV_EFI_ACTION"]
data = "Debug"

[on_failure]
actions = ["mark-untrusted", "revoke-operational", "webhook"]
webhook = "{webhook}"
"""


def uboot(kernel: bytes, fdt: bytes, initrd: bytes = b"") -> list[BootEvent]:
    """What U-Boot's bootm_measure logs for a FIT configuration (see boot/_measure.py)."""
    return [
        (8, EV_COMPACT_HASH, b"linux\0", kernel),
        (9, EV_COMPACT_HASH, b"initrd\0", initrd),
        (1, EV_TABLE_OF_DEVICES, b"dts\0", fdt),
    ]


@pytest.fixture(scope="module")
def release(
    fleet: Fleet, payloads: Path, keydir: KeyMaker, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Release 1.4.2 of acme-gateway signed and recorded by ``keyfab fit sign``."""
    require_tool("mkimage")
    folder = tmp_path_factory.mktemp("fit")
    its = folder / "image.its"
    kernel, fdt = payloads / "kernel.bin", payloads / "fdt.dtb"
    its.write_text(ITS.format(kernel=kernel, fdt=fdt, extra="", signature=""))
    run("mkimage", "-f", its, folder / "image.itb")
    (folder / "control.dts").write_text("/dts-v1/;\n/ { signature { }; };\n")
    run("dtc", "-I", "dts", "-O", "dtb", "-o", folder / "control.dtb", folder / "control.dts")
    key = keydir("dev", "rsa2048") / "dev.pem"
    code, out, err = Keyfab(fleet.home)(
        "fit", "sign", str(folder / "image.itb"), "--key", f"soft:{key}",
        "--key-name-hint", "dev", "--control", str(folder / "control.dtb"),
        "--required", "conf", "--product", "acme-gateway", "--version", "1.4.2",
    )  # fmt: skip
    assert code == 0, err
    assert "recorded release 1.4.2 of acme-gateway" in out
    return payloads


@pytest.fixture(scope="module")
def hook(fleet: Fleet) -> Iterator[tuple[str, Received]]:
    with webhook_receiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def policy(
    fleet: Fleet,
    release: Path,
    hook: tuple[str, Received],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """The product's policy, checked and set with the CLI."""
    good = _boot(release)
    pcr0 = replay(parse_eventlog(event_log(good)))["sha256"][0]
    path = tmp_path_factory.mktemp("policy") / "policy.toml"
    path.write_text(POLICY.format(pcr0=pcr0.hex(), webhook=hook[0]))
    keyfab = Keyfab(fleet.home)
    assert keyfab("attest", "policy", "check", str(path))[0] == 0
    code, _, err = keyfab("attest", "policy", "set", str(path))
    assert code == 0, err
    return path


def _boot(payloads: Path, initrd: bytes = b"", extra: Sequence[BootEvent] = ()) -> list[BootEvent]:
    """Firmware, then U-Boot booting release 1.4.2's kernel and DTB with ``initrd``."""
    kernel, fdt = (payloads / "kernel.bin").read_bytes(), (payloads / "fdt.dtb").read_bytes()
    firmware = [e for e in BOOT if e[0] not in (8, 9)]  # PCRs 8 and 9 are U-Boot's alone
    return [*firmware[:2], *uboot(kernel, fdt, initrd), *extra, *firmware[2:]]


def _reboot(device: Device, sequence: Sequence[BootEvent], request: pytest.FixtureRequest) -> None:
    """Power-cycle the device's TPM (PCRs reset) and boot ``sequence``."""
    device.tpm.stop()
    device.tpm = start_swtpm(device.tpm.state, device.tpm.ca)
    request.addfinalizer(device.tpm.stop)
    device.boot(sequence)


def _attest(fleet: Fleet, device: Device) -> Result:
    made = service.challenge(fleet.authority, device.serial, device.principal)
    evidence = device.evidence(made.nonce, made.selection.pcrs)
    return service.verify(fleet.authority, device.serial, device.principal, evidence)


def test_policy_selection_is_what_the_challenge_asks(
    fleet: Fleet, policy: Path, hook: tuple[str, Received]
) -> None:
    code, out, err = Keyfab(fleet.home)("attest", "challenge", fleet.a.serial, "--json")
    assert code == 0, err
    assert (json.loads(out)["bank"], json.loads(out)["pcrs"]) == ("sha256", [0, 1, 7, 8, 9])
    # a quote of the old default selection (0-9) is refused for what it covers
    nonce = service.challenge(fleet.authority, fleet.a.serial, fleet.a.principal).nonce
    evidence = fleet.a.evidence(nonce)
    result = service.verify(fleet.authority, fleet.a.serial, fleet.a.principal, evidence)
    assert result.reasons == (
        "the quote covers sha256 PCRs 0,1,2,3,4,5,6,7,8,9; "
        "the product's selection is sha256 PCRs 0,1,7,8,9",
    )
    assert hook[1].get(timeout=10)["reasons"] == list(result.reasons)


def test_policy_trusts_the_release_then_names_the_wrong_initrd(
    fleet: Fleet,
    release: Path,
    policy: Path,
    hook: tuple[str, Received],
    request: pytest.FixtureRequest,
) -> None:
    device = fleet.b
    _reboot(device, _boot(release), request)
    trusted = _attest(fleet, device)
    assert trusted.verdict == AttestationState.TRUSTED, trusted.reasons

    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    operator = Principal("op", Role.OPERATOR)
    ldevid = enrolment.enrol_key(fleet.authority, operator, device.serial, key)

    _reboot(device, _boot(release, initrd=b"initrd with a shell"), request)
    failed = _attest(fleet, device)
    pcr9 = failed.pcrs[9].hex()
    assert failed.reasons == (f"PCR 9: value {pcr9[:16]}…, expected one of release 1.4.2",)

    _, received = hook
    got = received.get(timeout=10)
    assert (got["event"], got["serial"]) == ("attestation.failed", device.serial)
    assert got["reasons"] == list(failed.reasons)
    revoked = queries.certificate(fleet.authority.registry, serial_hex(ldevid)).certificate
    assert revoked.revocation_reason == "privilegeWithdrawn"
    record = queries.device(fleet.authority.registry, device.serial)
    assert record.device.attestation == AttestationState.FAILED
    assert {c.profile for c in record.certificates if c.revoked_at is None} == {"idevid", "iak"}


def test_policy_rules_over_events(
    fleet: Fleet,
    release: Path,
    policy: Path,
    hook: tuple[str, Received],
    request: pytest.FixtureRequest,
) -> None:
    device = fleet.a
    debug = [(1, EV_EFI_ACTION, b"Debug mode enabled")]
    _reboot(device, _boot(release, extra=debug), request)
    result = _attest(fleet, device)
    # PCR 1 carries the debug event; its value is not pinned, so only the rule can see it
    assert result.reasons == ("event 6 (PCR 1): EV_EFI_ACTION with data 'Debug' is not allowed",)
    assert hook[1].get(timeout=10)["reasons"] == list(result.reasons)
