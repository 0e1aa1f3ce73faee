"""Peak memory of streaming manifest verify and import, against a whole-file baseline.

Writes signed manifests of SMALL and LARGE entries with keyfab's own exporter,
then measures, each in a fresh process, the peak RSS of:

* ``verify``: keyfab's streaming verifier over the whole file;
* ``import``: verify + import into a fresh SQLite registry (one transaction);
* ``json.load``: the naive way, the file parsed whole (the baseline).

It prints the ratios LARGE/SMALL (flat memory means about 1.0) and the baseline
against streaming. Run: ``.venv/bin/python benchmarks/manifest.py [LARGE]``.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from keyfab import pki
from keyfab.manifest import EntrySigner, ManifestWriter, Organization, device_element

SMALL = 1_000
DISTINCT_KEYS = 64  # device keys are reused; every entry has its own certificate
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)

CHILD = r"""
import json, sys, time, warnings
from pathlib import Path
mode, manifest, signers, roots, home = sys.argv[1:6]
start = time.perf_counter()
if mode == "json.load":
    count = len(json.load(open(manifest, "rb")))
else:
    from keyfab.manifest import SignerSet, VerificationPolicy, load_certificates
    policy = VerificationPolicy(SignerSet.from_path(Path(signers)),
                                load_certificates(Path(roots)))
    if mode == "verify":
        from keyfab.manifest import verify_manifest
        with open(manifest, "rb") as stream:
            reports = verify_manifest(stream, policy)
            count = sum(1 for r in reports if r.ok)
    else:
        from keyfab.manifest import import_manifest
        from keyfab.registry import Registry
        registry = Registry.open(f"sqlite:///{home}/bench.db", create=True)
        with open(manifest, "rb") as stream:
            count = import_manifest(registry, stream, policy, "bench").imported
        registry.dispose()
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec from the parent.
peak = next(int(line.split()[1]) for line in open("/proc/self/status")
            if line.startswith("VmHWM:"))
print(json.dumps({"count": count, "seconds": time.perf_counter() - start, "peak_kib": peak}))
"""


def _pki(folder: Path) -> tuple[EntrySigner, pki.CertificateAuthority]:
    root = pki.CertificateAuthority.create_root(
        pki.root_ca("Bench", "Bench Root"), ec.generate_private_key(ec.SECP256R1()), now=T0
    )
    ca = root.create_subordinate(
        pki.manufacturing_ca("Bench", "Bench CA"), ec.generate_private_key(ec.SECP256R1()), now=T0
    )
    signer_key = ec.generate_private_key(ec.SECP256R1())
    signer = ca.issue(pki.manifest_signer("Bench", "Bench Signer"), signer_key.public_key(), now=T0)
    (folder / "signers").mkdir()
    (folder / "signers" / "signer.pem").write_bytes(signer.public_bytes(Encoding.PEM))
    (folder / "root.pem").write_bytes(root.certificate.public_bytes(Encoding.PEM))
    return EntrySigner(signer_key, signer), ca


def _write(path: Path, count: int, signer: EntrySigner, ca: pki.CertificateAuthority) -> None:
    org = Organization("Bench", "keyfab")
    keys = [ec.generate_private_key(ec.SECP256R1()).public_key() for _ in range(DISTINCT_KEYS)]
    with path.open("wb") as out, ManifestWriter(out) as writer:
        for n in range(count):
            identity = pki.DeviceIdentity(f"B{n}", "1.3.6.1.4.1.99999.1.1")
            chain = [
                ca.issue(pki.idevid(identity), keys[n % DISTINCT_KEYS], now=T0),
                ca.certificate,
            ]
            element = device_element(
                f"{n:018x}", [("0", chain)], T0 + datetime.timedelta(days=1), "B", "B-1", org
            )
            writer.write(signer.sign(element))


def _measure(mode: str, manifest: Path, folder: Path) -> dict[str, float]:
    home = Path(tempfile.mkdtemp(dir=folder))
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            mode,
            str(manifest),
            str(folder / "signers"),
            str(folder / "root.pem"),
            str(home),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    data: dict[str, float] = json.loads(result.stdout.splitlines()[-1])
    return data


def main() -> None:
    large = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        signer, ca = _pki(folder)
        files = {}
        for count in (SMALL, large):
            files[count] = folder / f"manifest-{count}.json"
            start = time.perf_counter()
            _write(files[count], count, signer, ca)
            print(
                f"wrote {count} entries, {files[count].stat().st_size / 1e6:.1f} MB "
                f"in {time.perf_counter() - start:.1f} s"
            )
        results = {}
        for mode in ("verify", "import", "json.load"):
            for count in (SMALL, large):
                r = _measure(mode, files[count], folder)
                results[mode, count] = r
                print(
                    f"{mode:9} {count:>7} entries: peak RSS {r['peak_kib'] / 1024:7.1f} MiB, "
                    f"{r['seconds']:6.1f} s ({r['count']} ok)"
                )
        for mode in ("verify", "import", "json.load"):
            ratio = results[mode, large]["peak_kib"] / results[mode, SMALL]["peak_kib"]
            print(f"ratio {mode:9} peak RSS {large}/{SMALL} entries: {ratio:.2f}")
        baseline = results["json.load", large]["peak_kib"]
        for mode in ("verify", "import"):
            print(
                f"ratio json.load/{mode} peak RSS at {large} entries: "
                f"{baseline / results[mode, large]['peak_kib']:.1f}"
            )


if __name__ == "__main__":
    main()
