"""OCSP under load: ``keyfab serve`` against ``openssl ocsp -port`` (OpenSSL's responder).

Both answer for the same manufacturing CA and the same device certificates
(a batch provisioned here), signing with the same delegated OCSP signer
(the one keyfab issued); OpenSSL's ``index.txt`` is written from the registry.
``--clients`` concurrent clients (threads over ``--processes`` processes)
POST the same prepared RFC 5019 requests (one CertID, no nonce), one request
per connection as OCSP clients do, over plain HTTP on loopback:

* keyfab: ``keyfab serve --insecure-http --workers W`` (SQLite registry),
  answers pre-signed once per certificate and served from memory;
* OpenSSL: ``openssl ocsp -index index.txt -port P -rsigner ... -rkey ...
  -CA ... -nmin 60 -multi W`` (W responder processes), signing every answer.

Prints responses/s and p50/p99 latency for each, and the ratio.

    python benchmarks/ocsp.py [--count N] [--clients C] [--devices D] [--workers W]
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks.enroll

from benchmarks.enroll import tree_cpu
from keyfab import pki
from keyfab.authority import initialise
from keyfab.registry import queries
from keyfab.rot.soft import SoftRotWarning
from keyfab.workspace import Workspace

KEYFAB = Path(sys.executable).with_name("keyfab")
RECIPE = """\
[product]
name = "bench"
organization = "Acme"
hw_type = "1.3.6.1.4.1.99999.1.1"
serial = "OCSP-{seq:06d}"

[rot]
driver = "soft"
path = "{home}/devices/{batch}/{slot:06d}"

