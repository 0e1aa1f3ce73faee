"""Batches: the provisioning flow over many devices, in parallel, resumable.

A batch is created in one transaction that reserves a serial number per device
slot (from the database, never from a counter in memory). Workers then take
chunks of slots. Per chunk: steps 1-5 for each device, ONE transaction that
records every certificate with its issuance event, then steps 6-7 (write back,
lock) and one more transaction marking the devices provisioned. A crash at any
point leaves devices ``pending`` (nothing issued), ``issued`` (certificate
recorded, write-back to redo) or ``provisioned``; ``resume`` finishes the first
two kinds, so every slot ends provisioned exactly once.
"""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import json
import multiprocessing
import signal
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from keyfab import audit
from keyfab.attest import Tpm2Policy, policy_from_options
from keyfab.authority import Authority, record
from keyfab.clock import utc_now
from keyfab.errors import ConfigError, ConflictError, KeyfabError, NotFoundError
from keyfab.names import check_name
from keyfab.pki import CertificateAuthority
from keyfab.provision import _runs
from keyfab.provision.devices import device_options, open_device
from keyfab.provision.flow import Issuance, issue_device, write_back
from keyfab.provision.recipe import MAX_SERIAL, Recipe, load_objects, parse_recipe
from keyfab.registry import Base, Batch, Certificate, Device, DeviceState, Registry, queries
from keyfab.registry.models import FAILURE_MAX
from keyfab.rot import RootOfTrust
from keyfab.workspace import Workspace

CHUNK = 32  # the smallest chunk: a crash redoes at most this many devices' signatures
MAX_CHUNK = 256
CHUNKS_PER_WORKER = 4  # enough to even out workers that finish at different times

# Core statements for the hot path: plain executemany, no ORM bookkeeping per row.
_DEVICES = Base.metadata.tables["devices"]
_ISSUE_DEVICE = (
    update(_DEVICES)
    .where(_DEVICES.c.id == bindparam("device_id"))
    .values(
        state=bindparam("state"),
        unique_id=bindparam("unique_id"),
        rot_kind=bindparam("rot_kind"),
        public_key=bindparam("public_key"),
        evidence=bindparam("evidence"),
        failure=None,  # a device failed before and resumed: its old reason no longer holds
    )
)
_FAIL_DEVICE = (
    update(_DEVICES)
    .where(_DEVICES.c.serial == bindparam("failed_serial"))
    .values(state=DeviceState.FAILED, failure=bindparam("failure"))
)
_UNWRITTEN = (
    update(_DEVICES)
    .where(_DEVICES.c.id == bindparam("unwritten_id"))
    .values(failure=bindparam("failure"))
)
MAX_BATCH = 10_000_000
MAX_WORKERS = 256
CANCELLED = "cancelled"
STOP_WAIT = 30.0
"""How long a cancel waits for this process's run of the batch to finish its chunk."""


@dataclass(frozen=True)
class Outcome:
    """What one chunk did: devices provisioned, and (serial, reason) per failure."""

    provisioned: int
    failures: tuple[tuple[str, str], ...] = ()
    stopped: bool = False  # the batch was cancelled: this chunk did nothing


class _CancelledError(Exception):
    """The batch was cancelled before this chunk could be recorded."""


@dataclass(frozen=True)
class Summary:
    batch: str
    count: int
    provisioned: int
    failed: int
    failures: tuple[tuple[str, str], ...]
    stopped: bool = False  # cancelled while running: it stopped after its chunk in hand


