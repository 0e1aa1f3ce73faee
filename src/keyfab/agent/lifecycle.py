"""The agent's lifecycle thread: the operational certificate over EST, attestation rounds.

Renewal is due when ``agent.renewal.due`` says (or at once with no operational
certificate yet); failures back off with jitter (``renewal.Backoff``). An
attestation round runs every ``[agent] attest_every``; a failed round is
retried sooner, never later than the period. Both record their outcome in the
agent's state, where ``status`` finds it. A refused device does not renew.
"""

from __future__ import annotations

import datetime
import logging
import random
import threading
import time
from typing import Any

from cryptography import x509

from keyfab.agent import attestation, renewal
from keyfab.agent.calls import Service
from keyfab.agent.http import ServerApi, ServerError
from keyfab.agent.policy import Settings
from keyfab.agent.state import AgentState
from keyfab.clock import utc_now
from keyfab.errors import ConfigError, KeyfabError
from keyfab.securefile import read_bounded

log = logging.getLogger("keyfab.agent")
_IDLE = 3600.0
_JITTER = random.SystemRandom()


class Lifecycle:
    def __init__(self, settings: Settings, service: Service, state: AgentState, api: ServerApi):
        self.settings = settings
        self.service = service
        self.state = state
        self.api = api
        self.window_opens: datetime.datetime | None = None  # learnt from the server

    def _leaf(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.service.device.certificate()[0])

    def renew(self) -> x509.Certificate:
        leaf = renewal.enrol(self.api, self.service.device, self._token())
        self.state.note("renewal", {"not_after": leaf.not_valid_after_utc.isoformat()})
        log.info("operational certificate renewed until %s", leaf.not_valid_after_utc)
        return leaf

    def _token(self) -> str | None:
        path = self.settings.agent.est_token
        if path is None or not path.exists():
            return None
        return read_bounded(path, 4096, "EST token").decode().strip()

    def attest(self) -> dict[str, Any]:
        identity = renewal.current_identity(self.settings.device.state_dir)
        if identity is None:
            raise ConfigError("no operational certificate to attest with yet")
        result = attestation.attest_once(
            self.api, identity, self.service.device, self.settings.agent.eventlog
        )
        self.state.note("attestation", result)
        log.info("attestation: %s %s", result["verdict"], result["reasons"])
        return result

    def _renewal_due(self) -> datetime.datetime:
        if renewal.current_identity(self.settings.device.state_dir) is None:
            return utc_now()
        try:
            due = renewal.due(self._leaf(), self.settings.agent.period("renew_before"))
        except (KeyfabError, ValueError):
            return utc_now()
        return due if self.window_opens is None else max(due, self.window_opens)

    def run(self, stop: threading.Event, wake: threading.Event) -> None:
        """Renew when due and attest every ``attest_every`` until ``stop`` (``wake`` ends
        a wait early)."""
        every = self.settings.agent.period("attest_every")
        renew_backoff, attest_backoff = renewal.Backoff(), renewal.Backoff(base=30.0)
        next_renew = time.monotonic()
        next_attest = time.monotonic() if every is not None else float("inf")
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_renew:
                next_renew = self._step_renew(renew_backoff)
            if now >= next_attest and every is not None:
                next_attest = self._step_attest(attest_backoff, every.total_seconds())
            wake.wait(min(max(min(next_renew, next_attest) - time.monotonic(), 0.05), _IDLE))
            wake.clear()

    def _step_renew(self, backoff: renewal.Backoff) -> float:
        if self.state.refused is None and self._renewal_due() <= utc_now():
            try:
                self.renew()
                backoff.succeeded()
                self.window_opens = None
            except ServerError as error:
                opens = renewal.window_opens(error)
                if opens is None:
                    return self._failed(backoff, error)
                # the product's window is shorter than ours: wait for it (the server says
                # it to the minute), spread over a minute so a fleet does not come at once
                spread = 60 + _JITTER.uniform(0, 60)
                self.window_opens = opens + datetime.timedelta(seconds=spread)
                log.info("the server's renewal window opens %s; renewing then", opens)
            except KeyfabError as error:
                return self._failed(backoff, error)
        wait = (self._renewal_due() - utc_now()).total_seconds()
        return time.monotonic() + min(max(wait, 1.0), _IDLE)

    def _failed(self, backoff: renewal.Backoff, error: KeyfabError) -> float:
        delay = backoff.failed()
        log.warning("renewal failed (%s); next try in %.0f s", error, delay)
        return time.monotonic() + delay

    def _step_attest(self, backoff: renewal.Backoff, every: float) -> float:
        try:
            self.attest()
            backoff.succeeded()
        except KeyfabError as error:
            delay = min(backoff.failed(), every)
            self.state.note("attestation", {"verdict": "error", "reasons": [str(error)]})
            log.warning("attestation failed (%s); next try in %.0f s", error, delay)
            return time.monotonic() + delay
        return time.monotonic() + every
