"""Device API benchmark: per call, the library against the raw hardware command, in one run.

For ``sign``, ``ecdh`` and ``unlock`` on swtpm and SoftHSM2 (and soft, library
only): the median and p99 of ``keyfab.device.DeviceApi`` calls, and of the same
operation sent raw (a pre-marshalled TPM2_Sign / TPM2_ECDH_ZGen straight
through the TCTI; python-pkcs11's sign / derive / AES-GCM decrypt on an open
session). The overhead column is library median / raw median - 1.

TPM ``unlock`` is a policy-session sequence (Load, LoadExternal,
VerifySignature, StartAuthSession, PolicyPCR, PolicyAuthorize, Unseal), so its
raw column is left empty rather than re-implementing the library.

The socket column is the agent's (``keyfab agent``): set ``SOCKET_TIMER`` to a
function (backend, call) -> list of seconds, or None, and it is printed beside.

    .venv/bin/python benchmarks/device.py [--calls 300]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]  # ./pkcs11.py shadows
sys.path.insert(0, str(_HERE.parent / "tests" / "tpm2"))
from conftest import make_local_ca, manufacture, start_swtpm  # noqa: E402

from keyfab.device import DeviceApi  # noqa: E402
from keyfab.device.policy import sign_policy  # noqa: E402

SOCKET_TIMER: Callable[[str, str], list[float] | None] | None = None
"""The agent helper's hook: time the same call through the Unix socket."""

SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "1234"


def timed(call: Callable[[], object], n: int) -> list[float]:
    call()  # warm: first-use work (key lookups, sessions) is not per call
    out = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        out.append(time.perf_counter() - start)
    return out


def stats(samples: list[float] | None) -> str:
    if not samples:
        return f"{'-':>9} {'-':>9}"
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return f"{statistics.median(ordered) * 1e3:8.3f}m {p99 * 1e3:8.3f}m"


def row(backend: str, call: str, library: list[float], raw: list[float] | None) -> None:
    socket = SOCKET_TIMER(backend, call) if SOCKET_TIMER else None
    overhead = (
        f"{statistics.median(library) / statistics.median(raw) - 1:+7.1%}" if raw else "      -"
    )
    print(f"{backend:8} {call:7} {stats(socket)} {stats(library)} {stats(raw)} {overhead}")


