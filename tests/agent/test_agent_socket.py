"""The agent's socket on a soft device: the calls, the file mode, who may call what,
oversized and broken requests, and one stalled caller not blocking the others."""

from __future__ import annotations

import os
import socket
import stat
import struct
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keyfab.agent import protocol
from keyfab.agent.client import AgentClient, AgentError
from keyfab.agent.peer import Peer
from keyfab.errors import ConfigError, KeyNotFoundError, VerificationError

from .conftest import StartAgent, peer_key

pytestmark = pytest.mark.filterwarnings("ignore::keyfab.rot.soft.SoftRotWarning")


def test_the_device_calls_through_the_socket(client: AgentClient) -> None:
    signature = client.sign("idevid", message=b"boot ok")
    public = serialization.load_der_public_key(client.public_key("idevid"))
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(signature, b"boot ok", ec.ECDSA(hashes.SHA256()))
    assert client.verify("idevid", signature, message=b"boot ok")
    assert not client.verify("idevid", signature, message=b"boot 0k")

    theirs, their_der = peer_key()
    ours = serialization.load_der_public_key(client.public_key("kex"))
    assert isinstance(ours, ec.EllipticCurvePublicKey)
    expected = HKDF(hashes.SHA256(), 48, salt=None, info=b"ctx").derive(
        theirs.exchange(ec.ECDH(), ours)
    )
    assert client.ecdh("kex", their_der, info=b"ctx", length=48) == expected

    assert len(client.random(32)) == 32
    assert client.random(32) != client.random(32)
    start = client.counter("fw")
    assert client.increment("fw") == start + 1
    blob = client.lock(b"database key")
    assert client.unlock(blob) == b"database key"
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    with pytest.raises(VerificationError, match="changed"):
        client.unlock(bytes(tampered))
    with pytest.raises(KeyNotFoundError):
        client.sign("nothing", message=b"x")
    with pytest.raises(ConfigError, match="message or a digest"):
        client.sign("idevid")
    with pytest.raises(ConfigError, match="integer from 1"):
        client.random(10**9)
    assert client.status()["refused"] is None


def test_socket_mode_and_group(start_agent: StartAgent) -> None:
    agent = start_agent('group = "nogroup"')
    mode = agent.settings.device.socket.stat()
    assert stat.S_IMODE(mode.st_mode) == 0o660
    assert mode.st_gid == 65534


def test_policy_refuses_per_call(start_agent: StartAgent) -> None:
    agent = start_agent('[agent]\nallow = { random = ["uid:4242"], status = ["*"] }')
    assert agent.server is not None
    stranger = Peer(pid=1, uid=4242, gid=4242)
    assert "ok" in agent.server.answer(stranger, {"call": "random", "args": {"n": 8}})
    refused = agent.server.answer(stranger, {"call": "sign", "args": {"label": "idevid"}})
    assert refused == {
        "error": "sign: not allowed for uid 4242 by the agent's policy",
        "kind": "PermissionDenied",
    }
    other = Peer(pid=1, uid=4343, gid=4343)
    assert "error" in agent.server.answer(other, {"call": "random", "args": {"n": 8}})
    assert "ok" in agent.server.answer(other, {"call": "status", "args": {}})


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to connect as another uid")
def test_another_uid_is_identified_by_the_kernel(start_agent: StartAgent) -> None:
    """A real process as nobody: SO_PEERCRED names it, the policy lets it draw random only."""
    agent = start_agent('group = "nogroup"\n[agent]\nallow = { random = ["user:nobody"] }')
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child drops to nobody, then calls; no exec (nobody cannot read the venv)
        os.close(read)
        lines = []
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            with AgentClient(agent.settings.device.socket, timeout=10) as c:
                lines.append(str(len(c.random(16))))
                try:
                    c.sign("idevid", message=b"x")
                except AgentError as error:
                    lines.append(f"AgentError {error}")
        except BaseException as error:  # report anything to the parent
            lines.append(repr(error))
        os.write(write, "\n".join(lines).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as source:
        output = source.read()
    os.waitpid(child, 0)
    assert output.splitlines() == [
        "16",
        "AgentError sign: not allowed for uid 65534 by the agent's policy",
    ]


def _raw(path: Path) -> socket.socket:
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.settimeout(30)
    connection.connect(str(path))
    return connection


def test_oversized_and_broken_requests(start_agent: StartAgent) -> None:
    agent = start_agent()
    path = agent.settings.device.socket
    with _raw(path) as connection:  # announces 3 GiB: refused from the header alone
        connection.sendall(struct.pack(">I", 3 << 30))
        with connection.makefile("rb") as reader:
            answer = protocol.receive(reader, protocol.MAX_ANSWER)
            assert answer["kind"] == "ProtocolError"
            assert "larger than" in answer["error"]
            assert reader.read(1) == b""  # and the connection is closed
    with _raw(path) as connection, connection.makefile("rb") as reader:
        for body, expected in [
            (b"not json", "not JSON"),
            (b"[1]", "a request is"),
            (b'{"call": "sign", "args": []}', "args must be an object"),
            (b'{"call": "nope"}', "no such call"),
            (b'{"call": "lock", "args": {"data": "text"}}', "must be bytes"),
        ]:
            connection.sendall(struct.pack(">I", len(body)) + body)
            answer = protocol.receive(reader, protocol.MAX_ANSWER)
            assert expected in answer["error"], answer
            if expected == "not JSON":
                break  # framing-level errors end the connection


def test_a_stalled_caller_blocks_nobody(start_agent: StartAgent) -> None:
    agent = start_agent()
    path = agent.settings.device.socket
    with _raw(path) as stalled:
        stalled.sendall(struct.pack(">I", 100) + b"{")  # and never the rest
        with AgentClient(path, timeout=10) as other:
            assert len(other.random(32)) == 32
            assert other.status()["refused"] is None


def test_no_agent_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(AgentError, match="cannot reach the agent"):
        AgentClient(tmp_path / "none.sock")


def test_a_file_in_the_way_is_not_replaced(start_agent: StartAgent, socket_dir: Path) -> None:
    (socket_dir / "agent.sock").write_text("precious")
    with pytest.raises(ConfigError, match="not a socket"):
        start_agent()
    assert (socket_dir / "agent.sock").read_text() == "precious"


def test_connections_beyond_the_limit_are_refused_in_one_line(start_agent: StartAgent) -> None:
    agent = start_agent("[agent]\nworkers = 1")
    path = agent.settings.device.socket
    with AgentClient(path) as first:
        assert len(first.random(8)) == 8  # holds the only slot
        with _raw(path) as second, second.makefile("rb") as reader:
            answer = protocol.receive(reader, protocol.MAX_ANSWER)
            assert answer == {
                "error": "too many connections to the agent",
                "kind": "OutOfServiceError",
            }
    deadline = time.monotonic() + 20  # the slot is free again once the first one's thread ends
    while (drawn := _random_or_refusal(path)) == "too many connections to the agent":
        assert time.monotonic() < deadline
        threading.Event().wait(0.01)
    assert isinstance(drawn, bytes)
    assert len(drawn) == 8


def _random_or_refusal(path: Path) -> bytes | str:
    try:
        with AgentClient(path) as client:
            return client.random(8)
    except AgentError as error:
        return str(error)
