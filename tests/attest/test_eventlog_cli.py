"""``keyfab attest eventlog``: the PCRs tpm2_eventlog prints, errors as one line."""

from __future__ import annotations

import json
from pathlib import Path

from keyfab.attest.eventlog import MAX_LOG_BYTES
from tests.attest.conftest import oracle_event_count, oracle_pcrs, real_log, tpm2_eventlog
from tests.conftest import Keyfab


def test_attest_eventlog_json_equals_tpm2_eventlog(keyfab: Keyfab, log_path: Path) -> None:
    code, out, err = keyfab("attest", "eventlog", str(log_path), "--json")
    assert (code, err) == (0, "")
    document = json.loads(out)
    assert set(document) == {"pcrs", "events"}
    output = tpm2_eventlog(log_path)
    expected = {
        bank: {str(pcr): value for pcr, value in values.items()}
        for bank, values in oracle_pcrs(output).items()
    }
    assert document["pcrs"] == expected
    assert len(document["events"]) == oracle_event_count(output)


def test_attest_eventlog_json_events(keyfab: Keyfab) -> None:
    code, out, _ = keyfab("attest", "eventlog", str(real_log("event-arch-linux.bin")), "--json")
    events = json.loads(out)["events"]
    assert code == 0
    assert events[3] == {
        "index": 3,
        "pcr": 7,
        "event_type": 0x80000001,
        "type_name": "EV_EFI_VARIABLE_DRIVER_CONFIG",
        "digests": events[3]["digests"],
        "description": "SecureBoot",
        "data": events[3]["data"],
    }
    assert set(events[3]["digests"]) == {"sha1", "sha256"}
    assert len(events[3]["digests"]["sha256"]) == 64


def test_attest_eventlog_table(keyfab: Keyfab) -> None:
    path = real_log("event-bootorder.bin")
    code, out, _ = keyfab("attest", "eventlog", str(path))
    assert code == 0
    assert "104 events (crypto agile log, banks sha1, sha256)" in out
    assert "BootOrder" in out
    assert "PCRs replayed (sha1)" in out
    assert "PCRs replayed (sha256)" in out
    for values in oracle_pcrs(tpm2_eventlog(path)).values():
        assert all(value in out for value in values.values())


def test_attest_eventlog_bad_log_is_one_line(keyfab: Keyfab, tmp_path: Path) -> None:
    broken = tmp_path / "broken.bin"
    broken.write_bytes(real_log("event-arch-linux.bin").read_bytes()[:-3])
    code, out, err = keyfab("attest", "eventlog", str(broken))
    assert (code, out) == (1, "")
    assert err.strip() == "error: event log: event 24: event data runs past the end"


def test_attest_eventlog_unreadable_files(keyfab: Keyfab, tmp_path: Path) -> None:
    code, _, err = keyfab("attest", "eventlog", str(tmp_path / "absent.bin"))
    assert code == 1
    assert "cannot read event log" in err
    huge = tmp_path / "huge.bin"
    huge.write_bytes(bytes(MAX_LOG_BYTES + 1))
    code, _, err = keyfab("attest", "eventlog", str(huge))
    assert code == 1
    assert f"larger than {MAX_LOG_BYTES} bytes" in err
