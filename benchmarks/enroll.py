"""EST enrolment under load: ``keyfab serve`` against ``cfssl serve`` on the same CSRs.

64 concurrent clients (asyncio + httpx, keep-alive, TLS to both servers) send
the same set of P-256 CSRs to
* keyfab: ``POST /.well-known/est/simpleenroll`` (base64 PKCS#10 in, certs-only
  PKCS#7 out), 2 uvicorn workers, registry on a throw-away PostgreSQL, every
  certificate recorded with its device row and audit event;
* cfssl (Debian's golang-cfssl): ``POST /api/v1/cfssl/sign`` (JSON with the PEM
  CSR in, JSON with the PEM certificate out), signing with a P-256 CA key from
  a file, recording nothing.
Prints enrolments per second and p50/p99 latency for each, and the ratio.

    python benchmarks/enroll.py [--count N] [--clients C]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import functools
import ipaddress
import json
import multiprocessing
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.server.postgres
sys.path.insert(0, str(Path(__file__).resolve().parent))  # _procfs (this folder)

from _procfs import process_times

from keyfab.authority import Authority, Role, initialise
from keyfab.authority import tokens as store
from keyfab.rot.soft import SoftRotWarning
from keyfab.workspace import Workspace
from tests.server.postgres import Cluster, binaries

KEYFAB = Path(sys.executable).with_name("keyfab")
Send = Callable[[httpx.AsyncClient, int], Awaitable[None]]


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and all its descendants.

    On a machine shared with other work, wall-clock rates move with the load;
    server CPU per enrolment does not, so it is printed too.
    """
    times = process_times()
    parents = {child: t.parent for child, t in times.items()}
    wanted, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, up in parents.items() if up == parent]
        wanted.update(children)
        frontier += children
    return sum(times[p].own for p in wanted if p in times)


def measured(pid: int, run: Callable[[], dict[str, float]], count: int) -> dict[str, float]:
    before = tree_cpu(pid)
    result = run()
    result["cpu_ms"] = (tree_cpu(pid) - before) * 1e3 / count
    return result


def make_csrs(count: int) -> list[x509.CertificateSigningRequest]:
    csrs = []
    for i in range(count):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme"),
                x509.NameAttribute(NameOID.COMMON_NAME, "gateway"),
                x509.NameAttribute(NameOID.SERIAL_NUMBER, f"BENCH-{i:07d}"),
            ]
        )
        builder = x509.CertificateSigningRequestBuilder().subject_name(name)
        csrs.append(builder.sign(key, hashes.SHA256()))
    return csrs


def wait_ready(url: str, verify: ssl.SSLContext, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else "(see its log file)"
            raise SystemExit(f"server exited: {output!r}")
        try:
            httpx.get(url, verify=verify, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


async def load(
    base: str, verify: ssl.SSLContext, send: Send, indices: list[int], clients: int
) -> tuple[list[float], float]:
    """``count`` enrolments over ``clients`` concurrent keep-alive connections.

    Each client first enrols once untimed (TLS handshake, server warm-up), then
    the clock runs for the rest.
    """
    latencies: list[float] = []
    queue = iter(indices[clients:])
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, verify=verify, limits=limits, timeout=60) as client:

        async def once(index: int) -> None:
            try:
                await send(client, index)
            except httpx.RemoteProtocolError:  # a keep-alive connection the server just closed
                await send(client, index)

        async def worker() -> None:
            for index in queue:
                started = time.perf_counter()
                await once(index)
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(once(i) for i in indices[:clients]))  # one per connection
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return latencies, elapsed


def _client_process(
    base: str, cafile: str, make_send: Callable[[], Send], indices: list[int], clients: int
) -> tuple[list[float], float]:
    verify = ssl.create_default_context(cafile=cafile)
    return asyncio.run(load(base, verify, make_send(), indices, clients))


def fan_out(
    base: str, cafile: str, make_send: Callable[[], Send], count: int, args: argparse.Namespace
) -> dict[str, float]:
    """Split the clients over processes (one Python event loop cannot drive 64 TLS
    connections fast enough to load a Go server); merge their latencies."""
    procs = args.processes
    slices = [list(range(i, count, procs)) for i in range(procs)]
    with ProcessPoolExecutor(procs, mp_context=multiprocessing.get_context("fork")) as pool:
        results = list(
            pool.map(
                _client_process,
                [base] * procs,
                [cafile] * procs,
                [make_send] * procs,
                slices,
                [args.clients // procs] * procs,
            )
        )
    latencies = [lat for lats, _ in results for lat in lats]
    elapsed = max(e for _, e in results)
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "rate": len(latencies) / elapsed,
        "p50": quantiles[49] * 1e3,
        "p99": quantiles[98] * 1e3,
    }


def keyfab_send(csrs: list[bytes], token: str) -> Send:
    headers = {"Content-Type": "application/pkcs10", "Authorization": f"Bearer {token}"}

    async def send(client: httpx.AsyncClient, index: int) -> None:
        answer = await client.post(
            "/.well-known/est/simpleenroll", content=csrs[index], headers=headers
        )
        if answer.status_code != 200:
            raise SystemExit(f"keyfab answered {answer.status_code}: {answer.text}")

    return send


def cfssl_send(csrs: list[str]) -> Send:
    async def send(client: httpx.AsyncClient, index: int) -> None:
        answer = await client.post("/api/v1/cfssl/sign", json={"certificate_request": csrs[index]})
        if answer.status_code != 200 or not answer.json().get("success"):
            raise SystemExit(f"cfssl answered {answer.status_code}: {answer.text}")

    return send


