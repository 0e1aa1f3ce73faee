"""CMP over HTTP (RFC 6712) at ``/.well-known/cmp`` (and ``/.well-known/cmp/p/<label>``).

HTTP only: the body goes to ``cmp.Responder`` unchanged and its answer comes
back as ``application/pkixcmp``. RFC 6712 §3.3 ("General Form"; §3.6 is the
Request-URI): the CMP response to a request, an error PKIMessage included,
comes with 200 and no other 2xx; 4xx/5xx "MAY be used to inform the client
about errors", which keyfab does only where HTTP itself failed: unreadable
DER 400 (still with a CMP error body), a wrong media type 415, an oversized
body 413.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from starlette.concurrency import run_in_threadpool

from keyfab.cmp.messages import MAX_MESSAGE, PKIX_CMP
from keyfab.server.auth import service
from keyfab.server.problems import ProblemError, problem_responses

router = APIRouter(prefix="/.well-known/cmp", tags=["cmp"])
_BODY = {
    "requestBody": {
        "required": True,
        "content": {PKIX_CMP: {"schema": {"type": "string", "format": "binary"}}},
    }
}
_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {"content": {PKIX_CMP: {}}, "description": "a DER PKIMessage"},
    **problem_responses(413, 415, 422),
}


async def _answer(request: Request) -> Response:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != PKIX_CMP:
        raise ProblemError(415, "unsupported-media-type", f"send a PKIMessage as {PKIX_CMP}")
    body = await request.body()
    if len(body) > MAX_MESSAGE:
        raise ProblemError(
            413, "payload-too-large", f"a CMP message is at most {MAX_MESSAGE} bytes"
        )
    answer = await run_in_threadpool(service(request).cmp.handle, body)
    return Response(answer.der, status_code=answer.status, media_type=PKIX_CMP)


@router.post("", responses=_ANSWER, openapi_extra=_BODY)
async def cmp(request: Request) -> Response:
    """One CMP request (ir, cr, p10cr, kur, certConf, pollReq, rr, genm), one answer."""
    return await _answer(request)


@router.post("/p/{label}", responses=_ANSWER, openapi_extra=_BODY)
async def cmp_labelled(
    request: Request, label: Annotated[str, Path(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
) -> Response:
    """The same responder under a CMP alias (RFC 9483 §6.1): keyfab has one CA."""
    return await _answer(request)
