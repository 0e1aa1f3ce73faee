"""The Keylime hand-off: Keylime's own verifier code judges what keyfab exports.

Keylime (from PyPI, tests only) runs the way its verifier runs it:
``Tpm.check_pcrs`` with the exported ``tpm_policy`` and refstate, which
parses the log with ``tpm2_eventlog`` (as Keylime does) and runs its
``example`` measured-boot policy. On the real UEFI log and on tampered
copies, it must reach keyfab's verdict: accepted and refused alike.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import struct
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from keyfab.attest.eventlog import Event, EventLog, parse_eventlog, replay
from keyfab.attest.keylime import mb_refstate, runtime_policy, signatures, tpm_policy
from keyfab.attest.reference import Policy, parse_policy
from keyfab.attest.verdict import evaluate
from keyfab.errors import ConfigError
from tests.attest.conftest import real_log
from tests.conftest import Keyfab

GOLDEN = "event-bootorder.bin"  # shim + GRUB + Ubuntu kernel, Secure Boot off
SELECTION = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14]  # what Keylime's example policy needs quoted
PINNED = (0, 2, 4, 7, 9)  # firmware, drivers, boot applications, Secure Boot, GRUB's files
_ALG_IDS = {"sha1": 0x0004, "sha256": 0x000B}
Quote = dict[int, bytes]
Judge = Callable[..., list[str]]


@pytest.fixture(scope="module")
def keylime_judge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Judge]:
    """Keylime's verifier PCR and measured-boot check, configured in a temporary directory.

    Keylime reads its configuration when imported, so the environment is set
    first. ``keylime.signing`` imports the gpgme bindings (``gpg``, which PyPI
    only has as a source build against libgpgme); measured boot never calls
    them, so an empty module stands in for the import.
    """
    if shutil.which("tpm2_eventlog") is None:
        pytest.skip("tpm2_eventlog not installed (tpm2-tools): Keylime parses logs with it")
    directory = tmp_path_factory.mktemp("keylime")
    conf = directory / "verifier.conf"
    conf.write_text(
        "[verifier]\nmeasured_boot_policy_name = example\n"
        "measured_boot_imports = []\nmeasured_boot_evaluate = always\n"
    )
    saved = os.environ.get("KEYLIME_VERIFIER_CONFIG")
    os.environ["KEYLIME_VERIFIER_CONFIG"] = str(conf)
    sys.modules.setdefault("gpg", types.ModuleType("gpg"))
    mba = pytest.importorskip("keylime.mba.mba")
    tpm_main = pytest.importorskip("keylime.tpm.tpm_main")
    algorithms = pytest.importorskip("keylime.common.algorithms")
    try:
        mba.load_imports(skip_custom_policies=True)
    except ValueError as error:
        pytest.skip(f"Keylime's measured boot does not load here ({error.__cause__})")

    def judge(
        log: bytes, refstate: dict[str, Any], pcrs: dict[str, list[str]], quoted: Quote
    ) -> list[str]:
        """The ids of Keylime's failure events (none: trusted)."""
        values = {i: value.hex() for i, value in quoted.items()}
        failure = tpm_main.Tpm().check_pcrs(
            None, pcrs, values, None, None, None, None,
            base64.b64encode(log).decode(), json.dumps(refstate),
            algorithms.Hash.SHA256, 0, mb_policy_name="example",
        )  # fmt: skip
        return [event.event_id for event in failure.events]

    yield judge
    if saved is None:
        os.environ.pop("KEYLIME_VERIFIER_CONFIG", None)
    else:
        os.environ["KEYLIME_VERIFIER_CONFIG"] = saved


def product_policy(golden: EventLog) -> Policy:
    """The product's keyfab policy: the golden boot's firmware, loaders and files pinned."""
    values = replay(golden)["sha256"]
    pinned = "".join(f'[pcr.{i}]\nallowed = ["{values[i].hex()}"]\n' for i in PINNED)
    return parse_policy(
        f'[attestation]\nproduct = "ubuntu-box"\npcrs = {SELECTION}\n{pinned}'
        '[[rule]]\nkind = "no-event-type"\ntypes = ["EV_EFI_ACTION"]\ndata = "Debug"\n'
    )


def quote(log: EventLog) -> Quote:
    """What a TPM that booted ``log`` quotes (sha256): the replay, zeros where nothing extended."""
    values = replay(log)["sha256"]
    return {i: values.get(i, bytes(32)) for i in SELECTION}


def serialise(header: bytes, events: list[Event]) -> bytes:
    """A crypto-agile log: the original header event, then ``events`` as TCG_PCR_EVENT2."""
    body = b""
    for e in events:
        digests = b"".join(struct.pack("<H", _ALG_IDS[b]) + d for b, d in e.digests.items())
        body += struct.pack("<III", e.pcr, e.event_type, len(e.digests)) + digests
        body += struct.pack("<I", len(e.data)) + e.data
    return header + body


