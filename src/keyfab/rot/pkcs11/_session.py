"""PKCS#11 modules, tokens and a per-process pool of logged-in sessions.

PKCS#11 keeps login state per *application* (process): every session a process
opens on a token shares one login, and it ends when the process's last session
closes. So keyfab logs in once per token per process and keeps its sessions in a
pool while any handle on the token is open (a CA key stays logged in; a device
token is logged out when provisioning closes it). Calls into a module are
serialised per process (see ``TokenPool.acquire``): parallel signing comes from
worker processes, each with its own login. A forked child (a batch worker)
inherits handles that mean nothing to the module there; PKCS#11 requires the
child to call ``C_Initialize`` again.
Every entry point therefore checks the process id first and, in a new process,
calls ``C_Initialize`` again and forgets the parent's sessions (without closing
them: in the child those handles could name someone else's sessions).
"""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pkcs11
import pkcs11.exceptions as p11e

if TYPE_CHECKING:
    from pkcs11._pkcs11 import lib as Module  # noqa: N812 - the binding's class is lowercase

from keyfab.errors import ConfigError, KeyNotFoundError, RotError
from keyfab.rot.pkcs11._errors import translated

_TOKEN_MATCHERS: dict[str, Callable[[pkcs11.Token], str]] = {
    "token": lambda token: token.label,
    "serial": lambda token: token_serial(token),
    "manufacturer": lambda token: token.manufacturer_id,
    "model": lambda token: token.model,
    "slot-id": lambda token: str(token.slot.slot_id),
    "slot-description": lambda token: token.slot.slot_description,
    "slot-manufacturer": lambda token: token.slot.manufacturer_id,
}
_CKR_OK = 0
_CKR_CRYPTOKI_ALREADY_INITIALIZED = 0x191
_MODULE_DIRS = (
    "/usr/lib/softhsm",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu/pkcs11",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu/pkcs11",
    "/usr/lib",
)


def token_serial(token: pkcs11.Token) -> str:
    """The token's serial number as text: the stable unique id of a device token."""
    raw = token.serial
    return (raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)).strip()


def resolve_module(path: str | None, name: str | None) -> str:
    """The module file from ``module-path``, ``module-name`` or $KEYFAB_PKCS11_MODULE."""
    if path is None and name is not None:
        if "/" in name or name.startswith("."):
            raise ConfigError(f"pkcs11: module-name {name!r} must be a bare name; use module-path")
        candidates = [Path(d) / f for d in _MODULE_DIRS for f in (f"{name}.so", f"lib{name}.so")]
        path = next((str(c) for c in candidates if c.is_file()), None)
        if path is None:
            raise ConfigError(f"pkcs11: no module named {name!r} in the usual directories")
    path = path or os.environ.get("KEYFAB_PKCS11_MODULE")
    if not path:
        raise ConfigError("pkcs11: say which module to load (module-path= or KEYFAB_PKCS11_MODULE)")
    if not Path(path).is_file():
        raise ConfigError(f"pkcs11: module {path} does not exist")
    return path


@dataclass
class Lease:
    """One borrowed session and the key objects already found through it."""

    session: pkcs11.Session
    keys: dict[bytes, pkcs11.SignMixin] = field(default_factory=dict)


class TokenPool:
    """The logged-in sessions of one token in this process."""

    def __init__(self, token: pkcs11.Token, pin: str | None, name: str, calls: threading.RLock):
        self.token = token
        self.name = name
        self.mechanisms: frozenset[pkcs11.Mechanism] = frozenset()
        self._idle: list[Lease] = []
        self._calls = calls
        self._pin_digest = _digest(pin)
        self.users = 0
        with translated(f"pkcs11 token {name!r}: log in"):
            first = _open_logged_in(token, pin)
            self.mechanisms = frozenset(token.slot.get_mechanisms())
        self._idle.append(Lease(first))

    def check_pin(self, pin: str | None) -> None:
        """A later opener must know the PIN too: the shared login is not a free pass."""
        if not hmac.compare_digest(self._pin_digest, _digest(pin)):
            raise RotError(f"pkcs11 token {self.name!r}: log in: wrong PIN")

    def acquire(self) -> Lease:
        """Borrow a session for one operation, holding the process's module lock.

        python-pkcs11 initialises modules with ``C_Initialize(NULL)``, which tells
        the module that the application will not call it from several threads at
        once, so the module takes no locks of its own (SoftHSM2 then fails at random
        under concurrent signing). keyfab keeps that promise with one lock per
        process, held from ``acquire`` to ``release``. Plain acquire/release rather
        than only a context manager: signing is the hot path of CA issuance and
        every microsecond here is a share of the token's own rate.
        """
        self._calls.acquire()
        if self._idle:
            return self._idle.pop()
        try:
            with translated(f"pkcs11 token {self.name!r}: open a session"):
                return Lease(self.token.open(rw=True))
        except BaseException:
            self._calls.release()
            raise

    def release(self, lease: Lease) -> None:
        """Return the session and let the next caller into the module."""
        self._idle.append(lease)
        self._calls.release()

    @contextmanager
    def lease(self) -> Iterator[Lease]:
        """A borrowed session that goes back to the pool afterwards."""
        lease = self.acquire()
        try:
            yield lease
        finally:
            self.release(lease)

    def close(self) -> None:
        """Close the idle sessions; closing a token's last session logs it out."""
        with translated(f"pkcs11 token {self.name!r}: close sessions"):
            while self._idle:
                self._idle.pop().session.close()