def create_batch(
    workspace: Workspace, recipe_text: str, recipe_dir: Path, name: str, count: int
) -> Recipe:
    """Record the batch and reserve one device row and serial per slot.

    Everything that can be checked without the database is checked first, so
    a refused batch leaves no row behind and its name stays free.
    """
    recipe = check_batch(workspace, recipe_text, recipe_dir, name, count)
    registry = workspace.registry()
    try:
        with registry.transaction() as session:
            if session.scalar(select(Batch.id).where(Batch.name == name)) is not None:
                raise ConflictError(
                    f"batch {name!r} exists: use 'keyfab provision resume {name}'",
                    slug="batch-exists",
                )
            now = utc_now()
            batch = Batch(
                name=name,
                product=recipe.product.name,
                recipe=recipe_text,
                recipe_dir=str(recipe_dir.resolve()),
                count=count,
                state="running",
                created_at=now,
            )
            session.add(batch)
            session.flush()
            first = registry.allocate(session, "device", count)
            serials = [recipe.serial(first + slot, slot, name) for slot in range(count)]
            _check_serial_length(max(serials, key=len))
            if len(set(serials)) != count:
                raise ConfigError("the serial template gives the same serial to two devices")
            session.execute(
                insert(Device),
                [
                    {
                        "serial": s,
                        "batch_id": batch.id,
                        "product": batch.product,
                        "slot": slot,
                        "state": DeviceState.PENDING,
                        "created_at": now,
                    }
                    for slot, s in enumerate(serials)
                ],
            )
            audit.append(
                session,
                "batch.started",
                name,
                {
                    "product": recipe.product.name,
                    "count": count,
                    "first_serial": serials[0],
                    "last_serial": serials[-1],
                },
            )
    except IntegrityError:
        raise ConfigError(
            "a serial in this batch is already in use: change product.serial"
        ) from None
    finally:
        registry.dispose()
    return recipe


def check_batch(
    workspace: Workspace, recipe_text: str, recipe_dir: Path, name: str, count: int
) -> Recipe:
    """The batch's recipe, after every check that needs no database write.

    Name, count, recipe, objects, each device's driver options (placeholders
    filled for the first and last slot) and the longest serial the count can
    make: all refused here, before ``create_batch`` reserves anything.
    """
    check_name("batch", name)
    if not 1 <= count <= MAX_BATCH:
        raise ConfigError(f"--count must be 1 to {MAX_BATCH}")
    recipe = parse_recipe(recipe_text)
    load_objects(recipe, recipe_dir)  # fail now, not on device 1
    for slot in {0, count - 1}:
        device_options(recipe.rot.options(), slot, name, str(workspace.home))
    _check_serial_length(recipe.serial(count, count - 1, name))  # a lower bound of the longest
    return recipe


def _check_serial_length(serial: str) -> None:
    if len(serial) > MAX_SERIAL:
        raise ConfigError(
            f"product.serial makes serials longer than {MAX_SERIAL} characters ({serial[:20]}...)"
        )


