"""The web dashboard: fleet, batches, devices, audit and admin pages, server-rendered.

Pages read through ``registry.queries`` (keyset pages, counts from indexes)
and act through the same authority and provisioning functions as the REST API
and the CLI; nothing here writes. A page needs a dashboard session
(``_session``); its role decides what it shows and which forms it offers,
and every action checks the role again, whatever the page showed.
Errors are pages too, with the status the API would answer.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from cryptography.hazmat.primitives.serialization import Encoding
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute

from keyfab import audit
from keyfab.audit.checkpoint import KIND as CHECKPOINT
from keyfab.authority import Role, revoke_device, sessions, tokens
from keyfab.authority.access import from_certificate, from_token
from keyfab.clock import parse_duration, utc_now
from keyfab.errors import KeyfabError, PermissionDeniedError
from keyfab.names import pattern
from keyfab.pki import Profile, RevocationReason
from keyfab.provision import cancel_batch
from keyfab.registry import AttestationState, DeviceState, queries
from keyfab.server import _session
from keyfab.server._charts import bar_chart
from keyfab.server._html import render
from keyfab.server._peer import peer_certificate
from keyfab.server._session import SignInRequired, Viewer, viewer
from keyfab.server.auth import service
from keyfab.server.problems import ProblemError, from_keyfab_error

SIGNIN = "/dashboard/signin"
STALE_AFTER = datetime.timedelta(days=1)
PAGE = 50
Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class DashboardRoute(APIRoute):
    """Routes whose failures are pages: a sign-in redirect, or an error page with its status."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired:
                return RedirectResponse(SIGNIN, status_code=303)
            except KeyfabError as error:
                return _error(request, from_keyfab_error(error))
            except ProblemError as problem:
                return _error(request, problem)
            except RequestValidationError:
                return _error(request, ProblemError(400, "invalid-request", "bad parameters"))

        return answer


def _error(request: Request, problem: ProblemError) -> Response:
    return render(request, "error.html", problem.status, problem=problem, viewer=None)