def remeasured(event: Event, data: bytes) -> Event:
    """The event with new data, its digests those of the data (a consistent, different boot)."""
    digests = {bank: hashlib.new(bank, data).digest() for bank in event.digests}
    return replace(event, data=data, digests=digests)


def tampered(raw: bytes, change: Callable[[list[Event]], list[Event]]) -> bytes:
    log = parse_eventlog(raw)
    header = raw[: 32 + len(log.events[0].data)]
    return serialise(header, change(list(log.events[1:])))


def flip_digest(index: int) -> Callable[[list[Event]], list[Event]]:
    def change(events: list[Event]) -> list[Event]:
        event = events[index - 1]
        sha = bytearray(event.digests["sha256"])
        sha[0] ^= 1
        events[index - 1] = replace(event, digests={**event.digests, "sha256": bytes(sha)})
        return events

    return change


def secure_boot_on(events: list[Event]) -> list[Event]:
    """SecureBoot measured as 01: the golden boot says 00 (off)."""
    index = next(i for i, e in enumerate(events) if e.pcr == 7 and b"S\0e\0c\0u\0r\0e" in e.data)
    events[index] = remeasured(events[index], events[index].data[:-1] + b"\x01")
    return events


def drop_initrd(events: list[Event]) -> list[Event]:
    return [e for e in events if not (e.pcr == 9 and b"/initrd" in e.data)]


def other_boot_order(events: list[Event]) -> list[Event]:
    """Another BootOrder (PCR 1): neither policy judges boot variables."""
    index = next(i for i, e in enumerate(events) if e.pcr == 1 and b"B\0o\0o\0t\0O" in e.data)
    events[index] = remeasured(events[index], events[index].data[:-2] + b"\x02\x00")
    return events


VARIANTS: dict[str, tuple[Callable[[list[Event]], list[Event]] | None, bool]] = {
    "golden": (None, True),
    "another boot order": (other_boot_order, True),
    "GRUB's digest changed": (flip_digest(26), False),
    "the initrd's digest changed": (flip_digest(96), False),
    "secure boot turned on": (secure_boot_on, False),
    "the initrd event removed": (drop_initrd, False),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_keylime_reaches_keyfabs_verdict(keylime_judge: Judge, variant: str) -> None:
    raw = real_log(GOLDEN).read_bytes()
    golden = parse_eventlog(raw)
    policy = product_policy(golden)
    refstate, pcrs = mb_refstate(policy, golden), tpm_policy(policy, [])
    change, trusted = VARIANTS[variant]
    evidence = raw if change is None else tampered(raw, change)
    log = parse_eventlog(evidence)
    reasons = evaluate(policy, pcrs=quote(log), log=log, releases=[])
    refusals = keylime_judge(evidence, refstate, pcrs, quote(log))
    assert (not reasons, not refusals) == (trusted, trusted), (reasons, refusals)


def test_keylime_refuses_a_quote_the_log_does_not_replay_to(keylime_judge: Judge) -> None:
    """The golden log with a quote whose PCR 8 (which no value pins) it does not replay to."""
    raw = real_log(GOLDEN).read_bytes()
    golden = parse_eventlog(raw)
    policy = product_policy(golden)
    quoted = quote(golden)
    quoted[8] = hashlib.sha256(quoted[8]).digest()
    reasons = evaluate(policy, pcrs=quoted, log=golden, releases=[])
    assert [reason.split(":")[0] for reason in reasons] == ["PCR 8"]
    refusals = keylime_judge(raw, mb_refstate(policy, golden), tpm_policy(policy, []), quoted)
    assert refusals == ["measured_boot.invalid_pcr_8"]


def test_keylime_refstate_pins_the_golden_boot() -> None:
    golden = parse_eventlog(real_log(GOLDEN).read_bytes())
    refstate = mb_refstate(product_policy(golden), golden)
    assert refstate["has_secureboot"] is False
    assert refstate["kernels"][0]["kernel_cmdline"].startswith(r"/boot/vmlinuz\-5\.4\.0")
    assert set(refstate) >= {"scrtm_and_bios", "pk", "kek", "db", "dbx", "mokdig", "mokxdig"}


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("event-arch-linux.bin", "event 2 (PCR 0): EV_POST_CODE is not an event Keylime's"),
        ("event-uefi-sha1-log.bin", "no sha256 bank"),
    ],
)
def test_keylime_refuses_logs_its_example_policy_cannot_accept(name: str, message: str) -> None:
    log = parse_eventlog(real_log(name).read_bytes())
    policy = parse_policy('[attestation]\nproduct = "x"\npcrs = [0, 7]\n')
    with pytest.raises(ConfigError, match=re.escape(message)):
        mb_refstate(policy, log)


