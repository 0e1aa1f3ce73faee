"""Attestation policies: strict validation, and each rule accepted and refused with its reason."""

from __future__ import annotations

import datetime
import hashlib
import json
import struct
from pathlib import Path

import pytest

from keyfab.attest.eventlog import Event, EventLog
from keyfab.attest.reference import parse_policy
from keyfab.attest.verdict import EFI_GLOBAL_VARIABLE, evaluate
from keyfab.errors import ConfigError
from keyfab.registry import Release
from keyfab.workspace import Workspace
from tests.conftest import Keyfab

BASE = '[attestation]\nproduct = "acme-gateway"\npcrs = [1, 7, 8, 9]\n'
KERNELS = {"1.4.2": b"kernel 1.4.2", "1.4.3": b"kernel 1.4.3"}
INITRD = b""


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def release(version: str, kernel: bytes, product: str = "acme-gateway") -> Release:
    measured = {"linux": kernel, "initrd": INITRD, "dts": b"dtb"}
    digests = {
        k: {"sha256": sha(v).hex(), "sha1": hashlib.sha1(v).hexdigest()}
        for k, v in measured.items()
    }
    return Release(
        product=product,
        version=version,
        rollback_index=1,
        key_name="dev",
        key_fingerprint="00",
        algorithm="sha256,rsa2048",
        image="i.itb",
        measurements=json.dumps({"conf-1": digests}),
        created_at=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
    )


RELEASES = [release(v, k) for v, k in KERNELS.items()]


