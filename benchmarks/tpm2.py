"""TPM provisioning benchmark: keyfab's own time against the TPM's, in one run.

Starts one swtpm (EK certificates from a throw-away local CA), then provisions
devices on it, each one the full per-device TPM flow:

    open (flush leftovers, EK certificate + public, properties)
    IDevID generated in the TPM, CSR signed by it (TPM2_Sign)
    IAK created, TPM2_Certify of the IDevID with the CA's nonce
    CA: verify the evidence (EK chain, attributes, names, IAK signature),
        MakeCredential; device: ActivateCredential; CA: check the answer
    certificate written to NV and read back; close

Every TPM command goes through a timing TCTI (a Python TCTI wrapping the real
one), so the run measures, per device, the wall time of the flow and the sum of
the TPM command times inside it (send to response, as the host sees them). The
difference is keyfab's overhead: Python, tpm2-pytss marshalling and the CA's
checks. Keys are evicted between devices, outside the timed region.

    .venv/bin/python benchmarks/tpm2.py [--devices 50] [--algorithm ec-p256]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from tpm2_pytss import TCTILdr
from tpm2_pytss.TCTI import PyTCTI

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "tpm2"))
from conftest import make_local_ca, manufacture, start_swtpm

from keyfab.attest import attest_key
from keyfab.rot import KeyAlgorithm, KeySpec
from keyfab.rot.tpm2 import _device, open_device


class TimingTcti(PyTCTI):  # type: ignore[misc]
    """Forwards to a real TCTI and adds up the time each command spends in the TPM."""

    tpm_seconds = 0.0
    commands = 0

    def __init__(self, name: str, conf: str):
        super().__init__(max_size=4096)
        self._inner = TCTILdr(name, conf)
        self._sent = 0.0

    def do_transmit(self, command: bytes) -> None:
        self._sent = time.perf_counter()
        self._inner.transmit(command)

    def do_receive(self, timeout: int) -> bytes:
        response = bytes(self._inner.receive(timeout))
        TimingTcti.tpm_seconds += time.perf_counter() - self._sent
        TimingTcti.commands += 1
        return response

    def transmit(self, command: bytes) -> None:  # raw commands (leftover flush) too
        self.do_transmit(command)

    def receive(self, timeout: int = -1) -> bytes:
        return self.do_receive(timeout)

    def do_finalize(self) -> None:
        self._inner.finalize()

    def finalize(self) -> None:
        self.do_finalize()


class TssClock:
    """Adds up the wall time spent inside TSS (ESAPI) calls the driver makes."""

    seconds = 0.0
    original = _device.TpmConnection.call
    original_transact = _device.TpmConnection.transact

    @staticmethod
    def install() -> None:
        def timed(self: Any, what: str, function: Any, *args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return TssClock.original(self, what, function, *args, **kwargs)
            finally:
                TssClock.seconds += time.perf_counter() - start

        def timed_transact(self: Any, command: bytes) -> bytes:  # raw commands, no ESAPI
            start = time.perf_counter()
            try:
                return TssClock.original_transact(self, command)
            finally:
                TssClock.seconds += time.perf_counter() - start

        _device.TpmConnection.call = timed  # type: ignore[method-assign]
        _device.TpmConnection.transact = timed_transact  # type: ignore[method-assign]


def provision_one(options: dict[str, object], algorithm: KeyAlgorithm, policy: object) -> None:
    with open_device(options, 0) as device:
        key = device.generate_key("idevid", KeySpec(algorithm))
        subject = x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, device.info.unique_id[:16])])
        x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
        attest_key(device, "idevid", policy)  # type: ignore[arg-type]
        certificate = device.ek.certificate  # stands in for the issued IDevID certificate
        device.store_object("idevid-cert", certificate)
        assert device.load_object("idevid-cert") == certificate


def reset(options: dict[str, object]) -> None:
    with open_device(options, 0) as device:
        device.delete_key("idevid")
        device.delete_key("iak")
        device.delete_object("idevid-cert")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--algorithm", default="ec-p256", choices=[a.value for a in KeyAlgorithm])
    args = parser.parse_args()
    algorithm = KeyAlgorithm(args.algorithm)
    work = Path(tempfile.mkdtemp(prefix="keyfab-bench-tpm2-"))
    ca = make_local_ca(work / "ca")
    manufacture(work / "state", ca)
    swtpm = start_swtpm(work / "state", ca)
    TssClock.install()
    try:
        options: dict[str, object] = {"tcti": swtpm.tcti, "iak_algorithm": algorithm.value}
        policy = ca.policy()
        provision_one(options, algorithm, policy)  # warm-up: imports, first connection
        reset(options)
        plain, totals, tpm_times, tss_times, counts = [], [], [], [], []
        for _ in range(args.devices):
            # a plain device, then an instrumented one: both see the same machine load
            _device.TCTILdr = TCTILdr
            start = time.perf_counter()
            provision_one(options, algorithm, policy)
            plain.append(time.perf_counter() - start)
            reset(options)
            _device.TCTILdr = TimingTcti
            TimingTcti.tpm_seconds, TimingTcti.commands, TssClock.seconds = 0.0, 0, 0.0
            start = time.perf_counter()
            provision_one(options, algorithm, policy)
            totals.append(time.perf_counter() - start)
            tpm_times.append(TimingTcti.tpm_seconds)
            tss_times.append(TssClock.seconds)
            counts.append(TimingTcti.commands)
            reset(options)
    finally:
        swtpm.stop()
        shutil.rmtree(work, ignore_errors=True)
    report(args.devices, algorithm, totals, tpm_times, tss_times, counts)
    total, tpm = statistics.median(plain), statistics.median(tpm_times)
    outside = total - tpm
    print(f"  without the timing TCTI: {total * 1000:8.2f} ms total per device;")
    print(f"    keyfab + TSS = total - TPM = {outside * 1000:.2f} ms = {outside / total:.1%}")


def report(
    devices: int,
    algorithm: KeyAlgorithm,
    totals: list[float],
    tpm_times: list[float],
    tss_times: list[float],
    counts: list[int],
) -> None:
    """Medians per device; the parts add up to the total (TSS = ESAPI/pytss outside the TPM)."""
    total, tpm = statistics.median(totals), statistics.median(tpm_times)
    tss = max(statistics.median(tss_times) - tpm, 0.0)
    outside = total - tpm
    own = total - tpm - tss
    ms = 1000
    print(f"tpm2 provisioning, {devices} devices, {algorithm.value} IDevID and IAK, swtpm")
    print(f"  per device (median):  {total * ms:8.2f} ms total")
    print(f"  TPM commands:         {tpm * ms:8.2f} ms in {statistics.median(counts):.0f} commands")
    print(f"  TSS stack (ESAPI):    {tss * ms:8.2f} ms = {tss / total:6.1%} of the total")
    print(f"  keyfab's own code:    {own * ms:8.2f} ms = {own / total:6.1%} of the total")
    print(f"  all but the TPM:      {outside * ms:8.2f} ms = {outside / total:6.1%} of the total")
    print(f"  ratio total/TPM:      {total / tpm:8.2f}x")


if __name__ == "__main__":
    main()