def _digest(pin: str | None) -> bytes:
    return b"" if pin is None else hashlib.sha256(pin.encode("utf-8")).digest()


def _open_logged_in(token: pkcs11.Token, pin: str | None) -> pkcs11.Session:
    """A first session, logged in as the user when a PIN is given."""
    if pin is None:
        return token.open(rw=True)
    try:
        return token.open(rw=True, user_pin=pin)
    except p11e.UserAlreadyLoggedIn:
        return token.open(rw=True)


class _Process:
    """What this process has loaded and logged into; replaced in a forked child."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.pools: dict[tuple[str, str], TokenPool] = {}
        # Every call into a PKCS#11 module (see TokenPool.acquire). A new lock in a
        # forked child: the parent's may have been held by a thread that is gone.
        self.calls = threading.RLock()


_state = _Process()
_modules: dict[str, Module] = {}


def _current() -> _Process:
    global _state
    if _state.pid != os.getpid():
        for path in _modules:
            _initialise_in_child(path)
        _state = _Process()
    return _state


def module_calls() -> threading.RLock:
    """The lock every call into a PKCS#11 module holds in this process."""
    return _current().calls


def _initialise_in_child(path: str) -> None:
    """``C_Initialize`` in a forked child, as PKCS#11 asks, and nothing else.

    A fork-aware module (OpenSC, p11-kit, SoftHSM2 with ``library.reset_on_fork``)
    starts afresh and answers CKR_OK. Others (SoftHSM2 by default) keep the state
    the child inherited and answer CKR_CRYPTOKI_ALREADY_INITIALIZED, which is fine:
    the child opens its own sessions either way. Never ``C_Finalize`` first: in a
    child that tears down state the module shares with its parent and siblings
    (seen as random CKR_GENERAL_ERROR in SoftHSM2's file store). The call goes
    through ctypes because python-pkcs11 believes the module is still initialised.
    """
    c_initialize = ctypes.CDLL(path).C_Initialize
    c_initialize.argtypes = [ctypes.c_void_p]
    c_initialize.restype = ctypes.c_ulong
    rv = c_initialize(None)
    if rv not in (_CKR_OK, _CKR_CRYPTOKI_ALREADY_INITIALIZED):
        raise RotError(f"pkcs11: cannot initialise {path} in a worker process")


def load_module(path: str) -> Module:
    """The loaded, initialised module (once per process)."""
    _current()
    if path not in _modules:
        try:
            _modules[path] = pkcs11.lib(path)
        except p11e.PKCS11Error:
            raise ConfigError(f"pkcs11: {path} is not a loadable PKCS#11 module") from None
    return _modules[path]


def find_token(module: Module, selector: Mapping[str, str]) -> pkcs11.Token:
    """The one token whose attributes match every selector entry (RFC 7512 names)."""
    wanted = {k: v for k, v in selector.items() if k in _TOKEN_MATCHERS}
    described = ", ".join(f"{k}={v}" for k, v in wanted.items()) or "any"
    with module_calls(), translated(f"pkcs11: list tokens ({described})"):
        tokens: list[pkcs11.Token] = [
            slot.get_token() for slot in module.get_slots(token_present=True)
        ]
    found = [t for t in tokens if all(_TOKEN_MATCHERS[k](t) == v for k, v in wanted.items())]
    if not found:
        raise KeyNotFoundError(f"pkcs11: no token matches {described}")
    if len(found) > 1:
        raise ConfigError(f"pkcs11: {len(found)} tokens match {described}; add serial= or token=")
    token: pkcs11.Token = found[0]
    return token


def pool_for(module_path: str, token: pkcs11.Token, pin: str | None) -> TokenPool:
    """This process's pool for ``token``: logged in on first use, then shared."""
    state = _current()
    key = (module_path, token_serial(token))
    with state.calls:
        pool = state.pools.get(key)
        if pool is None:
            pool = TokenPool(token, pin, token.label, state.calls)
            state.pools[key] = pool
        pool.check_pin(pin)
        pool.users += 1
    return pool


def release_pool(module_path: str, pool: TokenPool) -> None:
    """One handle on the token is closed; the last one closes the pool and logs out."""
    state = _current()
    key = (module_path, token_serial(pool.token))
    with state.calls:
        if state.pools.get(key) is not pool:
            return  # a pool of the parent process, or one already closed
        pool.users -= 1
        if pool.users <= 0:
            del state.pools[key]
            pool.close()