def secure_boot(value: bytes) -> bytes:
    name = "SecureBoot".encode("utf-16-le")
    return EFI_GLOBAL_VARIABLE + struct.pack("<QQ", len(name) // 2, len(value)) + name + value


def boot_events(
    kernel: bytes = KERNELS["1.4.3"], secure: bytes = b"\x01"
) -> list[tuple[int, int, bytes, bytes]]:
    """(pcr, type, measured bytes, event data) as U-Boot and UEFI firmware log them."""
    variable = secure_boot(secure)
    return [
        (7, 0x80000001, variable, variable),
        (8, 0x0C, kernel, b"linux\0"),
        (9, 0x0C, INITRD, b"initrd\0"),
        (1, 0x0B, b"dtb", b"dts\0"),
        (1, 0x0A, b"console=ttyS0\0", b"console=ttyS0\0"),
    ]


def evidence(entries: list[tuple[int, int, bytes, bytes]]) -> tuple[dict[int, bytes], EventLog]:
    """An event log and the PCR values it replays to (sha256), as a quote would hold them."""
    pcrs = {i: bytes(32) for i in (1, 7, 8, 9)}
    events = []
    for index, (pcr, kind, measured, data) in enumerate(entries):
        digest = sha(measured)
        pcrs[pcr] = sha(pcrs[pcr] + digest)
        events.append(Event(index, pcr, kind, {"sha256": digest}, data))
    return pcrs, EventLog(events, ["sha256"], True)


def verdict(
    policy_text: str, entries: list[tuple[int, int, bytes, bytes]] | None = None
) -> list[str]:
    pcrs, log = evidence(entries if entries is not None else boot_events())
    return evaluate(parse_policy(BASE + policy_text), pcrs=pcrs, log=log, releases=RELEASES)


def short(data: bytes) -> str:
    return sha(data).hex()[:16] + "…"


def test_fit_release_accepts_a_recorded_release() -> None:
    assert verdict('[[rule]]\nkind = "fit-release"\n') == []


def test_fit_release_refuses_an_unknown_kernel() -> None:
    reasons = verdict('[[rule]]\nkind = "fit-release"\n', boot_events(kernel=b"evil"))
    assert reasons == [
        f"PCR 8: value {short(b'evil')} (linux), expected one of release 1.4.2, 1.4.3"
    ]


def test_fit_release_refuses_a_kernel_of_another_product() -> None:
    pcrs, log = evidence(boot_events())
    policy = parse_policy(BASE + '[[rule]]\nkind = "fit-release"\n')
    other = [release("9.9", KERNELS["1.4.3"], product="other")]
    assert evaluate(policy, pcrs=pcrs, log=log, releases=other) == [
        f"PCR 8: value {short(KERNELS['1.4.3'])} (linux), "
        "expected one of a recorded release (none are)"
    ]


def test_fit_release_refuses_a_mixed_configuration() -> None:
    entries = boot_events()
    entries[2] = (9, 0x0C, b"other initrd", b"initrd\0")
    reasons = verdict('[[rule]]\nkind = "fit-release"\n', entries)
    assert reasons == [
        f"PCR 9: value {short(b'other initrd')} (initrd), expected one of release 1.4.3"
    ]


def test_fit_release_needs_the_uboot_measurement() -> None:
    entries = [e for e in boot_events() if e[3] != b"linux\0"]
    assert verdict('[[rule]]\nkind = "fit-release"\n', entries) == [
        "fit-release: the event log has no U-Boot 'linux' measurement"
    ]


def test_pcr_from_releases_accepts_and_refuses() -> None:
    text = "[pcr.8]\nreleases = true\n"
    assert verdict(text) == []
    pcr8 = sha(bytes(32) + sha(b"evil"))
    assert verdict(text, boot_events(kernel=b"evil")) == [
        f"PCR 8: value {pcr8.hex()[:16]}…, expected one of release 1.4.2, 1.4.3"
    ]


def test_pcr_allowed_values() -> None:
    pcrs, _ = evidence(boot_events())
    good = f'[pcr.7]\nallowed = ["{pcrs[7].hex()}"]\n'
    assert verdict(good) == []
    other = "ab" * 32
    assert verdict(f'[pcr.7]\nallowed = ["{other}"]\n') == [
        f"PCR 7: value {pcrs[7].hex()[:16]}…, expected one of {other[:16]}…"
    ]


def test_secure_boot_on_off_and_missing() -> None:
    rule = '[[rule]]\nkind = "secure-boot"\n'
    assert verdict(rule) == []
    assert verdict(rule, boot_events(secure=b"\x00")) == ["secure boot: SecureBoot = 00 (event 0)"]
    assert verdict(rule, boot_events()[1:]) == [
        "secure boot: no SecureBoot variable measured in PCR 7"
    ]
    broken = boot_events()
    broken[0] = (7, 0x80000001, b"x", b"\xff" * 40)
    assert verdict(rule, broken) == ["event 0 (PCR 7): malformed UEFI variable data"]


def test_no_event_type_with_and_without_data() -> None:
    debug = [*boot_events(), (1, 0x80000007, b"d", b"Debug mode enabled")]
    assert verdict('[[rule]]\nkind = "no-event-type"\ntypes = ["EV_EFI_ACTION"]\n') == []
    assert verdict('[[rule]]\nkind = "no-event-type"\ntypes = ["EV_EFI_ACTION"]\n', debug) == [
        "event 5 (PCR 1): EV_EFI_ACTION is not allowed"
    ]
    by_data = '[[rule]]\nkind = "no-event-type"\ntypes = ["0x80000007"]\ndata = "Debug"\n'
    assert verdict(by_data, debug) == [
        "event 5 (PCR 1): EV_EFI_ACTION with data 'Debug' is not allowed"
    ]
    assert verdict(by_data.replace("Debug", "Other"), debug) == []


def test_a_log_that_does_not_replay_to_the_quote_is_refused_before_rules() -> None:
    pcrs, log = evidence(boot_events())
    pcrs[8] = bytes(32)
    policy = parse_policy(BASE + '[[rule]]\nkind = "fit-release"\n')
    replayed = sha(bytes(32) + sha(KERNELS["1.4.3"]))
    assert evaluate(policy, pcrs=pcrs, log=log, releases=RELEASES) == [
        f"PCR 8: the event log replays to {replayed.hex()[:16]}…, the quote has {'00' * 8}…"
    ]


def test_missing_pcr_and_missing_log() -> None:
    pcrs, _ = evidence(boot_events())
    policy = parse_policy(BASE + '[[rule]]\nkind = "secure-boot"\n')
    del pcrs[9]
    assert evaluate(policy, pcrs=pcrs, log=None, releases=[]) == ["PCR 9: not in the quote"]
    pcrs[9] = bytes(32)
    assert evaluate(policy, pcrs=pcrs, log=None, releases=[]) == [
        "event log: none given, and the policy has rules over events"
    ]


def test_events_outside_the_selection_are_not_believed() -> None:
    text = BASE.replace("[1, 7, 8, 9]", "[7]")
    text += '[[rule]]\nkind = "no-event-type"\ntypes = ["EV_EFI_ACTION"]\n'
    pcrs, log = evidence([*boot_events(), (1, 0x80000007, b"d", b"x")])
    assert evaluate(parse_policy(text), pcrs={7: pcrs[7]}, log=log, releases=[]) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BASE + "surprise = 1\n", "policy: attestation.surprise: Extra inputs are not permitted"),
        (
            BASE.replace("[1, 7, 8, 9]", "[1, 1]"),
            "policy: attestation.pcrs: each PCR once",
        ),
        (
            BASE.replace("[1, 7, 8, 9]", "[24]"),
            "policy: attestation.pcrs.0: Input should be less than or equal to 23",
        ),
        (BASE + "[pcr.3]\nallowed = ['00']\n", "policy: pcr.3: not in attestation.pcrs"),
        (
            BASE + "[pcr.7]\nallowed = ['00']\n",
            "policy: pcr.7: values must be 32-byte hex (sha256)",
        ),
        (
            BASE + "[pcr.7]\nreleases = true\n",
            "policy: pcr.7: releases = true is for PCR 8 or 9 only",
        ),
        (BASE + "[pcr.8]\n", "policy: pcr.8: give either allowed = [...] or releases = true"),
        (
            BASE.replace("[1, 7, 8, 9]", "[1]") + "[[rule]]\nkind = 'fit-release'\n",
            "policy: rule fit-release needs PCRs [8, 9] in attestation.pcrs",
        ),
        (BASE + "[[rule]]\nkind = 'debug'\n", "policy: rule.0: Input tag 'debug'"),
        (
            BASE + "[[rule]]\nkind = 'no-event-type'\ntypes = []\n",
            "policy: rule.0.no-event-type.types: List should have at least 1 item",
        ),
        (
            BASE + "[on_failure]\nactions = ['webhook']\n",
            "policy: on_failure: the webhook action and the webhook URL go together",
        ),
        (
            BASE + "[on_failure]\nactions = ['webhook']\nwebhook = 'http://example.com/'\n",
            "policy: on_failure.webhook: webhook must be an https:// URL",
        ),
        (
            BASE + "[on_failure]\nactions = ['reboot']\n",
            "policy: on_failure.actions.0: Input should be",
        ),
        ("[attestation\n", "policy: not valid TOML"),
        (BASE.replace("acme-gateway", "acme gateway"), "policy: attestation.product:"),
    ],
)
def test_policy_errors_are_one_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_policy(text)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_policy_cli_check_set_show(workspace: Workspace, keyfab: Keyfab, tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(BASE + '[[rule]]\nkind = "fit-release"\n')
    assert keyfab("attest", "policy", "check", str(path))[0] == 0
    code, out, _ = keyfab("attest", "policy", "set", str(path))
    assert (code, out.strip()) == (0, "attestation policy of acme-gateway: stored")
    code, out, _ = keyfab("attest", "policy", "set", str(path))
    assert "unchanged" in out
    code, out, _ = keyfab("attest", "policy", "show", "acme-gateway")
    assert out == path.read_text()
    code, out, _ = keyfab("attest", "policy", "show", "acme-gateway", "--json")
    assert json.loads(out)["rule"] == [{"kind": "fit-release"}]
    code, _, err = keyfab("attest", "policy", "show", "nothing")
    assert (code, err.strip()) == (1, "error: no attestation policy for product 'nothing'")
    path.write_text(BASE + "oops = 1\n")
    code, _, err = keyfab("attest", "policy", "check", str(path))
    assert code == 1
    assert err.strip() == f"error: {path}: attestation.oops: Extra inputs are not permitted"