class Station:
    """Everything a worker process needs, opened once per process."""

    def __init__(self, workspace: Workspace, batch_name: str):
        self.workspace = workspace
        self.registry = workspace.registry()
        with self.registry.reading() as session:
            batch = session.scalars(select(Batch).where(Batch.name == batch_name)).one_or_none()
            if batch is None:
                raise ConfigError(f"no batch {batch_name!r}")
            self.batch_id, self.batch_name = batch.id, batch.name
            self.recipe = parse_recipe(batch.recipe, f"batch {batch_name} recipe")
            self.objects = load_objects(self.recipe, Path(batch.recipe_dir))
        self.attestation = _attestation_policy(self.recipe, Path(batch.recipe_dir))
        self.authority = Authority(self.registry)
        self.ca: CertificateAuthority = self.authority.ca
        self.chain = [c.public_bytes(Encoding.DER) for c in self.ca.full_chain()]

    def run(self, device_ids: Sequence[int]) -> Outcome:
        """Provision the devices of one chunk (in whatever state a crash left them).

        A cancelled batch is a stop signal: checked before the chunk starts and
        again in the transaction that would record it (``_record_chunk``).
        """
        if self.cancelled():
            return Outcome(0, stopped=True)
        rots: dict[int, RootOfTrust] = {}
        try:
            return self._run(device_ids, rots)
        except _CancelledError:
            return Outcome(0, stopped=True)
        finally:
            for rot in rots.values():
                rot.close()

    def cancelled(self) -> bool:
        """Whether the batch has been cancelled (a primary-key read)."""
        with self.registry.lookup() as connection:
            state = connection.scalar(select(Batch.state).where(Batch.id == self.batch_id))
        return state == CANCELLED

    def _run(self, device_ids: Sequence[int], rots: dict[int, RootOfTrust]) -> Outcome:
        with self.registry.reading() as session:
            devices = session.execute(
                select(Device.id, Device.serial, Device.slot, Device.state).where(
                    Device.id.in_(device_ids)
                )
            ).all()
        failures: list[tuple[str, str]] = []
        serials = {device_id: serial for device_id, serial, _, _ in devices}
        for device_id, serial, slot, _ in devices:
            assert slot is not None  # every device of a batch has its slot
            try:
                rots[device_id] = self._open(slot)
            except KeyfabError as error:
                failures.append((serial, str(error)))
        pending = [d for d, _, _, state in devices if state == DeviceState.PENDING and d in rots]
        claimed = self._claimed({d: (serials[d], rots[d].info.unique_id) for d in pending})
        failures += [(serials[d], reason) for d, reason in claimed.items()]
        issued = self._issue([d for d in pending if d not in claimed], rots, serials, failures)
        certificates = self._record(issued, failures, serials)
        resumed = [d for d, _, _, state in devices if state == DeviceState.ISSUED and d in rots]
        certificates.update(self._recorded_certificates(resumed))
        done = self._write_back(rots, certificates, serials, failures)
        return Outcome(done, tuple(failures))

    def _issue(
        self,
        device_ids: list[int],
        rots: dict[int, RootOfTrust],
        serials: dict[int, str],
        failures: list[tuple[str, str]],
    ) -> list[Issuance]:
        """Steps 1-5 for each pending device; a device that fails is noted, not raised."""
        issued: list[Issuance] = []
        context = {"batch": self.batch_name}
        for device_id in device_ids:
            try:
                issued.append(
                    issue_device(
                        rots[device_id],
                        device_id,
                        serials[device_id],
                        self.recipe,
                        self.ca,
                        self.attestation,
                        context,
                        self.authority.issuing,
                    )
                )
            except KeyfabError as error:
                failures.append((serials[device_id], str(error)))
        return issued

    def _claimed(self, identities: dict[int, tuple[str, str]]) -> dict[int, str]:
        """Why each device (id: (serial, unique id)) must not be issued, if it must not.

        A unique id another device already holds (a second batch over the same
        devices) or that an earlier device of this chunk has: checked before any
        signing, in one registry query per chunk, so such a device fails with a
        reason instead of the unique index rolling back the chunk.
        """
        holders = queries.unique_id_holders(self.registry, [u for _, u in identities.values()])
        reasons: dict[int, str] = {}
        first: dict[str, str] = {}
        for device_id, (serial, unique_id) in identities.items():
            holder = holders.get(unique_id)
            if holder is not None and holder.device_id != device_id:
                reasons[device_id] = (
                    f"device unique id {unique_id} is already registered as {holder.serial}"
                )
            elif unique_id in first:
                earlier = first[unique_id]
                reasons[device_id] = (
                    f"device unique id {unique_id} is already used by {earlier} in this batch"
                )
            else:
                first[unique_id] = serial
        return reasons

    def _open(self, slot: int) -> RootOfTrust:
        settings = self.recipe.rot
        return open_device(
            settings.driver, settings.options(), slot, self.batch_name, str(self.workspace.home)
        )

    def _record(
        self, issued: list[Issuance], failures: list[tuple[str, str]], serials: dict[int, str]
    ) -> dict[int, list[tuple[str, bytes]]]:
        """Step 8: certificates, device rows and their events in one transaction.

        Returns the (key label, DER) certificates recorded, per device id. If
        another station registered one of these unique ids after ``_claimed``
        looked (two stations on the same devices at once), the unique index
        rolls the transaction back; the devices it names then fail and the rest
        are recorded. Their unrecorded certificates never leave this process.
        """
        try:
            return self._record_chunk(issued, failures)
        except IntegrityError:
            claimed = self._claimed(
                {i.device_id: (serials[i.device_id], i.unique_id) for i in issued}
            )
            if not claimed:
                raise
        failures += [(serials[d], reason) for d, reason in claimed.items()]
        return self._record_chunk([i for i in issued if i.device_id not in claimed], failures)

    def _record_chunk(
        self, issued: list[Issuance], failures: list[tuple[str, str]]
    ) -> dict[int, list[tuple[str, bytes]]]:
        """One transaction: device rows, failures, certificates and their audit events."""
        certificates = [cert for item in issued for cert in item.certificates]
        with self.registry.transaction() as session:
            state = session.scalar(  # FOR SHARE: a cancel (FOR UPDATE) waits, or we do
                select(Batch.state).where(Batch.id == self.batch_id).with_for_update(read=True)
            )
            if state == CANCELLED:
                raise _CancelledError  # what this chunk signed is never recorded, never leaves
            events: list[audit.Entry] = []
            if issued:
                session.execute(
                    _ISSUE_DEVICE,
                    [
                        {
                            "device_id": i.device_id,
                            "state": DeviceState.ISSUED,
                            "unique_id": i.unique_id,
                            "rot_kind": i.rot_kind,
                            "public_key": i.public_key,
                            "evidence": json.dumps(i.evidence) if i.evidence else None,
                        }
                        for i in issued
                    ],
                )
            if failures:
                session.execute(
                    _FAIL_DEVICE,
                    [{"failed_serial": s, "failure": _reason(r)} for s, r in failures],
                )
                events += [
                    audit.Entry("device.failed", s, {"reason": r, "batch": self.batch_name})
                    for s, r in failures
                ]
            rows = record(session, certificates, events, signers=self.authority.signer_ids)
        recorded: dict[int, list[tuple[str, bytes]]] = {}
        for row in rows:
            recorded.setdefault(row["device_id"], []).append((row["key_label"], row["der"]))
        return recorded

    def _recorded_certificates(self, device_ids: list[int]) -> dict[int, list[tuple[str, bytes]]]:
        """Certificates recorded before a crash for devices still to be written back."""
        if not device_ids:
            return {}
        with self.registry.reading() as session:
            rows = session.execute(
                select(Certificate.device_id, Certificate.key_label, Certificate.der).where(
                    Certificate.device_id.in_(device_ids)
                )
            ).all()
        recorded: dict[int, list[tuple[str, bytes]]] = {}
        for device_id, label, der in rows:
            assert device_id is not None
            recorded.setdefault(device_id, []).append((label, der))
        return recorded

    def _write_back(
        self,
        rots: dict[int, RootOfTrust],
        certificates: dict[int, list[tuple[str, bytes]]],
        serials: dict[int, str],
        failures: list[tuple[str, str]],
    ) -> int:
        """Steps 6-7 for every device whose certificates are recorded; then mark them.

        A device whose write-back fails stays ``issued`` (resume writes it again)
        with the reason on its row, so the listing says why it is not done.
        """
        done = []
        unwritten: list[dict[str, object]] = []
        for device_id, certs in certificates.items():
            try:
                write_back(rots[device_id], certs, self.chain, self.recipe, self.objects)
                done.append(device_id)
            except KeyfabError as error:
                reason = f"write-back failed: {error}"
                failures.append((serials[device_id], reason))
                unwritten.append({"unwritten_id": device_id, "failure": _reason(reason)})
        if done or unwritten:
            with self.registry.transaction() as session:
                if unwritten:
                    session.execute(_UNWRITTEN, unwritten)
                session.execute(
                    update(Device)
                    .where(Device.id.in_(done))
                    .values(state=DeviceState.PROVISIONED, provisioned_at=utc_now(), failure=None)
                )
        return len(done)

    def close(self) -> None:
        self.registry.dispose()


