"""Device API benchmark: per call, the library against the raw hardware command, in one run.

For ``sign``, ``ecdh`` and ``unlock`` on swtpm and SoftHSM2 (and soft, library
only): the median and p99 of ``keyfab.device.DeviceApi`` calls, and of the same
operation sent raw (a pre-marshalled TPM2_Sign / TPM2_ECDH_ZGen straight
through the TCTI; python-pkcs11's sign / derive / AES-GCM decrypt on an open
session). The overhead column is library median / raw median - 1.

TPM ``unlock`` is a policy-session sequence (Load, LoadExternal,
VerifySignature, StartAuthSession, PolicyPCR, PolicyAuthorize, Unseal), so its
raw column is left empty rather than re-implementing the library.

The socket column is the same call through ``keyfab agent run`` (a real agent
process on the same device, one connection, started once the library is done
with the device: swtpm serves one connection at a time). Its overhead column
is socket median / raw median - 1. Last, ``random(32)`` calls per second
through the socket on the soft driver (one connection, sequential calls).

    .venv/bin/python benchmarks/device.py [--calls 300]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket as sockets
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
sys.path.insert(0, str(_HERE.parent))  # the repository: tests.tpm2 is a package
from keyfab.agent.client import AgentClient, AgentError  # noqa: E402
from keyfab.device import DeviceApi  # noqa: E402
from keyfab.device.policy import sign_policy  # noqa: E402
from tests.tpm2.conftest import make_local_ca, manufacture, start_swtpm  # noqa: E402

Samples = list[float]
Measured = dict[str, tuple[Samples, Samples | None]]  # call -> (library, raw)
SocketCalls = dict[str, Callable[[AgentClient], object]]

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


def _overhead(samples: Samples | None, raw: Samples | None) -> str:
    if not samples or not raw:
        return f"{'-':>7}"
    return f"{statistics.median(samples) / statistics.median(raw) - 1:+7.1%}"


def report(backend: str, measured: Measured, socket: dict[str, Samples]) -> None:
    for call, (library, raw) in measured.items():
        through = socket.get(call)
        print(
            f"{backend:8} {call:7} {stats(through)} {stats(library)} {stats(raw)} "
            f"{_overhead(through, raw)} {_overhead(library, raw)}"
        )


def through_agent(work: Path, config: str, calls: SocketCalls, n: int) -> dict[str, Samples]:
    """Run ``keyfab agent run`` on ``config`` and time ``calls`` through its socket."""
    socket = work / "agent.sock"
    path = work / "agent.toml"
    path.write_text(config + f'socket = "{socket}"\n')
    code = "from keyfab.cli import main; main()"
    with (work / "agent.log").open("ab") as log:
        agent = subprocess.Popen(
            [sys.executable, "-W", "ignore", "-c", code, "agent", "run", "--config", str(path)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        client = _connect(socket, agent)
        with client:
            return {call: timed(lambda c=call: calls[c](client), n) for call in calls}  # type: ignore[misc]
    finally:
        agent.terminate()
        agent.wait(timeout=30)


def _connect(socket: Path, agent: subprocess.Popen[bytes]) -> AgentClient:
    deadline = time.monotonic() + 60
    while True:
        if agent.poll() is not None:
            raise RuntimeError(f"keyfab agent exited with {agent.returncode}")
        try:
            return AgentClient(socket)
        except AgentError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # polling for the socket, not synchronisation


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
        measured: Measured = {
            "sign": (
                timed(lambda: device.sign("idevid", digest=digest), n),
                timed(lambda: transact(sign_cmd), n),
            ),
            "ecdh": (
                timed(lambda: device.ecdh("kex", peer_key), n),
                timed(lambda: transact(zgen_cmd), n),
            ),
        }
        locked = device.lock(b"x" * 32)
        measured["unlock"] = (timed(lambda: device.unlock(locked), max(n // 10, 10)), None)
        device.close()  # swtpm serves one connection: the agent's turn
        (work / "maker.pem").write_bytes(
            maker.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        config = (
            f'rot = "{tpm.uri}"\nstate_dir = "{work / "dev"}"\npcrs = [0, 7]\n'
            f'policy_key = "{work / "maker.pem"}"\n'
        )
        socket = through_agent(
            work,
            config,
            {
                "sign": lambda c: c.sign("idevid", digest=digest),
                "ecdh": lambda c: c.ecdh("kex", peer_key),
                "unlock": lambda c: c.unlock(locked),
            },
            n,
        )
        report("swtpm", measured, socket)
        with DeviceApi.open(tpm.uri, state_dir=work / "dev") as cleaner:
            cleaner.erase()
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

        measured: Measured = {
            "sign": (
                timed(lambda: device.sign("idevid", digest=digest), n),
                timed(lambda: signer.sign(digest, mechanism=Mechanism.ECDSA), n),
            ),
            "ecdh": (timed(lambda: device.ecdh("kex", peer_key), n), timed(raw_derive, n)),
            "unlock": (
                timed(lambda: device.unlock(locked), n),
                timed(
                    lambda: aes.decrypt(
                        payload[12:], mechanism=Mechanism.AES_GCM, mechanism_param=params
                    ),
                    n,
                ),
            ),
        }
    device.close()
    socket = through_agent(
        work,
        f'rot = "{uri}"\nstate_dir = "{work / "p11"}"\n',
        {
            "sign": lambda c: c.sign("idevid", digest=digest),
            "ecdh": lambda c: c.ecdh("kex", peer_key),
            "unlock": lambda c: c.unlock(locked),
        },
        n,
    )
    report("softhsm2", measured, socket)


def bench_soft(work: Path, n: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        device = DeviceApi.open(f"soft:{work / 'soft'}", state_dir=work / "s")
    device.create_key("idevid")
    device.create_key("kex", agreement=True)
    locked, peer_key = device.lock(b"x" * 32), peer()
    measured: Measured = {
        "sign": (timed(lambda: device.sign("idevid", message=b"m"), n), None),
        "ecdh": (timed(lambda: device.ecdh("kex", peer_key), n), None),
        "unlock": (timed(lambda: device.unlock(locked), n), None),
        "random": (timed(lambda: device.random(32), n), None),
    }
    device.close()
    calls: SocketCalls = {
        "sign": lambda c: c.sign("idevid", message=b"m"),
        "ecdh": lambda c: c.ecdh("kex", peer_key),
        "unlock": lambda c: c.unlock(locked),
        "random": lambda c: c.random(32),
    }
    config = f'rot = "soft:{work / "soft"}"\nstate_dir = "{work / "s"}"\n'
    socket = through_agent(work, config, calls, n)
    report("soft", measured, socket)
    burst = through_agent(work, config, {"random": lambda c: c.random(32)}, 20 * n)["random"]
    print(
        f"soft random(32) through the socket: {len(burst) / sum(burst):,.0f} calls/s "
        f"(one connection, {len(burst)} sequential calls)"
    )
    floor = echo_round_trips(work, 20 * n)
    print(
        f"floor: a bare Python echo between two processes on a Unix socket: median "
        f"{statistics.median(floor) * 1e6:.0f} us, {len(floor) / sum(floor):,.0f} round trips/s"
    )


ECHO = """
import socket, sys
listener = socket.socket(socket.AF_UNIX)
listener.bind(sys.argv[1]); listener.listen(1)
connection, _ = listener.accept()
while data := connection.recv(4096):
    connection.sendall(data)
"""


def echo_round_trips(work: Path, n: int) -> Samples:
    """What any Python agent pays per call before doing anything: two wake-ups and four
    system calls (the socket column's floor on this machine, measured in the same run)."""
    path = work / "echo.sock"
    server = subprocess.Popen([sys.executable, "-c", ECHO, str(path)])
    client = sockets.socket(sockets.AF_UNIX)
    try:
        deadline = time.monotonic() + 30
        while client.connect_ex(str(path)) != 0:  # not bound or not listening yet
            assert time.monotonic() < deadline, "the echo server did not start"
            time.sleep(0.01)  # polling for the socket, not synchronisation
        message = b"\0\0\0\x20" + b"x" * 32

        def once() -> None:
            client.sendall(message)
            client.recv(4096)

        return timed(once, n)
    finally:
        client.close()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    print(
        f"{'backend':8} {'call':7} {'socket med':>9} {'p99':>9} {'library':>9} {'p99':>9} "
        f"{'raw med':>9} {'p99':>9} {'sock/raw':>7} {'lib/raw':>7}"
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
