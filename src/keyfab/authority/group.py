"""Group commit: concurrent enrolments of one process share one transaction.

Every certificate's row and audit events are written in the transaction that
decides to issue it, and every audit append locks the chain's head row until
commit. With one transaction per enrolment, that lock turns concurrent
writers into a queue with a database round trip per place. Here, callers of
one process queue their work instead; the first becomes the leader, runs
everyone's work in one transaction (each member in a savepoint of its own, so
a refused member leaves no trace and costs the others nothing), records all
their certificates with one insert and one audit append, and commits once.
Followers wait for their answer; whoever is first in the queue when the
leader finishes leads the next group.

The chain is exactly as strong: events are appended under the head lock in
one order, each member's certificate with its events, and nothing is
answered before the commit that holds them.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from sqlalchemy.orm import Session

from keyfab import audit
from keyfab.errors import KeyfabError, RegistryError
from keyfab.registry import Registry

T = TypeVar("T")
MAX_GROUP = 64
"""Members per transaction: enough to absorb a burst, small enough to keep locks short."""


@dataclass(frozen=True)
class Unit(Generic[T]):
    """What one member's work produced: certificates and events to record, the answer."""

    issued: Sequence[Any]  # authority.Issued (service.py holds the group: no import back)
    events: Sequence[audit.Entry]
    answer: T


Work = Callable[[Session], Unit[T]]
Outcome = Unit[Any] | KeyfabError | None


@runtime_checkable
class Batchable(Protocol):
    """Work whose kind can run many members with a few statements for all of them.

    ``run_many`` answers per item: a unit, a refusal (raised before the item
    wrote anything), or None to have that item run alone as ``item(session)``
    in its savepoint. Anything it raises fails the whole group.
    """

    def __call__(self, session: Session) -> Unit[Any]: ...

    @classmethod
    def run_many(cls, session: Session, items: Sequence[Any]) -> list[Outcome]: ...


Recorder = Callable[[Session, Sequence[Unit[Any]]], None]


@dataclass(eq=False)
class _Member:
    work: Work[Any]
    signal: Callable[[], object]  # called when the member is promoted to lead, and when done
    leads: bool = False
    done: bool = False
    unit: Unit[Any] | None = None
    error: BaseException | None = None

    def answer(self) -> Any:
        if self.unit is None:
            raise self.error or RegistryError("the enrolment's transaction did not finish")
        return self.unit.answer


class GroupCommit:
    """One queue of enrolment work per process, committed in groups by a leader."""

    def __init__(self, registry: Registry, recorder: Recorder):
        self._registry = registry
        self._record = recorder
        self._lock = threading.Lock()
        self._queue: list[_Member] = []
        self._busy = False

    def submit(self, work: Work[T]) -> T:
        """Run ``work`` in a shared transaction; return its answer once that commits.

        A ``KeyfabError`` (or any error) raised by ``work`` is raised here, to
        this caller only; its savepoint is rolled back.
        """
        woken = threading.Event()
        member = self._join(_Member(work, woken.set))
        if not member.leads:
            woken.wait()
        if not member.done:  # promoted to lead the next group
            self._lead()
        answer: T = member.answer()
        return answer

    async def submit_async(self, work: Work[T]) -> T:
        """``submit`` for an event loop: no thread waits per request.

        The request waits on the loop; a member promoted to lead starts the
        group in a thread from the loop's own callback (so a request cancelled
        meanwhile cannot leave the queue without a leader), once per group:
        a hundred waiting enrolments cost no hundred thread hand-offs.
        """
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()

        def wake() -> None:  # on the loop
            if member.leads and not member.done:
                member.leads = False  # led from now on: start it once
                loop.run_in_executor(None, self._lead)
            woken.set()

        member = _Member(work, lambda: loop.call_soon_threadsafe(wake))
        if self._join(member).leads:
            wake()
        while not member.done:
            await woken.wait()
            woken.clear()
        answer: T = member.answer()
        return answer

    def _join(self, member: _Member) -> _Member:
        """Queue ``member``; it leads at once if no group is being committed."""
        with self._lock:
            self._queue.append(member)
            if not self._busy:
                self._busy = member.leads = True
        return member

    def _lead(self) -> None:
        with self._lock:
            group, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
        try:
            self._commit(group)
        finally:
            for member in group:
                member.done = True
            with self._lock:
                if self._queue:
                    successor = self._queue[0]
                    successor.leads = True
                    successor.signal()
                else:
                    self._busy = False
            for member in group:
                member.signal()

    def _commit(self, group: list[_Member]) -> None:
        """One transaction for the group; on a failure of the whole, each member alone."""
        try:
            with self._registry.transaction() as session:
                _run_batched(session, group)
                for member in group:
                    if member.unit is None and member.error is None:
                        _run(session, member, savepoint=len(group) > 1)
                self._record(session, [m.unit for m in group if m.unit is not None])
        except Exception as error:  # handed to the members, never lost
            if len(group) == 1:
                _fail(group, error)
                return
            for member in group:  # the group's commit failed: nobody's work stands
                member.unit = member.error = None
                self._commit([member])


def _run_batched(session: Session, group: list[_Member]) -> None:
    """Let each batchable kind of work run its members together first."""
    kinds: dict[type[Batchable], list[_Member]] = {}
    for member in group:
        if isinstance(member.work, Batchable):
            kinds.setdefault(type(member.work), []).append(member)
    for kind, members in kinds.items():
        outcomes = kind.run_many(session, [m.work for m in members])
        for member, outcome in zip(members, outcomes, strict=True):
            if isinstance(outcome, Unit):
                member.unit = outcome
            else:
                member.error = outcome


def _run(session: Session, member: _Member, *, savepoint: bool) -> None:
    """Run one member's work alone (in a savepoint when others share the transaction)."""
    try:
        if savepoint:
            with session.begin_nested():
                member.unit = member.work(session)
        else:
            member.unit = member.work(session)
    except KeyfabError as refused:
        if not savepoint:
            raise
        member.error = refused


def _fail(group: list[_Member], error: BaseException) -> None:
    for member in group:
        member.unit = None
        member.error = member.error or error
