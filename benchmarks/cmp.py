"""CMP ``ir`` round trips: ``openssl cmp`` against ``keyfab serve``, and the same flow in-process.

Both sides run the same bootstrap flow on one throw-away workspace (SQLite
registry): an ``ir`` for a fresh P-256 key under a one-time secret,
PasswordBasedMac (500 iterations, what ``openssl cmp -secret`` sends),
implicit confirmation, every certificate recorded with its audit event.
* over HTTP: Debian's ``openssl cmp`` (one process per enrolment, as a plant
  script runs it) against ``keyfab serve --insecure-http`` on loopback, one
  at a time and ``--concurrent`` at once;
* in-process: ``Responder.handle`` on prepared DER requests (built by
  ``tests/server/cmp_client.py``, fresh transactionID and nonces each), no
  HTTP, no process start.
Prints round trips per second for each and the ratios, measured in one run.

    python benchmarks/cmp.py [--count N] [--concurrent C]
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.server

from keyfab.authority import Authority
from keyfab.cmp import identity, state
from keyfab.cmp.responder import Responder
from keyfab.rot.soft import SoftRotWarning
from keyfab.workspace import Workspace
from tests.server import cmp_client
from tests.server.conftest import Server, free_port, make_workspace

LIFETIME = datetime.timedelta(hours=1)


def secrets_for(authority: Authority, key: bytes, prefix: str, count: int) -> list[state.NewSecret]:
    """One one-time secret per enrolment, made before the clock runs."""
    return [
        state.create_secret(
            authority, key, f"{prefix}-{i:05d}", LIFETIME, needs_approval=False, by="bench"
        )
        for i in range(count)
    ]


def key_file(folder: Path, index: int) -> Path:
    path = folder / f"key-{index}.pem"
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    return path


def openssl_ir(port: int, secret: state.NewSecret, key: Path) -> None:
    done = subprocess.run(
        ["openssl", "cmp", "-server", f"127.0.0.1:{port}", "-path", ".well-known/cmp",
         "-cmd", "ir", "-ref", secret.reference, "-secret", f"pass:{secret.secret}",
         "-newkey", str(key), "-subject", "/CN=bench", "-implicit_confirm",
         "-certout", str(key.with_suffix(".crt"))],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"openssl cmp failed: {done.stdout}{done.stderr}")


def over_http(port: int, made: list[state.NewSecret], folder: Path, concurrent: int) -> float:
    """Round trips per second of ``openssl cmp`` processes, ``concurrent`` at a time."""
    keys = [key_file(folder, i) for i in range(len(made))]
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrent) as pool:
        list(pool.map(lambda pair: openssl_ir(port, *pair), zip(made, keys, strict=True)))
    return len(made) / (time.perf_counter() - started)


def in_process(responder: Responder, made: list[state.NewSecret]) -> float:
    """Round trips per second of ``Responder.handle`` on requests built before the clock."""
    requests = [
        cmp_client.mac_message(
            cmp_client.ir_body(ec.generate_private_key(ec.SECP256R1())),
            cmp_client.Pbm(secret.secret.encode()),
            secret.reference,
            implicit=True,
        )
        for secret in made
    ]
    started = time.perf_counter()
    for request in requests:
        answer = cmp_client.decode(responder.handle(request).der)
        if answer["body"].getName() != "ip":
            raise SystemExit(f"keyfab refused: {answer['body'].prettyPrint()}")
    return len(requests) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100, help="enrolments per measurement")
    parser.add_argument("--concurrent", type=int, default=4, help="openssl processes at once")
    args = parser.parse_args()
    warnings.simplefilter("ignore", SoftRotWarning)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        space = make_workspace(home)
        with Authority.open(Workspace(home)) as authority:
            identity.prepare(space, authority)
            responder = identity.responder(space, authority)
            batches = [secrets_for(authority, responder.mac_key, p, args.count) for p in "SCP"]
        server = Server(home, free_port(), tls=False, env={"KEYFAB_DATABASE_URL": ""}).start()
        try:
            sequential = over_http(server.port, batches[0], Path(tmp), 1)
            concurrent = over_http(server.port, batches[1], Path(tmp), args.concurrent)
        finally:
            server.stop()
        with Authority.open(Workspace(home)) as authority:
            direct = in_process(identity.responder(space, authority), batches[2])
    print(f"\nCMP ir (PBM, implicit confirmation), {args.count} enrolments each, SQLite registry")
    print(f"{'client':<48} {'ir/s':>8}")
    print(f"{'openssl cmp -> keyfab serve, sequential':<48} {sequential:>8.1f}")
    print(f"{f'openssl cmp -> keyfab serve, {args.concurrent} concurrent':<48} {concurrent:>8.1f}")
    print(f"{'Responder.handle in-process (no HTTP)':<48} {direct:>8.1f}")
    print(f"in-process / HTTP sequential: {direct / sequential:.2f}x;", end=" ")
    print(f"in-process / HTTP {args.concurrent} concurrent: {direct / concurrent:.2f}x")
    print("(each HTTP round trip includes starting an openssl process)")


if __name__ == "__main__":
    main()
