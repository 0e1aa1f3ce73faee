"""The library side of the socket: ``AgentClient`` has ``DeviceApi``'s calls.

One connection, reused for every call (one lock: requests on it go one at a
time; open more clients for parallel calls). Refusals come back as the same
exception classes the library raises, so callers need not care which they use.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from keyfab.agent import protocol
from keyfab.errors import (
    ConfigError,
    KeyfabError,
    KeyNotFoundError,
    RotError,
    UnsupportedError,
    VerificationError,
)
from keyfab.rot import KeyAlgorithm

DEFAULT_SOCKET = Path("/run/keyfab/agent.sock")


class AgentError(KeyfabError):
    """The agent refused the call (policy, tamper, out of service) or broke the protocol."""


_KINDS: dict[str, type[KeyfabError]] = {
    "ConfigError": ConfigError,
    "VerificationError": VerificationError,
    "KeyNotFoundError": KeyNotFoundError,
    "UnsupportedError": UnsupportedError,
    "RotError": RotError,
}


class AgentClient:
    """``keyfab agent``'s socket as a device API; a context manager."""

    def __init__(self, path: Path = DEFAULT_SOCKET, *, timeout: float | None = 60.0):
        self.path = path
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._socket.settimeout(timeout)
        try:
            self._socket.connect(str(path))
        except OSError as error:
            self._socket.close()
            raise AgentError(f"cannot reach the agent at {path}: {error.strerror}") from None
        self._reader = self._socket.makefile("rb")
        self._lock = threading.Lock()

    def call(self, name: str, /, **args: Any) -> Any:
        request = protocol.encode({"call": name, "args": args})
        with self._lock:
            try:
                self._socket.sendall(request)
                answer = protocol.receive(self._reader, protocol.MAX_ANSWER)
            except (OSError, protocol.ProtocolError) as error:
                raise AgentError(f"the agent at {self.path}: {error}") from None
        if not isinstance(answer, dict):
            raise AgentError(f"the agent at {self.path} closed the connection")
        if "error" in answer:
            kind = _KINDS.get(str(answer.get("kind")), AgentError)
            raise kind(str(answer["error"]))
        return answer.get("ok")

    def close(self) -> None:
        self._reader.close()
        self._socket.close()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # the DeviceApi calls ---------------------------------------------------------

    def sign(
        self, label: str, *, message: bytes | None = None, digest: bytes | None = None
    ) -> bytes:
        return self._bytes(self.call("sign", label=label, message=message, digest=digest))

    def verify(
        self,
        label: str,
        signature: bytes,
        *,
        message: bytes | None = None,
        digest: bytes | None = None,
    ) -> bool:
        return bool(
            self.call("verify", label=label, signature=signature, message=message, digest=digest)
        )

    def ecdh(
        self, label: str, peer_public_key: bytes, *, info: bytes = b"", length: int = 32
    ) -> bytes:
        return self._bytes(
            self.call("ecdh", label=label, peer=peer_public_key, info=info, length=length)
        )

    def random(self, n: int) -> bytes:
        return self._bytes(self.call("random", n=n))

    def counter(self, name: str) -> int:
        return int(self.call("counter", name=name))

    def increment(self, name: str) -> int:
        return int(self.call("increment", name=name))

    def public_key(self, label: str) -> bytes:
        return self._bytes(self.call("public_key", label=label))

    def certificate(self) -> list[bytes]:
        chain = self.call("certificate")
        if not isinstance(chain, list) or not all(isinstance(c, bytes) for c in chain):
            raise AgentError("the agent's certificate answer is not a list of DER certificates")
        return chain

    def lock(self, data: bytes) -> bytes:
        return self._bytes(self.call("lock", data=data))

    def unlock(self, blob: bytes) -> bytes:
        return self._bytes(self.call("unlock", blob=blob))

    def create_key(
        self, label: str, algorithm: KeyAlgorithm = KeyAlgorithm.EC_P256, *, agreement: bool = False
    ) -> bytes:
        return self._bytes(
            self.call("create_key", label=label, algorithm=algorithm.value, agreement=agreement)
        )

    def apply_policy(self, data: bytes) -> Path:
        return Path(str(self.call("apply_policy", policy=data)))

    def status(self) -> dict[str, Any]:
        answer = self.call("status")
        if not isinstance(answer, dict):
            raise AgentError("the agent's status is not an object")
        return answer

    def _bytes(self, value: Any) -> bytes:
        if not isinstance(value, bytes):
            raise AgentError("the agent answered something other than bytes")
        return value
