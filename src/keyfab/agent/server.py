"""The Unix socket: bind it safely, accept, one thread per connection, answer calls.

The socket file is made under a umask so it is never more open than 0660,
then given the configured group. Each connection gets its own thread and may
send many requests; a slow caller or a slow TPM call holds only its own
thread (the device itself does one thing at a time, under its lock).
Callers are identified once per connection by SO_PEERCRED and checked per call.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import threading
from pathlib import Path
from typing import Any

from keyfab.agent import protocol
from keyfab.agent.calls import OutOfServiceError, Service
from keyfab.agent.peer import Peer, peer_of
from keyfab.agent.policy import CALLS, CallPolicy
from keyfab.errors import ConfigError, KeyfabError

log = logging.getLogger("keyfab.agent")
_BACKLOG = 64


def bind(path: Path, gid: int | None) -> socket.socket:
    """A listening socket at ``path``, mode 0660 (group ``gid``); a stale socket is replaced,
    any other file is refused."""
    if path.is_symlink() or (path.exists() and not stat.S_ISSOCK(path.lstat().st_mode)):
        raise ConfigError(f"{path} exists and is not a socket; refusing to replace it")
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o117)
    try:
        listener.bind(str(path))
    finally:
        os.umask(old)
    if gid is not None:
        os.chown(path, -1, gid)
    os.chmod(path, 0o660)
    listener.listen(_BACKLOG)
    return listener


class AgentServer:
    """Serves ``service`` on ``listener`` until ``close``."""

    def __init__(
        self,
        listener: socket.socket,
        service: Service,
        policy: CallPolicy,
        *,
        max_connections: int = 32,
        max_request: int = protocol.MAX_REQUEST,
    ):
        self.listener = listener
        self.service = service
        self.policy = policy
        self.max_request = max_request
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        self._closing = threading.Event()

    def serve_forever(self) -> None:
        while not self._closing.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                if self._closing.is_set():
                    return
                raise
            if not self._slots.acquire(blocking=False):
                log.warning("refusing a connection: %d already open", self.max_connections)
                self._refuse(connection, "too many connections to the agent")
                continue
            threading.Thread(target=self._connection, args=(connection,), daemon=True).start()

    def close(self) -> None:
        self._closing.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
        self.listener.close()

    def _refuse(self, connection: socket.socket, message: str) -> None:
        with contextlib.suppress(OSError), connection:
            connection.sendall(protocol.encode({"error": message, "kind": "OutOfServiceError"}))

    def _connection(self, connection: socket.socket) -> None:
        try:
            with connection, connection.makefile("rb") as reader:
                peer = peer_of(connection)
                while not self._closing.is_set():
                    try:
                        message = protocol.receive(reader, self.max_request)
                    except protocol.ProtocolError as error:
                        log.warning("closing a connection from %s: %s", peer.describe(), error)
                        connection.sendall(protocol.encode(_error(error, "ProtocolError")))
                        return
                    if message is None:
                        return
                    connection.sendall(protocol.encode(self.answer(peer, message)))
        except OSError:
            pass  # the caller went away
        finally:
            self._slots.release()

    def answer(self, peer: Peer, message: Any) -> dict[str, Any]:
        """One request's answer; every refusal is one line, logged with who asked."""
        if not isinstance(message, dict) or not isinstance(message.get("call"), str):
            return _error('a request is {"call": NAME, "args": {...}}', "ConfigError")
        call, args = message["call"], message.get("args", {})
        shown = call if call in CALLS else repr(call[:32])  # the caller's text, bounded
        if not isinstance(args, dict):
            return _error("args must be an object", "ConfigError")
        if not self.policy.allows(peer, call):
            log.warning("refused %s for %s: not allowed by [agent] policy", shown, peer.describe())
            return _error(
                f"{shown}: not allowed for uid {peer.uid} by the agent's policy",
                "PermissionDenied",
            )
        try:
            return {"ok": self.service.call(call, args)}
        except (KeyfabError, OutOfServiceError) as error:
            log.info("%s for %s failed: %s", shown, peer.describe(), error)
            return _error(error, type(error).__name__)
        except Exception:
            log.exception("%s for %s: internal error", shown, peer.describe())
            return _error(f"{shown}: internal error in the agent (see its log)", "InternalError")


def _error(error: object, kind: str) -> dict[str, Any]:
    return {"error": str(error).splitlines()[0] if str(error) else kind, "kind": kind}
