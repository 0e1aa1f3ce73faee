"""OCSP under load: ``keyfab serve`` against ``openssl ocsp -port`` (OpenSSL's responder).

Both answer for the same manufacturing CA and the same device certificates
(a batch provisioned here), signing with the same delegated OCSP signer
(the one keyfab issued); OpenSSL's ``index.txt`` is written from the registry.
Both run at once with ``--workers`` processes each (default: one per core):

* keyfab: ``keyfab serve --insecure-http --workers W`` (SQLite registry),
  answers pre-signed once per certificate and served from memory;
* OpenSSL: ``openssl ocsp -index index.txt -port P -rsigner ... -rkey ...
  -CA ... -nmin 60 -multi W``, signing every answer.

The load comes from ``wrk`` (C, epoll; Debian package ``wrk``): ``--clients``
connections for ``--duration`` seconds, replaying prepared RFC 5019 requests
(one SHA-1 CertID, no nonce) round-robin over the certificates, as POST
(``application/ocsp-request``) and as GET (base64 in the path), each over
kept-alive connections and with a new connection per request
(``Connection: close``, what OpenSSL's own client and nginx's stapling send).
Every request wrk sends was first checked byte for byte to get a good answer.
OpenSSL's responder is started afresh for each run: when a client closes a
connection on which it sent no request (as wrk does at the end of a run),
OpenSSL 3.0's responder process spins at 100% CPU and answers no one again
(openssl/openssl issues 23934 and 31129).
Prints responses/s, p50/p99 (wrk's latency distribution; the connect time of
a new connection is not in it, only in the rate) and the server's CPU per
response, for each server, and the ratio per configuration.

    python benchmarks/ocsp.py [--duration S] [--clients C] [--devices D] [--workers W]
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks.enroll

from benchmarks.enroll import tree_cpu
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

LUA = """\
local requests = {%s}
local count, next = #requests, 0
request = function()
  next = next %% count + 1
  return requests[next]
