"""A measured boot on a real swtpm: the log EventLogBuilder writes replays to the TPM's PCRs.

The TPM is the judge: PCRs are extended with the digests the builder returns
and read back with TPM2_PCR_Read, and ``tpm2_eventlog`` must accept the log
and print the same values. (No EV_NO_ACTION event here: Debian's tpm2-tools
5.4 extends them into its replay, unlike a TPM; the replay rules have their
own tests in tests/attest.)
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from tpm2_pytss import ESAPI, TCTILdr
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG
from tpm2_pytss.types import TPML_DIGEST_VALUES, TPML_PCR_SELECTION, TPMT_HA, TPMU_HA

from keyfab.attest.eventlog import EventLogBuilder, parse_eventlog, replay
from tests.attest.conftest import oracle_pcrs, tpm2_eventlog
from tests.tpm2.conftest import Swtpm, SwtpmFactory, make_local_ca

EV_POST_CODE, EV_SEPARATOR, EV_IPL = 0x1, 0x4, 0xD
EV_EFI_VARIABLE_DRIVER_CONFIG = 0x80000001
BANKS = ("sha1", "sha256")
_ALGS = {"sha1": TPM2_ALG.SHA1, "sha256": TPM2_ALG.SHA256}


def uefi_variable(name: str, value: bytes) -> bytes:
    """``UEFI_VARIABLE_DATA`` of an EFI global variable, as firmware measures it."""
    vendor = uuid.UUID("8be4df61-93ca-11d2-aa0d-00e098032b8c").bytes_le
    sizes = struct.pack("<QQ", len(name), len(value))
    return vendor + sizes + name.encode("utf-16-le") + value


# What a small measured boot logs: (PCR, event type, event data, bytes measured).
BOOT = [
    (0, EV_POST_CODE, b"boot ROM v2.1", None),
    (7, EV_EFI_VARIABLE_DRIVER_CONFIG, uefi_variable("SecureBoot", b"\x01"), None),
    *[(pcr, EV_SEPARATOR, bytes(4), None) for pcr in range(8)],
    (4, EV_IPL, b"u-boot.itb", b"the U-Boot FIT image"),
    (9, EV_IPL, b"conf-1: kernel, fdt", b"the signed configuration"),
    (9, EV_IPL, b"initrd", b"initial ramdisk"),
]


@pytest.fixture(scope="module")
def two_bank_tpm(swtpm_factory: SwtpmFactory, tmp_path_factory: pytest.TempPathFactory) -> Swtpm:
    """A swtpm with SHA-1 and SHA-256 PCR banks (the shared one has SHA-256 only)."""
    ca = make_local_ca(tmp_path_factory.mktemp("two-banks") / "ca")
    config = ca.setup_config.read_text().replace(
        "active_pcr_banks = sha256", "active_pcr_banks = sha1,sha256"
    )
    ca.setup_config.write_text(config)
    return swtpm_factory(ca)


@pytest.fixture
def esys(two_bank_tpm: Swtpm) -> Iterator[ESAPI]:
    tcti = TCTILdr("swtpm", f"host=127.0.0.1,port={two_bank_tpm.port}")
    context = ESAPI(tcti)
    yield context
    context.close()
    tcti.close()


def extend(esys: ESAPI, pcr: int, digests: Mapping[str, bytes]) -> None:
    values = TPML_DIGEST_VALUES(
        [TPMT_HA(hashAlg=_ALGS[bank], digest=TPMU_HA(**{bank: d})) for bank, d in digests.items()]
    )
    esys.pcr_extend(ESYS_TR.PCR0 + pcr, values)


def read(esys: ESAPI, bank: str, pcrs: list[int]) -> dict[int, bytes]:
    """TPM2_PCR_Read, 8 PCRs at a time (its limit)."""
    values: dict[int, bytes] = {}
    for start in range(0, len(pcrs), 8):
        batch = pcrs[start : start + 8]
        selection = TPML_PCR_SELECTION.parse(f"{bank}:{','.join(map(str, batch))}")
        _, _, digests = esys.pcr_read(selection)
        values.update(zip(batch, (bytes(d) for d in digests), strict=True))
    return values


def test_tpm2_eventlog_builder_replays_to_the_tpm_pcrs(esys: ESAPI, tmp_path: Path) -> None:
    builder = EventLogBuilder(banks=BANKS)
    for pcr, kind, data, measured in BOOT:
        extend(esys, pcr, builder.extend(pcr, kind, data, measured=measured))
    path = tmp_path / "binary_bios_measurements"
    path.write_bytes(builder.to_bytes())
    replayed = replay(parse_eventlog(path.read_bytes()))
    for bank in BANKS:
        assert sorted(replayed[bank]) == [0, 1, 2, 3, 4, 5, 6, 7, 9]
        assert replayed[bank] == read(esys, bank, sorted(replayed[bank]))
    hexed = {bank: {pcr: v.hex() for pcr, v in values.items()} for bank, values in replayed.items()}
    assert oracle_pcrs(tpm2_eventlog(path)) == hexed


def test_tpm2_eventlog_a_tampered_log_no_longer_matches(esys: ESAPI) -> None:
    builder = EventLogBuilder(banks=BANKS)
    genuine = builder.extend(16, EV_IPL, b"debug-free build")
    esys.pcr_reset(ESYS_TR.PCR16)  # the debug PCR: resettable, so the test starts clean
    extend(esys, 16, genuine)
    forged = EventLogBuilder(banks=BANKS)
    forged.extend(16, EV_IPL, b"debug build")
    assert replay(parse_eventlog(builder.to_bytes()))["sha256"] == read(esys, "sha256", [16])
    assert replay(parse_eventlog(forged.to_bytes()))["sha256"] != read(esys, "sha256", [16])
