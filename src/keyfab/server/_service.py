"""What one service process holds open: the authority (registry and CA), the running batches.

Opened once per worker process by the app factory, so requests never pay for
opening a database or loading the CA key.
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from keyfab.authority import Authority
from keyfab.authority.ocsp import Responder as OcspResponder
from keyfab.errors import KeyfabError
from keyfab.provision import run_batch
from keyfab.registry import Registry, queries
from keyfab.server.est_messages import certs_only
from keyfab.workspace import Workspace

if TYPE_CHECKING:
    from keyfab.cmp.responder import Responder as CmpResponder

_log = logging.getLogger(__name__)


@dataclass
class Service:
    workspace: Workspace
    authority: Authority
    ocsp: OcspResponder
    _running: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, workspace: Workspace) -> Service:
        authority = Authority.open(workspace)
        authority.ca  # noqa: B018 - open the CA key now, not on the first request
        return cls(workspace, authority, OcspResponder.open(authority, workspace.home))

    @property
    def registry(self) -> Registry:
        return self.authority.registry

    @functools.cached_property
    def cmp(self) -> CmpResponder:
        """The CMP responder (its key and certificate prepared by ``keyfab serve``)."""
        from keyfab.cmp.identity import prepare, responder

        prepare(self.workspace, self.authority)  # no-op when serve prepared it already
        return responder(self.workspace, self.authority)

    @functools.cached_property
    def cacerts(self) -> bytes:
        """The EST ``cacerts`` body, built once (a rotation is served after a restart).

        Every CA certificate a device needs during a rotation's overlap: the
        issuing chain, the retired CAs still serving, the roots and the link
        certificates of a root rollover (RFC 7030 section 4.1.3).
        """
        return certs_only(self.authority.published())

    @functools.cached_property
    def ca_certificates(self) -> dict[str, bytes]:
        """Every CA certificate (DER) by name: the caIssuers URLs serve them."""
        return {name: row.certificate for name, row in queries.authorities(self.registry).items()}

    def start_batch(self, name: str) -> bool:
        """Run a batch's outstanding devices in a background thread; False if running here."""
        with self._lock:
            if name in self._running:
                return False
            self._running.add(name)
        thread = threading.Thread(target=self._run, args=(name,), name=f"batch-{name}", daemon=True)
        thread.start()
        return True

    def running(self, name: str) -> bool:
        with self._lock:
            return name in self._running

    def _run(self, name: str) -> None:
        try:
            run_batch(self.workspace, name, workers=1)
        except KeyfabError as error:  # recorded per device; a resume finishes the rest
            _log.warning("batch %s stopped: %s", name, error)
        finally:
            with self._lock:
                self._running.discard(name)

    def close(self) -> None:
        self.authority.close()