def peer() -> bytes:
    return (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def spki(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def bench_tpm(work: Path, n: int) -> None:
    from keyfab.rot.soft import _wrap
    from keyfab.rot.tpm2 import _seal
    from keyfab.rot.tpm2._raw import PASSWORD_AUTH, ST_SESSIONS, b, command

    ca = make_local_ca(work / "ca")
    manufacture(work / "state", ca)
    tpm = start_swtpm(work / "state", ca)
    maker = ec.generate_private_key(ec.SECP256R1())
    pcrs = (0, 7)
    try:
        device = DeviceApi.open(tpm.uri, state_dir=work / "dev", pcrs=pcrs, policy_key=spki(maker))
        device.create_key("idevid")
        device.create_key("kex", agreement=True)
        values = _seal.read_pcrs(device.rot._tpm, "sha256", pcrs)  # type: ignore[attr-defined]
        device.apply_policy(
            sign_policy(_wrap("maker", maker), "sha256", dict(zip(pcrs, values, strict=True)))
        )
        digest, peer_key = os.urandom(32), peer()
        transact = device.rot._tpm.transact  # type: ignore[attr-defined]
        handle = device.rot.options.key_handle("idevid")  # type: ignore[attr-defined]
        kex = device.rot.options.key_handle("kex")  # type: ignore[attr-defined]
        sign_cmd = command(
            ST_SESSIONS,
            0x15D,
            struct.pack(">I", handle),
            PASSWORD_AUTH,
            b(digest)
            + struct.pack(">HH", 0x0018, 0x000B)
            + struct.pack(">HI", 0x8024, 0x40000007)
            + b(b""),
        )
        point = serialization.load_der_public_key(peer_key).public_numbers()  # type: ignore[union-attr]
        zgen_cmd = command(
            ST_SESSIONS,
            0x154,
            struct.pack(">I", kex),
            PASSWORD_AUTH,
            b(b(point.x.to_bytes(32, "big")) + b(point.y.to_bytes(32, "big"))),
        )
        row(
            "swtpm",
            "sign",
            timed(lambda: device.sign("idevid", digest=digest), n),
            timed(lambda: transact(sign_cmd), n),
        )
        row(
            "swtpm",
            "ecdh",
            timed(lambda: device.ecdh("kex", peer_key), n),
            timed(lambda: transact(zgen_cmd), n),
        )
        locked = device.lock(b"x" * 32)
        row("swtpm", "unlock", timed(lambda: device.unlock(locked), max(n // 10, 10)), None)
        device.erase()
        device.close()
    finally:
        tpm.stop()


def bench_pkcs11(work: Path, n: int) -> None:
    import pkcs11
    from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

    tokens = work / "tokens"
    tokens.mkdir(parents=True)
    conf = work / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            "bench",
            "--so-pin",
            "0000",
            "--pin",
            PIN,
        ],
        check=True,
        capture_output=True,
    )
    uri = f"pkcs11:token=bench?module-path={SOFTHSM}&pin-value={PIN}"
    device = DeviceApi.open(uri, state_dir=work / "p11")
    device.create_key("idevid")
    device.create_key("kex", agreement=True)
    locked = device.lock(b"x" * 32)
    digest, peer_key = os.urandom(32), peer()
    token = pkcs11.lib(SOFTHSM).get_token(token_label="bench")
    with token.open() as session:  # the library logged this process in already
        signer = session.get_key(ObjectClass.PRIVATE_KEY, label="idevid")
        deriver = session.get_key(ObjectClass.PRIVATE_KEY, label="kex")
        aes = session.get_key(ObjectClass.SECRET_KEY, label="keyfab-seal")
        point = serialization.load_der_public_key(peer_key).public_bytes(  # type: ignore[union-attr]
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        payload = locked[42:]
        params = pkcs11.GCMParams(payload[:12], locked[:38], 128)

        def raw_derive() -> None:
            deriver.derive_key(
                KeyType.GENERIC_SECRET,
                256,
                mechanism=Mechanism.ECDH1_DERIVE,
                mechanism_param=(pkcs11.KDF.NULL, None, point),
                template={
                    Attribute.TOKEN: False,
                    Attribute.SENSITIVE: False,
                    Attribute.EXTRACTABLE: True,
                },
            )[Attribute.VALUE]

        row(
            "softhsm2",
            "sign",
            timed(lambda: device.sign("idevid", digest=digest), n),
            timed(lambda: signer.sign(digest, mechanism=Mechanism.ECDSA), n),
        )
        row(
            "softhsm2", "ecdh", timed(lambda: device.ecdh("kex", peer_key), n), timed(raw_derive, n)
        )
        row(
            "softhsm2",
            "unlock",
            timed(lambda: device.unlock(locked), n),
            timed(
                lambda: aes.decrypt(
                    payload[12:], mechanism=Mechanism.AES_GCM, mechanism_param=params
                ),
                n,
            ),
        )
    device.close()


def bench_soft(work: Path, n: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        device = DeviceApi.open(f"soft:{work / 'soft'}", state_dir=work / "s")
    device.create_key("idevid")
    device.create_key("kex", agreement=True)
    locked, peer_key = device.lock(b"x" * 32), peer()
    row("soft", "sign", timed(lambda: device.sign("idevid", message=b"m"), n), None)
    row("soft", "ecdh", timed(lambda: device.ecdh("kex", peer_key), n), None)
    row("soft", "unlock", timed(lambda: device.unlock(locked), n), None)
    row("soft", "random", timed(lambda: device.random(32), n), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    print(
        f"{'backend':8} {'call':7} {'socket med':>9} {'p99':>9} {'library':>9} {'p99':>9} "
        f"{'raw med':>9} {'p99':>9} overhead"
    )
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        if shutil.which("swtpm"):
            bench_tpm(work / "tpm", args.calls)
        if Path(SOFTHSM).exists():
            bench_pkcs11(work / "pkcs11", args.calls)
        bench_soft(work / "soft", args.calls)


if __name__ == "__main__":
    main()
