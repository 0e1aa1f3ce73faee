"""The calls the socket serves, over one ``DeviceApi`` that is re-opened when its
root of trust goes away (a TPM restarted, a token unplugged).

Each call checks its arguments' types and sizes before touching the device.
A plain ``RotError`` (transport, not "no such key") re-opens the device; an
idempotent call is then tried once more, so a restarted swtpm costs the caller
nothing; ``increment``, ``create_key`` and ``lock`` are not retried (they
might already have happened) and report the error.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from keyfab.agent.state import AgentState
from keyfab.device import DeviceApi
from keyfab.errors import ConfigError, RotError
from keyfab.rot import KeyAlgorithm

log = logging.getLogger("keyfab.agent")
Args = dict[str, Any]
MAX_RANDOM = 64 * 1024
NOT_RETRIED = frozenset({"increment", "create_key", "lock", "apply_policy"})


class OutOfServiceError(Exception):
    """The agent is out of service (tamper, boot check) until re-provisioned."""


def _bytes(args: Args, name: str, *, optional: bool = False) -> bytes | None:
    value = args.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, bytes):
        raise ConfigError(f"argument {name!r} must be bytes")
    return value


def _need(args: Args, name: str) -> bytes:
    value = _bytes(args, name)
    assert value is not None
    return value


def _str(args: Args, name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str) or len(value) > 256:
        raise ConfigError(f"argument {name!r} must be a string")
    return value


def _int(args: Args, name: str, low: int, high: int, default: int | None = None) -> int:
    value = args.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"argument {name!r} must be an integer from {low} to {high}")
    return value


def _sign(d: DeviceApi, a: Args) -> Any:
    return d.sign(
        _str(a, "label"),
        message=_bytes(a, "message", optional=True),
        digest=_bytes(a, "digest", optional=True),
    )


def _verify(d: DeviceApi, a: Args) -> Any:
    return d.verify(
        _str(a, "label"),
        _need(a, "signature"),
        message=_bytes(a, "message", optional=True),
        digest=_bytes(a, "digest", optional=True),
    )


def _ecdh(d: DeviceApi, a: Args) -> Any:
    info = _bytes(a, "info", optional=True) or b""
    return d.ecdh(
        _str(a, "label"), _need(a, "peer"), info=info, length=_int(a, "length", 1, 255 * 32, 32)
    )


def _create_key(d: DeviceApi, a: Args) -> Any:
    try:
        algorithm = KeyAlgorithm(a.get("algorithm", "ec-p256"))
    except ValueError:
        raise ConfigError("argument 'algorithm' names no key algorithm") from None
    return d.create_key(_str(a, "label"), algorithm, agreement=a.get("agreement") is True)


TABLE: dict[str, Callable[[DeviceApi, Args], Any]] = {
    "sign": _sign,
    "verify": _verify,
    "ecdh": _ecdh,
    "random": lambda d, a: d.random(_int(a, "n", 1, MAX_RANDOM)),
    "counter": lambda d, a: d.counter(_str(a, "name")),
    "increment": lambda d, a: d.increment(_str(a, "name")),
    "public_key": lambda d, a: d.public_key(_str(a, "label")),
    "certificate": lambda d, a: d.certificate(),
    "lock": lambda d, a: d.lock(_need(a, "data")),
    "unlock": lambda d, a: d.unlock(_need(a, "blob")),
    "create_key": _create_key,
    "apply_policy": lambda d, a: str(d.apply_policy(_need(a, "policy"))),
}


class Service:
    """The device as the agent serves it: refusal state, reconnection, the call table."""

    def __init__(
        self,
        opener: Callable[[], DeviceApi],
        state: AgentState,
        status: Callable[[], dict[str, Any]],
    ):
        self._opener = opener
        self.device = opener()
        self.state = state
        self._status = status
        self._reopen = threading.Lock()

    def call(self, name: str, args: Args) -> Any:
        if name == "status":
            return self._status()
        handler = TABLE.get(name)
        if handler is None:
            raise ConfigError(f"no such call {name[:32]!r}")
        refused = self.state.refused
        if refused is not None:
            raise OutOfServiceError(f"the agent refuses service until re-provisioned: {refused}")
        device = self.device
        try:
            return handler(device, args)
        except RotError as error:
            if type(error) is not RotError:
                raise  # no such key, unsupported, locked: the device answered
            self.reconnect(device, error)
            if name in NOT_RETRIED:
                raise
            return handler(self.device, args)

    def reconnect(self, failed: DeviceApi, error: Exception) -> None:
        """Re-open the root of trust once for every caller that saw ``failed`` fail."""
        with self._reopen:
            if self.device is not failed:
                return  # another thread re-opened it already
            log.warning("root of trust failed (%s); re-opening it", error)
            try:
                failed.close()
            except Exception:
                log.debug("closing the failed root of trust failed", exc_info=True)
            self.device = self._opener()

    def close(self) -> None:
        self.device.close()
