"""A fleet of real swtpm devices provisioned by keyfab, booted through a measured boot.

Shared by the attestation tests (service, HTTP API, CLI, policy): each TPM
extends its PCRs event by event while ``EventLogBuilder`` writes the
crypto-agile log, as firmware does; ``collect`` is the device side.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import json
import queue
import struct
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG
from tpm2_pytss.types import TPML_DIGEST_VALUES, TPMT_HA

from keyfab.attest.eventlog import EventLogBuilder
from keyfab.attest.evidence import AttestationEvidence, collect
from keyfab.authority import Authority, Principal, Role
from tests.conftest import Keyfab

if TYPE_CHECKING:
    from .conftest import LocalCa, Swtpm

RECIPE = """\
[product]
name = "acme-gateway"
organization = "Acme"
hw_type = "1.3.6.1.4.1.99999.1.1"
serial = "AGW-{{seq:08d}}"

[rot]
driver = "tpm2"
tcti = {tctis}
ek_roots = ["{root}", "{issuer}"]

[[keys]]
label = "idevid"
algorithm = "ec-p256"
"""

EV_POST_CODE, EV_SEPARATOR, EV_IPL = 0x1, 0x4, 0xD
BootEvent = tuple[int, int, bytes] | tuple[int, int, bytes, bytes]
"""(PCR, event type, event data[, the bytes measured when the data only names them])."""
BOOT: list[BootEvent] = [
    (0, EV_POST_CODE, b"firmware 2.1"),
    (1, EV_POST_CODE, b"firmware configuration"),
    (4, EV_IPL, b"u-boot 2024.01"),
    (4, EV_IPL, b"fit configuration conf-1"),
    (7, EV_POST_CODE, b"secure boot on"),
    (9, EV_IPL, b"kernel 6.6"),
    *[(pcr, EV_SEPARATOR, b"\x00\x00\x00\x00") for pcr in range(8)],
]


def event_log(sequence: Sequence[BootEvent]) -> bytes:
    """The log a boot of ``sequence`` writes, without touching a TPM."""
    builder = EventLogBuilder()
    for event in sequence:
        _extend(builder, event)
    return builder.to_bytes()


def _extend(builder: EventLogBuilder, event: BootEvent) -> bytes:
    """Log ``event``; its SHA-256 digest, what the TPM's PCR is extended with."""
    pcr, kind, data, *measured = event
    return builder.extend(pcr, kind, data, measured=measured[0] if measured else None)["sha256"]


@dataclasses.dataclass
class Device:
    serial: str
    tpm: Swtpm
    log: bytes = b""

    @property
    def principal(self) -> Principal:
        return Principal(self.serial, Role.DEVICE, device_serial=self.serial)

    def boot(self, sequence: Sequence[BootEvent] = BOOT) -> None:
        """Extend the PCRs event by event, writing the log as a measured boot does."""
        builder = EventLogBuilder()
        with self.tpm.open() as rot:
            for event in sequence:
                value = TPMT_HA(hashAlg=TPM2_ALG.SHA256)
                value.digest.sha256 = _extend(builder, event)
                rot._tpm.esys.pcr_extend(ESYS_TR.PCR0 + event[0], TPML_DIGEST_VALUES([value]))
        self.log = builder.to_bytes()

    def evidence(
        self, nonce: bytes, pcrs: Sequence[int] = range(10), log: bytes | None = None
    ) -> AttestationEvidence:
        with self.tpm.open() as rot:
            return collect(rot, nonce, list(pcrs), self.log if log is None else log)


@dataclasses.dataclass
class Fleet:
    home: Path
    authority: Authority
    a: Device
    b: Device


def provision(home: Path, tpms: Sequence[Swtpm], ca: LocalCa) -> list[Device]:
    """A workspace at ``home`` whose product acme-gateway is one device per TPM, booted."""
    keyfab = Keyfab(home)
    assert keyfab("init", "--org", "Acme")[0] == 0
    recipe = home.parent / "recipe.toml"
    tctis = json.dumps([t.tcti for t in tpms])
    recipe.write_text(RECIPE.format(tctis=tctis, root=ca.root, issuer=ca.issuer))
    code, _, err = keyfab("provision", "-r", str(recipe), "--backend", "tpm2", "-n", str(len(tpms)))
    assert code == 0, err
    serials = sorted(d["serial"] for d in json.loads(keyfab("devices", "list", "--json")[1]))
    devices = [Device(serial, tpm) for serial, tpm in zip(serials, tpms, strict=True)]
    for device in devices:
        device.boot()
    return devices


def pcr_file(evidence: AttestationEvidence) -> bytes:
    """The reported PCRs as ``tpm2_quote -o`` writes them by default (tpm2-tools' "serialized"
    format: its in-memory TPML_PCR_SELECTION, a list count and TPML_DIGESTs, little-endian).

    Not the plain values with ``-l``: tpm2-tools 5.4 drops the 8th digest of each list there.
    """
    size = len(next(iter(evidence.pcrs.values())))
    alg = {32: 0x000B, 48: 0x000C, 64: 0x000D}[size]
    mask = sum(1 << i for i in evidence.pcrs).to_bytes(4, "little")
    selection = struct.pack("<IHB", 1, alg, 3) + mask + bytes(1)  # TPMS_PCR_SELECTION padded
    selection = selection.ljust(4 + 16 * 8, b"\0")  # TPM2_NUM_PCR_BANKS selections
    values = [v for _, v in sorted(evidence.pcrs.items())]
    lists = [values[i : i + 8] for i in range(0, len(values), 8)]
    out = selection + struct.pack("<I", len(lists))
    for digests in lists:
        body = b"".join(struct.pack("<H", len(d)) + d.ljust(64, b"\0") for d in digests)
        out += struct.pack("<I", len(digests)) + body.ljust(8 * 66, b"\0")
    return out


def checkquote(
    folder: Path,
    iak_certificate: bytes,
    evidence: AttestationEvidence,
    *,
    nonce: bytes | None = None,
) -> subprocess.CompletedProcess[str]:
    """``tpm2_checkquote`` on the evidence: signature under the IAK, the nonce, and (``-f``)
    the reported PCR values against the quote's PCR selection and digest."""
    key = x509.load_der_x509_certificate(iak_certificate).public_key()
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    files = {
        "key.pem": pem,
        "msg": evidence.quote,
        "sig": evidence.signature,
        "pcrs": pcr_file(evidence),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    qualification = (evidence.nonce if nonce is None else nonce).hex()
    return subprocess.run(
        [
            "tpm2_checkquote", "-u", str(folder / "key.pem"), "-m", str(folder / "msg"),
            "-s", str(folder / "sig"), "-g", "sha256", "-q", qualification,
            "-f", str(folder / "pcrs"),
        ],
        capture_output=True,
        text=True,
    )  # fmt: skip


Received = queue.Queue[dict[str, object]]


@contextlib.contextmanager
def webhook_receiver() -> Iterator[tuple[str, Received]]:
    """A loopback HTTP receiver: its URL and the JSON bodies POSTed to it."""
    received: Received = queue.Queue()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.put(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()