router = APIRouter(prefix="/dashboard", include_in_schema=False, route_class=DashboardRoute)
Seen = Annotated[Viewer, Depends(viewer)]
Form = Annotated[dict[str, str], Depends(_session.form)]
BatchName = Annotated[str, Path(pattern=pattern("batch"))]
Serial = Annotated[str, Path(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]


def _writer(request: Request, seen: Viewer, fields: dict[str, str]) -> None:
    _session.check_form(request, fields)
    if not seen.writes:
        raise PermissionDeniedError(f"role {seen.principal.role} changes nothing")


def _admin(seen: Viewer) -> None:
    if not seen.admin:
        raise PermissionDeniedError("the admin page is for the admin role only")


# --- signing in and out ---


@router.get("/signin")
def signin_form(request: Request) -> Response:
    response = Response()
    token = _session.signin_token(request, response)
    page = render(
        request,
        "signin.html",
        viewer=None,
        csrf=token,
        certificate=peer_certificate(request.scope) is not None,
    )
    page.raw_headers.extend(h for h in response.raw_headers if h[0] == b"set-cookie")
    return page


def _signed_in(request: Request, principal_: Any) -> Response:
    new = sessions.open_session(service(request).authority, principal_)
    response = RedirectResponse("/dashboard", status_code=303)
    _session.set_session(request, response, new)
    return response


@router.post("/signin")
def signin(request: Request, fields: Form) -> Response:
    """Exchange an API token (or the TLS client certificate) for a session cookie."""
    _session.check_signin_form(request, fields)
    peer = peer_certificate(request.scope)
    if fields.get("with") == "certificate" and peer is not None:
        return _signed_in(request, from_certificate(service(request).registry, peer))
    return _signed_in(
        request, from_token(service(request).registry, fields.get("token", "").strip())
    )


@router.post("/signout")
def signout(request: Request, fields: Form) -> Response:
    _session.check_form(request, fields)
    sessions.close_session(service(request).authority, request.cookies.get(_session.COOKIE, ""))
    response = RedirectResponse(SIGNIN, status_code=303)
    _session.clear_session(request, response)
    return response


# --- fleet ---


@router.get("")
def fleet(request: Request, seen: Seen) -> Response:
    registry = service(request).registry
    counts = queries.fleet(registry)
    return render(
        request,
        "fleet.html",
        viewer=seen,
        fleet=counts,
        states=[s.value for s in DeviceState],
        attestation=queries.attestation_counts(registry, STALE_AFTER),
        attestation_states=[s.value for s in AttestationState],
        stale_after=STALE_AFTER,
    )


# --- batches ---


def _yield(devices: dict[str, int] | Any) -> float | None:
    done = devices.get("provisioned", 0) + devices.get("revoked", 0)
    failed = devices.get("failed", 0)
    return None if done + failed == 0 else 100.0 * done / (done + failed)


def _daily(summaries: Any) -> list[tuple[str, float]]:
    """Yield per day of the batches created that day, the last fortnight."""
    since = (utc_now() - datetime.timedelta(days=13)).date()
    days: dict[str, dict[str, int]] = {}
    for found in summaries:
        day = found.batch.created_at.date()
        if day >= since:
            per = days.setdefault(day.isoformat(), {})
            for state, n in found.devices.items():
                per[state] = per.get(state, 0) + n
    return [(d, y) for d, per in sorted(days.items()) if (y := _yield(per)) is not None]


@router.get("/batches")
def batch_list(request: Request, seen: Seen) -> Response:
    svc = service(request)
    summaries = list(queries.batches(svc.registry))
    start = datetime.datetime.combine(
        (utc_now() - datetime.timedelta(days=13)).date(), datetime.time(), datetime.UTC
    )
    per_day = queries.throughput(svc.registry, since=start, period="day")
    throughput = [(when.strftime("%m-%d"), float(n)) for when, n in per_day.points]
    return render(
        request,
        "batches.html",
        viewer=seen,
        batches=list(reversed(summaries)),
        yield_of=_yield,
        running=svc.running,
        throughput_chart=bar_chart(throughput, title="devices provisioned per day"),
        yield_chart=bar_chart(_daily(summaries), title="yield per day", unit="%", top=100.0),
    )


def _progress_context(request: Request, name: str) -> dict[str, Any]:
    svc = service(request)
    found = queries.batch_summary(svc.registry, name)
    age = (found.last_provisioned or utc_now()) - found.batch.created_at
    per = "minute" if age < datetime.timedelta(hours=2) else "hour"
    points = queries.throughput(
        svc.registry, batch=name, since=found.batch.created_at, period=per
    ).points
    label = "%H:%M" if per == "minute" else "%m-%d %H"
    chart = [(when.strftime(label), float(n)) for when, n in points]
    done = sum(n for s, n in found.devices.items() if s not in ("pending", "cancelled"))
    return {
        "found": found,
        "done": done,
        "yield_": _yield(found.devices),
        "running": svc.running(name) or found.batch.state == "running",
        "chart": bar_chart(chart, title=f"devices provisioned per {per}"),
    }


@router.get("/batches/{name}")
def batch(request: Request, seen: Seen, name: BatchName) -> Response:
    failures = queries.device_page(
        service(request).registry, batch=name, state=DeviceState.FAILED, limit=20
    )
    return render(
        request,
        "batch.html",
        viewer=seen,
        failures=failures,
        **_progress_context(request, name),
    )


@router.get("/batches/{name}/progress")
def batch_progress(request: Request, seen: Seen, name: BatchName) -> Response:
    """The live part of a batch's page, fetched again every few seconds while it runs."""
    context = _progress_context(request, name)
    page = render(request, "_progress.html", viewer=seen, **context)
    if not context["running"]:
        page.headers["X-Keyfab-Poll"] = "stop"
    return page


@router.post("/batches/{name}/cancel")
def cancel(request: Request, seen: Seen, fields: Form, name: BatchName) -> Response:
    _writer(request, seen, fields)
    cancel_batch(service(request).workspace, name, by=seen.principal.name)
    return RedirectResponse(f"/dashboard/batches/{name}", status_code=303)


# --- devices ---


@router.get("/devices")
def devices(
    request: Request,
    seen: Seen,
    state: DeviceState | None = None,
    batch: Annotated[str | None, Query(pattern=pattern("batch"))] = None,
    serial: Annotated[str | None, Query(max_length=64)] = None,
    after: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    found = queries.device_page(
        service(request).registry,
        batch=batch or None,
        state=state.value if state else None,
        serial=serial or None,
        after=after,
        limit=PAGE,
    )
    return render(
        request,
        "devices.html",
        viewer=seen,
        page=found,
        states=[s.value for s in DeviceState],
        query={"state": state.value if state else "", "batch": batch or "", "serial": serial or ""},
    )


@router.get("/devices/{serial}")
def device(request: Request, seen: Seen, serial: Serial) -> Response:
    registry = service(request).registry
    found = queries.device(registry, serial)
    subjects = [serial, *{c.subject for c in found.certificates}]
    return render(
        request,
        "device.html",
        viewer=seen,
        found=found,
        now=utc_now(),
        attestation=queries.attestation_history(registry, serial, limit=20).results,
        events=queries.audit_events(registry, subjects=subjects, limit=PAGE),
        reasons=[r.value for r in RevocationReason],
    )


@router.post("/devices/{serial}/revoke")
def revoke(request: Request, seen: Seen, fields: Form, serial: Serial) -> Response:
    _writer(request, seen, fields)
    reason = RevocationReason.parse(fields.get("reason") or "unspecified")
    revoke_device(service(request).authority, serial, reason, by=seen.principal.name)
    return RedirectResponse(f"/dashboard/devices/{serial}", status_code=303)


# --- audit ---


@router.get("/audit")
def audit_page(
    request: Request,
    seen: Seen,
    kind: Annotated[str | None, Query(max_length=64)] = None,
    subject: Annotated[str | None, Query(max_length=256)] = None,
    before: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    svc = service(request)
    trusted = [c.public_bytes(Encoding.DER) for c in svc.authority.signers()]
    points = queries.recent_checkpoints(svc.registry, CHECKPOINT, limit=10)
    checked = [(p, audit.judge(p.event.data, p.covered_hash, trusted)) for p in points.items]
    events = queries.audit_events(
        svc.registry,
        kind=kind or None,
        subjects=[subject] if subject else (),
        before=before,
        limit=PAGE,
    )
    return render(
        request,
        "audit.html",
        viewer=seen,
        head=queries.audit_head(svc.registry),
        checkpoints=checked,
        events=events,
        query={"kind": kind or "", "subject": subject or ""},
    )


@router.get("/audit/verify")
def audit_verify(request: Request, seen: Seen) -> Response:
    """The whole log checked as ``keyfab audit verify`` does: it reads every event."""
    authority = service(request).authority
    witnesses = audit.witness.found(authority.witness)  # before the snapshot, as the CLI does
    with authority.registry.reading() as session:
        verdict = audit.verify_log(session, authority.signers(), witnesses, require_witness=False)
    return render(request, "verify.html", viewer=seen, verdict=verdict)


# --- admin ---


@router.get("/admin")
def admin(request: Request, seen: Seen) -> Response:
    _admin(seen)
    registry = service(request).registry
    return render(
        request,
        "admin.html",
        viewer=seen,
        tokens=queries.tokens(registry),
        stations=queries.issued_certificates(registry, Profile.STATION),
        roles=[r.value for r in Role],
        now=utc_now(),
        created=None,
    )


@router.post("/admin/tokens")
def create_token(request: Request, seen: Seen, fields: Form) -> Response:
    _session.check_form(request, fields)
    _admin(seen)
    expires = fields.get("expires", "").strip()
    made = tokens.create(
        service(request).authority,
        fields.get("name", "").strip(),
        Role(fields.get("role", "")) if fields.get("role") in set(Role) else Role.AUDITOR,
        expires_in=parse_duration(expires, "expires") if expires else None,
    )
    registry = service(request).registry
    return render(
        request,
        "admin.html",
        viewer=seen,
        tokens=queries.tokens(registry),
        stations=queries.issued_certificates(registry, Profile.STATION),
        roles=[r.value for r in Role],
        now=utc_now(),
        created=made,
    )


@router.post("/admin/tokens/{name}/revoke")
def revoke_token(request: Request, seen: Seen, fields: Form, name: str) -> Response:
    _session.check_form(request, fields)
    _admin(seen)
    tokens.revoke(service(request).authority, name)
    return RedirectResponse("/dashboard/admin", status_code=303)