def _reason(reason: str) -> str:
    """A failure reason as the device row keeps it: one line, cut to the column."""
    line = " ".join(reason.split())
    return line if len(line) <= FAILURE_MAX else line[: FAILURE_MAX - 3] + "..."


def _attestation_policy(recipe: Recipe, recipe_dir: Path) -> Tpm2Policy | None:
    """TPM recipes name the EK roots the CA checks every device's evidence against."""
    if recipe.rot.driver != "tpm2":
        return None
    return policy_from_options(recipe.rot.options(), recipe_dir)


def outstanding(workspace: Workspace, batch_name: str) -> list[int]:
    """Device ids of the batch still to provision (pending, or issued but not written).

    A cancelled batch has none by decision, not by accident: it is refused.
    """
    with workspace.registry() as registry, registry.reading() as session:
        found = session.execute(
            select(Batch.id, Batch.state).where(Batch.name == batch_name)
        ).one_or_none()
        if found is None:
            raise ConfigError(f"no batch {batch_name!r}")
        batch_id, state = found
        if state == CANCELLED:
            raise ConflictError(
                f"batch {batch_name!r} is cancelled: it cannot be resumed",
                slug="batch-cancelled",
            )
        return list(
            session.scalars(
                select(Device.id)
                .where(
                    Device.batch_id == batch_id,
                    Device.state.in_([DeviceState.PENDING, DeviceState.ISSUED]),
                )
                .order_by(Device.slot)
            )
        )


