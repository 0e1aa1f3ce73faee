"""Group commit from threads (``GroupCommit.submit``, CMP's and re-enrolment's path).

Threads enrol at once through ``enrolment.enrol_key``; some are refused (a
revoked device, a bound token's other serial), one member's work fails the
whole group's transaction. Each caller gets its own answer or refusal, and the
chain and every certificate's record hold.
"""

from __future__ import annotations

import json
import threading
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from keyfab import audit, pki
from keyfab.authority import Authority, Principal, Role, enrolment, initialise, revoke_device
from keyfab.authority.group import Unit
from keyfab.errors import PermissionDeniedError, RegistryError
from keyfab.registry import AuditEvent, Certificate
from keyfab.rot.soft import SoftRotWarning
from keyfab.workspace import Workspace

OPERATOR = Principal("op", Role.OPERATOR)
THREADS = 16


@pytest.fixture
def authority(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Authority:
    monkeypatch.delenv("KEYFAB_DATABASE_URL", raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SoftRotWarning)
        space = Workspace(tmp_path / "home")
        initialise(space, "Acme")
        return Authority.open(space)


def _enrol(authority: Authority, principal: Principal, serial: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    certificate = enrolment.enrol_key(authority, principal, serial, key)
    return pki.serial_hex(certificate)


def test_threads_share_groups_and_keep_the_chain(authority: Authority) -> None:
    _enrol(authority, OPERATOR, "GONE-1")
    revoke_device(authority, "GONE-1", pki.RevocationReason.KEY_COMPROMISE, by="test")
    bound = Principal("dev", Role.DEVICE, device_serial="MINE-1")
    plan = [(OPERATOR, f"T-{i:03d}") for i in range(60)]
    plan += [(OPERATOR, "GONE-1"), (bound, "OTHER-1"), (bound, "MINE-1")]

    def attempt(step: tuple[Principal, str]) -> str:
        try:
            return _enrol(authority, *step)
        except PermissionDeniedError as refused:
            return f"refused: {refused.slug}"

    with ThreadPoolExecutor(THREADS) as pool:
        answers = list(pool.map(attempt, plan))
    assert answers[-3:-1] == ["refused: device-revoked", "refused: forbidden"]
    issued = [a for a in answers if not a.startswith("refused")]
    assert len(issued) == len(set(issued)) == 61
    with authority.registry.reading() as session:
        assert audit.verify(session).ok
        rows = set(session.scalars(select(Certificate.serial_number)))
        events = Counter(
            json.loads(data)["serial_number"]
            for data in session.scalars(
                select(AuditEvent.data).where(AuditEvent.kind == "certificate.issued")
            )
        )
    assert set(issued) <= rows
    assert all(events[number] == 1 for number in issued)


def test_a_failed_group_runs_each_member_alone(authority: Authority) -> None:
    """One member's database error rolls its group back; the others are run again alone
    and recorded, the failing one gets its error."""
    started = threading.Barrier(THREADS)

    def broken(session: Session) -> Unit[str]:
        session.execute(text("SELECT no_such_column FROM devices"))
        raise AssertionError("unreachable")

    def attempt(index: int) -> str:
        started.wait()
        if index == 0:
            try:
                authority.group.submit(broken)
            except Exception as error:
                return type(error).__name__
            return "no error"
        return _enrol(authority, OPERATOR, f"G-{index:03d}")

    with ThreadPoolExecutor(THREADS) as pool:
        answers = list(pool.map(attempt, range(THREADS)))
    assert answers[0] == "OperationalError"
    assert len(set(answers[1:])) == THREADS - 1
    with authority.registry.reading() as session:
        assert audit.verify(session).ok
        assert set(answers[1:]) <= set(session.scalars(select(Certificate.serial_number)))


def test_an_unfinished_member_is_an_error(authority: Authority) -> None:
    with pytest.raises(RegistryError):
        authority.group.submit(lambda session: None)  # type: ignore[arg-type,return-value]