end
done = function(summary, latency, _)
  local e = summary.errors
  io.write(string.format("result %%d %%d %%d %%d %%d %%d\\n", summary.requests,
    summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""

CONFIGURATIONS = (
    ("POST", True),
    ("GET", True),
    ("POST", False),
    ("GET", False),
)
"""(method, keep-alive): the closing figure is the last POST one, what OpenSSL clients do."""


@dataclass(frozen=True)
class Server:
    """A running responder: its label, process, port and where its OCSP requests go."""

    label: str
    pid: int
    port: int
    path: str  # "/ocsp" for keyfab, "/" for OpenSSL


@dataclass(frozen=True)
class Result:
    rate: float
    p50_ms: float
    p99_ms: float
    cpu_us: float
    errors: int


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def raw_request(server: Server, method: str, der: bytes, keep_alive: bool) -> bytes:
    """The exact bytes of one HTTP/1.1 OCSP request (RFC 6960 appendix A.1)."""
    head = [f"Host: 127.0.0.1:{server.port}"]
    if method == "GET":
        target, body = f"{server.path.rstrip('/')}/{quote(base64.b64encode(der), safe='')}", b""
    else:
        target, body = server.path, der
        head += ["Content-Type: application/ocsp-request", f"Content-Length: {len(der)}"]
    if not keep_alive:
        head.append("Connection: close")
    lines = [f"{method} {target} HTTP/1.1", *head, "", ""]
    return "\r\n".join(lines).encode() + body


def exchange(port: int, request: bytes) -> bytes:
    """Send a ``Connection: close`` request on a fresh connection; the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(request)
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def check(answer: bytes) -> None:
    """The answer is a 200 with a successful OCSP response saying good."""
    head, _, body = answer.partition(b"\r\n\r\n")
    if not head.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200")):
        raise SystemExit(f"answer: {head[:200]!r}")
    response = ocsp.load_der_ocsp_response(body)
    if response.certificate_status is not ocsp.OCSPCertStatus.GOOD:
        raise SystemExit(f"status: {response.certificate_status}")


def wait_ready(server: Server, der: bytes, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited {process.returncode}: {log.read_text()[-2000:]}")
        try:
            check(exchange(server.port, raw_request(server, "POST", der, keep_alive=False)))
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{server.label} did not come up on port {server.port}")


def lua_script(requests: list[bytes]) -> str:
    """A wrk script replaying ``requests`` round-robin (bytes as Lua decimal escapes)."""
    strings = ('"' + "".join(f"\\{byte}" for byte in r) + '"' for r in requests)
    return LUA % ",\n".join(strings)


def run_wrk(server: Server, script: Path, args: argparse.Namespace, seconds: float) -> Result:
    """One wrk run against ``server``, with the server's CPU over the same interval."""
    cpu = tree_cpu(server.pid)
    finished = subprocess.run(
        ["wrk", "-t", str(args.threads), "-c", str(args.clients), "-d", f"{seconds}s",
         "--timeout", "5s", "-s", str(script), f"http://127.0.0.1:{server.port}/"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    used = tree_cpu(server.pid) - cpu
    line = next((x for x in finished.stdout.splitlines() if x.startswith("result ")), None)
    if line is None:
        raise SystemExit(f"wrk printed no result: {finished.stdout}{finished.stderr}")
    count, micros, errors, status, p50, p99 = (int(x) for x in line.split()[1:])
    return Result(count / (micros / 1e6), p50 / 1e3, p99 / 1e3, used * 1e6 / max(count, 1),
                  errors + status)  # fmt: skip


def measure(
    server: Server, method: str, keep_alive: bool, requests: list[bytes], args: argparse.Namespace
) -> Result:
    """One configuration against one server, each request checked once beforehand."""
    for der in requests:
        check(exchange(server.port, raw_request(server, method, der, keep_alive=False)))
    script = args.folder / f"{server.label}-{method}-{keep_alive}.lua"
    script.write_text(lua_script([raw_request(server, method, d, keep_alive) for d in requests]))
    if server.label == "keyfab":  # every worker signs and caches its answers first
        run_wrk(server, script, args, 1)
    return run_wrk(server, script, args, args.duration)


def index_line(certificate: x509.Certificate) -> str:
    """One ``openssl ca`` index.txt line (status V: every benchmark certificate is good)."""
    expiry = certificate.not_valid_after_utc.strftime("%Y%m%d%H%M%SZ")
    subject = "".join(f"/{a.rfc4514_string()}" for a in certificate.subject)
    return f"V\t{expiry}\t\t{certificate.serial_number:X}\tunknown\t{subject}\n"


def prepare(folder: Path, devices: int) -> tuple[Workspace, list[bytes]]:
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
    return space, requests


@contextmanager
def keyfab_server(space: Workspace, args: argparse.Namespace, der: bytes) -> Iterator[Server]:
    log_path = space.home.parent / "serve.log"
    with log_path.open("wb") as log:
        port = free_port()
        process = subprocess.Popen(
            [str(KEYFAB), "--home", str(space.home), "serve", "--insecure-http",
             "--port", str(port), "--workers", str(args.workers)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            server = Server("keyfab", process.pid, port, "/ocsp")
            wait_ready(server, der, process, log_path)
            yield server
        finally:
            process.terminate()
            process.wait(timeout=30)


@contextmanager
def openssl_server(space: Workspace, args: argparse.Namespace, der: bytes) -> Iterator[Server]:
    folder, signer = space.home.parent, space.home / "ocsp"
    with (folder / "openssl.log").open("wb") as log:
        port = free_port()
        process = subprocess.Popen(
            ["openssl", "ocsp", "-index", str(folder / "index.txt"), "-port", str(port),
             "-rsigner", str(signer / "manufacturing.pem"),
             "-rkey", str(signer / "manufacturing.key"), "-CA", str(folder / "ca.pem"),
             "-nmin", "60", "-multi", str(args.workers), "-ignore_err"],
            stdout=log, stderr=subprocess.STDOUT, process_group=0,
        )  # fmt: skip
        try:
            server = Server("openssl", process.pid, port, "/")
            wait_ready(server, der, process, folder / "openssl.log")
            yield server
        finally:  # -multi's parent does not pass SIGTERM on: stop its whole process group
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)


def report(args: argparse.Namespace, results: dict[tuple[str, str, bool], Result]) -> None:
    print(f"\nOCSP, RFC 5019 requests (no nonce) over {args.devices} certificates: wrk "
          f"-t{args.threads} -c{args.clients} -d{args.duration}s, {args.workers} worker "
          f"process(es) per server, {os.cpu_count()} cores shared with wrk")  # fmt: skip
    print(f"{'request':<8} {'connection':<11} {'server':<8} {'resp/s':>8} {'p50 ms':>7}"
          f" {'p99 ms':>7} {'CPU us/resp':>11} {'errors':>6}  keyfab/openssl")  # fmt: skip
    for method, keep_alive in CONFIGURATIONS:
        connection = "keep-alive" if keep_alive else "new each"
        for label in ("keyfab", "openssl"):
            r = results[label, method, keep_alive]
            print(
                f"{method:<8} {connection:<11} {label:<8} {r.rate:>8.0f} {r.p50_ms:>7.2f}"
                f" {r.p99_ms:>7.2f} {r.cpu_us:>11.0f} {r.errors:>6}",
                end="\n" if label == "keyfab" else "",
            )
        ratio = (
            results["keyfab", method, keep_alive].rate / results["openssl", method, keep_alive].rate
        )
        print(f"  {ratio:.2f}x")
    closing = results["keyfab", "POST", False], results["openssl", "POST", False]
    print(f"closing figure (POST, a new connection per request, as OpenSSL's client and nginx "
          f"send): {closing[0].rate / closing[1].rate:.2f}x OpenSSL's rate, keyfab p99 "
          f"{closing[0].p99_ms:.1f} ms")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--clients", type=int, default=32, help="concurrent connections")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="wrk threads")
    parser.add_argument("--devices", type=int, default=100, help="certificates asked about")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="server processes, both servers"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("benchmarks/ocsp.py skipped: wrk is not installed (Debian package wrk)")
        return
    results: dict[tuple[str, str, bool], Result] = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        args.folder = Path(tmp)
        space, requests = prepare(args.folder, args.devices)
        from keyfab.authority import Authority
        from keyfab.authority.ocsp import Responder

        with Authority.open(space) as authority:  # issue the delegated signer both will use
            Responder.open(authority, space.home)
        keyfab = stack.enter_context(keyfab_server(space, args, requests[0]))
        for method, keep_alive in CONFIGURATIONS:
            results["keyfab", method, keep_alive] = measure(
                keyfab, method, keep_alive, requests, args
            )
            with openssl_server(space, args, requests[0]) as openssl:  # a fresh one each time
                results["openssl", method, keep_alive] = measure(
                    openssl, method, keep_alive, requests, args
                )
    report(args, results)


if __name__ == "__main__":
    main()