_station: Station | None = None
_stop: Any = None  # the pool's multiprocessing Event, inherited by the forked workers


def _die_with_parent() -> None:
    """Ask Linux to kill this worker when the station process dies (even by SIGKILL)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _start_worker(home: str, batch_name: str) -> None:
    global _station
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    _station = Station(Workspace(Path(home)), batch_name)
    gc.freeze()  # start-up objects (and the parent's, shared after fork) leave the collector's
    # sight: a worker lives for one batch, so nothing frozen here is kept for long


def _run_chunk(device_ids: list[int]) -> Outcome:
    assert _station is not None
    if _stop is not None and _stop.is_set():
        return Outcome(0, stopped=True)
    return _station.run(device_ids)


def run_batch(
    workspace: Workspace,
    batch_name: str,
    workers: int = 1,
    on_progress: Callable[[int], None] = lambda n: None,
) -> Summary:
    """Provision every outstanding device of a batch; safe to call again after a crash.

    A cancel stops it between chunks: ``cancel_batch`` in this process through
    the run's stop event, from anywhere else through the batch's state.
    """
    if not 1 <= workers <= MAX_WORKERS:
        raise ConfigError(f"--workers must be 1 to {MAX_WORKERS}")
    todo = outstanding(workspace, batch_name)
    size = chunk_size(len(todo), workers)
    chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
    failures: list[tuple[str, str]] = []
    stopped = False
    with _runs.running(batch_name) as run:
        for outcome in _outcomes(workspace, batch_name, chunks, workers, run.stop):
            failures += outcome.failures
            stopped = stopped or outcome.stopped
            on_progress(outcome.provisioned + len(outcome.failures))
    if stopped:
        return _stopped(workspace, batch_name, tuple(failures))
    return _finish(workspace, batch_name, tuple(failures))


def chunk_size(devices: int, workers: int) -> int:
    """Devices per chunk: large enough that a chunk's fixed cost (its queries, two commits,
    the unique-id check) fades beside its signatures, small enough that every worker
    gets several chunks to balance on. Between ``CHUNK`` and ``MAX_CHUNK``."""
    return max(CHUNK, min(MAX_CHUNK, devices // (workers * CHUNKS_PER_WORKER)))


def _outcomes(
    workspace: Workspace,
    batch_name: str,
    chunks: list[list[int]],
    workers: int,
    stop: threading.Event,
) -> Iterable[Outcome]:
    """Each chunk's outcome; after a stopped one, none (one process) or quick no-ops (a pool)."""
    if workers == 1 or len(chunks) <= 1:
        station = Station(workspace, batch_name)  # no gc.freeze(): this may be a server
        try:
            for chunk in chunks:
                outcome = Outcome(0, stopped=True) if stop.is_set() else station.run(chunk)
                yield outcome
                if outcome.stopped:
                    return
        finally:
            station.close()
        return
    global _stop
    context = multiprocessing.get_context("fork")
    _stop = context.Event()  # made before the fork, so every worker shares it
    try:
        with context.Pool(workers, _start_worker, (str(workspace.home), batch_name)) as pool:
            for outcome in pool.imap_unordered(_run_chunk, chunks):
                if stop.is_set() or outcome.stopped:
                    _stop.set()  # the chunks still queued return at once
                yield outcome
    finally:
        _stop = None


def _stopped(
    workspace: Workspace, batch_name: str, failures: tuple[tuple[str, str], ...]
) -> Summary:
    """The summary of a run that a cancel stopped: counts as the registry has them."""
    with workspace.registry() as registry, registry.reading() as session:
        batch = session.scalars(select(Batch).where(Batch.name == batch_name)).one()
        counts = queries.state_counts(session, batch.id)
    provisioned = counts.get(DeviceState.PROVISIONED, 0)
    return Summary(batch_name, batch.count, provisioned, counts.get(DeviceState.FAILED, 0),
                   failures, stopped=True)  # fmt: skip