def run_keyfab(
    folder: Path, csrs: list[x509.CertificateSigningRequest], args: argparse.Namespace
) -> dict[str, float]:
    bin_dir = binaries()
    if bin_dir is None:
        raise SystemExit("PostgreSQL is not installed (make setup installs it)")
    cluster = Cluster.start(bin_dir)
    process = None
    log = (folder / "serve.log").open("wb")  # a file, not a pipe: the access log never blocks
    try:
        url = cluster.create_database("bench")
        os.environ["KEYFAB_DATABASE_URL"] = url
        home = folder / "keyfab"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SoftRotWarning)
            initialise(Workspace(home), "Acme")
        with Authority.open(Workspace(home)) as authority:
            token = store.create(authority, "bench", Role.OPERATOR).secret
        port = free_port()
        process = subprocess.Popen(
            [str(KEYFAB), "--home", str(home), "serve", "--port", str(port), "--workers", "2"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        trust = home / "server" / "trust.pem"
        base = f"https://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while not trust.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        verify = ssl.create_default_context(cafile=str(trust))
        wait_ready(f"{base}/api/v1/health", verify, process)
        bodies = [base64.encodebytes(c.public_bytes(serialization.Encoding.DER)) for c in csrs]
        send = functools.partial(keyfab_send, bodies, token)
        return measured(
            process.pid, lambda: fan_out(base, str(trust), send, args.count, args), args.count
        )
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
        log.close()
        cluster.stop()


def _certificate(
    key: ec.EllipticCurvePrivateKey,
    subject: str,
    issuer: tuple[ec.EllipticCurvePrivateKey, str] | None = None,
) -> x509.Certificate:
    """A CA (self-signed, no issuer) or a TLS server certificate for 127.0.0.1."""
    signer, issuer_name = issuer or (key, subject)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=30))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
    else:
        address = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
        builder = builder.add_extension(x509.SubjectAlternativeName([address]), False)
    return builder.sign(signer, hashes.SHA256())


def _write_pair(
    folder: Path, name: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate
) -> None:
    (folder / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / f"{name}-key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )


def run_cfssl(
    folder: Path, csrs: list[x509.CertificateSigningRequest], args: argparse.Namespace
) -> dict[str, float]:
    cfssl = shutil.which("cfssl")
    if cfssl is None:
        raise SystemExit("cfssl is not installed (make setup installs golang-cfssl)")
    folder.mkdir()
    ca_key, tls_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    _write_pair(folder, "ca", ca_key, _certificate(ca_key, "cfssl bench CA"))
    _write_pair(
        folder, "tls", tls_key, _certificate(tls_key, "127.0.0.1", (ca_key, "cfssl bench CA"))
    )
    config = {
        "signing": {"default": {"expiry": "8760h", "usages": ["digital signature", "client auth"]}}
    }
    (folder / "config.json").write_text(json.dumps(config))
    port = free_port()
    process = subprocess.Popen(
        [cfssl, "serve", "-address", "127.0.0.1", "-port", str(port),
         "-ca", str(folder / "ca.pem"), "-ca-key", str(folder / "ca-key.pem"),
         "-config", str(folder / "config.json"),
         "-tls-cert", str(folder / "tls.pem"), "-tls-key", str(folder / "tls-key.pem"),
         "-loglevel", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        verify = ssl.create_default_context(cafile=str(folder / "ca.pem"))
        base = f"https://127.0.0.1:{port}"
        wait_ready(f"{base}/api/v1/cfssl/health", verify, process)
        bodies = [c.public_bytes(serialization.Encoding.PEM).decode() for c in csrs]
        send = functools.partial(cfssl_send, bodies)
        cafile = str(folder / "ca.pem")
        return measured(
            process.pid, lambda: fan_out(base, cafile, send, args.count, args), args.count
        )
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="enrolments per server")
    parser.add_argument("--clients", type=int, default=64, help="concurrent clients")
    parser.add_argument("--processes", type=int, default=4, help="client processes")
    args = parser.parse_args()
    print(f"generating {args.count} P-256 CSRs ...", flush=True)
    csrs = make_csrs(args.count)
    with tempfile.TemporaryDirectory() as tmp:
        cfssl = run_cfssl(Path(tmp) / "cfssl", csrs, args)
        keyfab = run_keyfab(Path(tmp), csrs, args)
    print(f"\n{args.count} enrolments, {args.clients} concurrent clients, TLS to both,", end=" ")
    print(f"{os.cpu_count()} cores")
    print(f"{'server':<42} {'enrol/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/enrol':>13}")
    for label, result in (
        ("keyfab serve (EST, 2 workers, PostgreSQL)", keyfab),
        ("cfssl serve (/api/v1/cfssl/sign, no DB)", cfssl),
    ):
        print(
            f"{label:<42} {result['rate']:>9.0f} {result['p50']:>8.1f} {result['p99']:>8.1f}"
            f" {result['cpu_ms']:>13.2f}"
        )
    print(f"keyfab / cfssl rate: {keyfab['rate'] / cfssl['rate']:.2f}x;", end=" ")
    print(f"server CPU per enrolment: {keyfab['cpu_ms'] / cfssl['cpu_ms']:.1f}x cfssl's")
    print("(keyfab's CPU excludes PostgreSQL's backends; cfssl records nothing)")


if __name__ == "__main__":
    main()