[[keys]]
label = "idevid"
algorithm = "ec-p256"
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def http_post(port: int, path: str, body: bytes) -> bytes:
    """One HTTP/1.0 POST on a fresh connection; the whole answer (the server closes)."""
    head = (
        f"POST {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/ocsp-request\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(head + body)
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


class KeepAlive:
    """One client's HTTP/1.1 connection, kept open while the server allows (RFC 5019 clients
    reuse theirs); opened again whenever the server closes it."""

    def __init__(self, port: int, path: str):
        self.port, self.path = port, path
        self.connection: socket.socket | None = None
        self.reader: io.BufferedReader | None = None

    def post(self, body: bytes) -> bytes:
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            "Connection: keep-alive\r\n"
            f"Content-Type: application/ocsp-request\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        for _ in range(2):
            if self.connection is None:
                self.connection = socket.create_connection(("127.0.0.1", self.port), timeout=30)
                self.reader = self.connection.makefile("rb")
            try:
                self.connection.sendall(head + body)
                return self._read()
            except (OSError, EOFError):
                self.close()
        raise SystemExit("the server closed the connection twice in a row")

    def _read(self) -> bytes:
        reader = self.reader
        assert reader is not None  # post() opened it
        status = reader.readline()
        if not status:
            raise EOFError
        lines, length, close = [status], 0, False
        while (line := reader.readline()) not in (b"\r\n", b""):
            lines.append(line)
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            if name.lower() == "connection" and "close" in value.lower():
                close = True
        answer = b"".join(lines) + b"\r\n" + reader.read(length)
        if close or status.startswith(b"HTTP/1.0"):
            self.close()
        return answer

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
        self.connection = None


def check(answer: bytes) -> None:
    """The answer is a 200 with a successful OCSP response saying good."""
    head, _, body = answer.partition(b"\r\n\r\n")
    if not head.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200")):
        raise SystemExit(f"answer: {head[:200]!r}")
    response = ocsp.load_der_ocsp_response(body)
    if response.certificate_status is not ocsp.OCSPCertStatus.GOOD:
        raise SystemExit(f"status: {response.certificate_status}")


def wait_ready(
    port: int, path: str, body: bytes, process: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited {process.returncode}: {log.read_text()[-2000:]}")
        try:
            check(http_post(port, path, body))
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"port {port} did not come up")


def _client_process(
    port: int, path: str, requests: list[bytes], count: int, threads: int, keep_alive: bool
) -> tuple[list[float], float]:
    latencies: list[float] = []
    lock = threading.Lock()
    remaining = iter(range(count))

    def worker() -> None:
        mine = []
        client = KeepAlive(port, path) if keep_alive else None
        for index in remaining:  # next() on a shared iterator is atomic under the GIL
            body = requests[index % len(requests)]
            started = time.perf_counter()
            answer = http_post(port, path, body) if client is None else client.post(body)
            mine.append(time.perf_counter() - started)
            if index % 97 == 0:
                check(answer)
        with lock:
            latencies.extend(mine)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    started = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return latencies, time.perf_counter() - started


def load(
    pid: int, port: int, path: str, requests: list[bytes], args: argparse.Namespace
) -> dict[str, float]:
    """``args.count`` requests from ``args.clients`` threads spread over processes.

    The server's CPU per response is measured too: on a shared machine the
    rates move with the load, CPU per response much less.
    """
    cpu = tree_cpu(pid)
    procs = args.processes
    with ProcessPoolExecutor(procs, mp_context=multiprocessing.get_context("fork")) as pool:
        results = list(
            pool.map(
                _client_process,
                [port] * procs,
                [path] * procs,
                [requests] * procs,
                [args.count // procs] * procs,
                [args.clients // procs] * procs,
                [args.keep_alive] * procs,
            )
        )
    latencies = [lat for lats, _ in results for lat in lats]
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "rate": len(latencies) / max(e for _, e in results),
        "p50": quantiles[49] * 1e3,
        "p99": quantiles[98] * 1e3,
        "cpu_us": (tree_cpu(pid) - cpu) * 1e6 / len(latencies),
    }


def index_line(certificate: x509.Certificate) -> str:
    """One ``openssl ca`` index.txt line (status V: every benchmark certificate is good)."""
    expiry = certificate.not_valid_after_utc.strftime("%Y%m%d%H%M%SZ")
    subject = "".join(f"/{a.rfc4514_string()}" for a in certificate.subject)
    return f"V\t{expiry}\t\t{certificate.serial_number:X}\tunknown\t{subject}\n"


def prepare(folder: Path, devices: int) -> tuple[Workspace, list[bytes], int]:
    """A workspace with a provisioned batch, its OCSP signer, index.txt and the requests."""
    home = folder / "home"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SoftRotWarning)
        initialise(Workspace(home), "Acme")
    (folder / "recipe.toml").write_text(RECIPE)
    subprocess.run(
        [str(KEYFAB), "--home", str(home), "provision", "-r", str(folder / "recipe.toml"),
         "-n", str(devices), "-b", "bench", "--json"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    space = Workspace(home)
    with space.registry() as registry:
        ca = x509.load_der_x509_certificate(
            queries.authorities(registry)["manufacturing"].certificate
        )
        certificates = [
            x509.load_der_x509_certificate(row.der)
            for _, row in queries.batch_certificates(registry, "bench")
        ]
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    with (folder / "index.txt").open("w") as index:
        index.writelines(index_line(c) for c in certificates)
    requests = [
        ocsp.OCSPRequestBuilder()
        .add_certificate(c, ca, hashes.SHA1())  # what OpenSSL clients send
        .build()
        .public_bytes(serialization.Encoding.DER)
        for c in certificates
    ]
    return space, requests, len(certificates)


def run_keyfab(
    space: Workspace, requests: list[bytes], args: argparse.Namespace
) -> dict[str, float]:
    port = free_port()
    log = (space.home.parent / "serve.log").open("wb")
    process = subprocess.Popen(
        [str(KEYFAB), "--home", str(space.home), "serve", "--insecure-http", "--port", str(port),
         "--workers", str(args.workers)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_ready(port, "/ocsp", requests[0], process, space.home.parent / "serve.log")
        for body in requests:  # warm every worker's cache (each worker signs once per CertID)
            for _ in range(args.workers * 2):
                check(http_post(port, "/ocsp", body))
        return load(process.pid, port, "/ocsp", requests, args)
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def run_openssl(
    space: Workspace, requests: list[bytes], args: argparse.Namespace
) -> dict[str, float]:
    folder, signer = space.home.parent, space.home / "ocsp"
    port = free_port()
    log = (folder / "openssl.log").open("wb")
    process = subprocess.Popen(
        ["openssl", "ocsp", "-index", str(folder / "index.txt"), "-port", str(port),
         "-rsigner", str(signer / "manufacturing.pem"), "-rkey", str(signer / "manufacturing.key"),
         "-CA", str(folder / "ca.pem"), "-nmin", "60", "-multi", str(args.workers),
         "-ignore_err"],
        stdout=log, stderr=subprocess.STDOUT, process_group=0,
    )  # fmt: skip
    try:
        wait_ready(port, "/", requests[0], process, folder / "openssl.log")
        return load(process.pid, port, "/", requests, args)
    finally:  # -multi's parent does not pass SIGTERM on: stop its whole process group
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20000, help="requests per server")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients")
    parser.add_argument("--processes", type=int, default=4, help="client processes")
    parser.add_argument("--devices", type=int, default=100, help="certificates asked about")
    parser.add_argument("--workers", type=int, default=2, help="server processes, both servers")
    parser.add_argument(
        "--keep-alive", action="store_true", help="HTTP/1.1 persistent connections where allowed"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        space, requests, devices = prepare(Path(tmp), args.devices)
        from keyfab.authority import Authority
        from keyfab.authority.ocsp import Responder

        with Authority.open(space) as authority:  # issue the delegated signer both will use
            Responder.open(authority, space.home)
        keyfab = run_keyfab(space, requests, args)
        openssl = run_openssl(space, requests, args)
    connections = "persistent connections" if args.keep_alive else "one connection each"
    print(f"\n{args.count} OCSP requests (no nonce, {connections}) over {devices}", end=" ")
    print(f"certificates, {args.clients} concurrent clients, {os.cpu_count()} cores")
    print(f"{'server':<52} {'resp/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/resp':>12}")
    for label, result in (
        (f"keyfab serve --insecure-http --workers {args.workers}", keyfab),
        (f"openssl ocsp -index -nmin 60 -multi {args.workers}", openssl),
    ):
        print(
            f"{label:<52} {result['rate']:>8.0f} {result['p50']:>8.1f} {result['p99']:>8.1f}"
            f" {result['cpu_us']:>12.0f}"
        )
    print(f"keyfab / openssl rate: {keyfab['rate'] / openssl['rate']:.2f}x")
    print(f"({pki.Profile.OCSP_SIGNER} signer shared by both; clients on the same machine)")


if __name__ == "__main__":
    main()