def _finish(
    workspace: Workspace, batch_name: str, failures: tuple[tuple[str, str], ...]
) -> Summary:
    with workspace.registry() as registry:
        with registry.reading() as session:
            batch = session.scalars(select(Batch).where(Batch.name == batch_name)).one()
            counts = queries.state_counts(session, batch.id)
        provisioned = counts.get(DeviceState.PROVISIONED, 0)
        failed = counts.get(DeviceState.FAILED, 0)
        if provisioned + failed == batch.count and batch.state == "running":
            _close_batch(workspace, registry, batch_name, provisioned, failed)
        return Summary(batch_name, batch.count, provisioned, failed, failures)


def _close_batch(
    workspace: Workspace, registry: Registry, batch_name: str, provisioned: int, failed: int
) -> None:
    """Mark the batch finished and sign a checkpoint over the audit head."""
    # Its CA key opens only now (it may mean an HSM login); the checkpoint's
    # witness file goes where every other checkpoint of this workspace goes.
    authority = Authority.open(workspace, registry)
    with registry.transaction() as session:
        batch = session.scalars(select(Batch).where(Batch.name == batch_name)).one()
        if batch.state != "running":  # another station finished it meanwhile, or cancelled it
            return
        batch.state, batch.finished_at = "finished", utc_now()
        audit.append(
            session, "batch.finished", batch_name, {"provisioned": provisioned, "failed": failed}
        )
        authority.checkpoint(session)  # auditors get a signed head, witnessed once committed


@dataclass(frozen=True)
class Cancellation:
    """What cancelling a batch did.

    ``released``: pending devices now ``cancelled`` (nothing was issued for them).
    ``issued``: devices whose certificates are recorded but not written back;
    they stay ``issued`` and are not finished (revoke them if they never ship).
    ``changed`` is false when the batch was already cancelled; ``stopped`` says
    that a run of it in this process was stopped first.
    """

    batch: str
    changed: bool
    released: int
    issued: int
    stopped: bool = False


def cancel_batch(
    workspace: Workspace, batch_name: str, *, by: str, wait: float = STOP_WAIT
) -> Cancellation:
    """Stop a batch for good: stop its runs, release its pending devices, record one event.

    A run of the batch in this process (the service's) is asked to stop and
    given ``wait`` seconds to finish its chunk in hand; if it cannot, nothing
    changes and the refusal (409 ``batch-running``) says to try again. Runs
    elsewhere stop at their next chunk: each reads the batch's state first and
    again, under a shared lock on the batch row, before it records anything.

    Pending devices become ``cancelled`` rather than being deleted: their serials
    were reserved and announced by ``batch.started``, and a kept row keeps each
    serial from ever being handed out again and explains every gap. Nothing
    issued is touched: those certificates are recorded, so no certificate goes
    unaccounted for.
    """
    stopped = _runs.stop(batch_name, wait)
    if stopped is False:
        raise ConflictError(
            f"batch {batch_name!r} did not stop within {wait:g} s: try again",
            slug="batch-running",
        )
    with workspace.registry() as registry, registry.transaction() as session:
        done = _cancel(session, workspace, registry, batch_name, by)
    return dataclasses.replace(done, stopped=bool(stopped))


def _cancel(
    session: Session, workspace: Workspace, registry: Registry, batch_name: str, by: str
) -> Cancellation:
    batch = session.scalars(
        select(Batch).where(Batch.name == batch_name).with_for_update()  # see _record_chunk
    ).one_or_none()
    if batch is None:
        raise NotFoundError(f"no batch named {batch_name!r}", slug="batch-not-found")
    if batch.state == CANCELLED:
        return Cancellation(batch_name, False, 0, 0)
    if batch.state != "running":
        raise ConflictError(f"batch {batch_name!r} is {batch.state}", slug="batch-finished")
    counts = queries.state_counts(session, batch.id)
    released, issued = counts.get(DeviceState.PENDING, 0), counts.get(DeviceState.ISSUED, 0)
    session.execute(
        update(Device)
        .where(Device.batch_id == batch.id, Device.state == DeviceState.PENDING)
        .values(state=DeviceState.CANCELLED)
    )
    batch.state, batch.finished_at = CANCELLED, utc_now()
    details = {"released": released, "issued": issued, "by": by}
    audit.append(session, "batch.cancelled", batch_name, details)
    Authority.open(workspace, registry).checkpoint(session)
    return Cancellation(batch_name, True, int(released), int(issued))


__all__ = ["Cancellation", "Summary", "cancel_batch", "create_batch", "outstanding", "run_batch"]