def test_keylime_refuses_a_golden_log_that_fails_the_policy() -> None:
    golden = parse_eventlog(real_log(GOLDEN).read_bytes())
    policy = parse_policy(
        '[attestation]\nproduct = "x"\npcrs = [7]\n[[rule]]\nkind = "secure-boot"\n'
    )
    with pytest.raises(
        ConfigError, match="golden log: fails the policy of x: secure boot: SecureBoot = 00"
    ):
        mb_refstate(policy, golden)


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ("[pcr.8]\nreleases = true\n", "U-Boot FIT releases"),
        ('[[rule]]\nkind = "fit-release"\n', "U-Boot FIT releases"),
        ('[[rule]]\nkind = "no-event-type"\ntypes = ["EV_IPL"]\n', "no-event-type EV_IPL: Keylime"),
        (
            '[[rule]]\nkind = "no-event-type"\ntypes = ["EV_EFI_ACTION"]\ndata = "Boot"\n',
            "EV_EFI_ACTION",
        ),
    ],
)
def test_keylime_refuses_what_it_cannot_express(rules: str, message: str) -> None:
    golden = parse_eventlog(real_log(GOLDEN).read_bytes())
    policy = parse_policy(f'[attestation]\nproduct = "x"\npcrs = [8, 9]\n{rules}')
    with pytest.raises(ConfigError, match=re.escape(message)):
        mb_refstate(policy, golden)


def test_keylime_tpm_policy_and_its_reserved_pcrs() -> None:
    policy = parse_policy(
        '[attestation]\nproduct = "x"\npcrs = [7, 10]\n'
        f'[pcr.7]\nallowed = ["{"AB" * 32}", "{"ab" * 32}"]\n'
    )
    assert tpm_policy(policy, []) == {"7": ["ab" * 32]}
    policy = parse_policy(
        f'[attestation]\nproduct = "x"\npcrs = [10]\n[pcr.10]\nallowed = ["{"00" * 32}"]\n'
    )
    with pytest.raises(ConfigError, match=re.escape("pcr.10: Keylime's IMA PCR")):
        tpm_policy(policy, [])


def test_keylime_runtime_policy_passes_keylimes_schema(keylime_judge: Judge) -> None:
    from keylime.ima import ima

    ima.validate_runtime_policy(
        runtime_policy(parse_policy('[attestation]\nproduct = "x"\npcrs = [0]\n'))
    )


def test_keylime_signature_lists_are_bounded() -> None:
    owner = bytes(range(16))
    good = bytes(16) + struct.pack("<III", 28 + 16 + 4, 0, 20) + owner + b"data"
    assert list(signatures(good)) == [
        {
            "SignatureOwner": "03020100-0504-0706-0809-0a0b0c0d0e0f",
            "SignatureData": "0x" + b"data".hex(),
        }
    ]
    for bad in (
        good[:-1],
        bytes(16) + struct.pack("<III", 10**9, 0, 20) + owner,
        bytes(16) + struct.pack("<III", 48, 0, 16),
    ):
        with pytest.raises(ConfigError, match="golden log: signature list"):
            list(signatures(bad))


def test_keylime_export_cli(keyfab: Keyfab, workspace: object, tmp_path: Path) -> None:
    golden_path = real_log(GOLDEN)
    golden = parse_eventlog(golden_path.read_bytes())
    values = replay(golden)["sha256"]
    policy_path = tmp_path / "policy.toml"
    policy_path.write_text(
        f'[attestation]\nproduct = "ubuntu-box"\npcrs = {SELECTION}\n'
        f'[pcr.4]\nallowed = ["{values[4].hex()}"]\n'
    )
    assert keyfab("attest", "policy", "set", str(policy_path))[0] == 0
    export = ("attest", "policy", "export", "ubuntu-box", "--format")
    code, out, err = keyfab(*export, "keylime-mb", "--from-log", str(golden_path))
    assert code == 0
    assert "export --format keylime-tpm" in err
    assert json.loads(out) == mb_refstate(parse_policy(policy_path.read_text()), golden)
    target = tmp_path / "tpm_policy.json"
    code, out, _ = keyfab(*export, "keylime-tpm", "-o", str(target))
    assert code == 0
    assert json.loads(target.read_text()) == {"4": [values[4].hex()]}
    code, _, err = keyfab(*export, "keylime-mb")
    assert (code, err.strip()) == (
        1,
        "error: --format keylime-mb needs --from-log FILE (a golden boot log of the product)",
    )
    code, _, err = keyfab(
        *export, "keylime-mb", "--from-log", str(real_log("event-arch-linux.bin"))
    )
    assert code == 1
    assert "EV_POST_CODE" in err
