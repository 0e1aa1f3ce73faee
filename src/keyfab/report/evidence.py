"""What keyfab holds for a product, gathered into the one dictionary ``evidence.json`` is.

Every figure comes from ``registry.queries`` scoped to the product's batches,
the CA keys' protection from their roots of trust, the lint results from
pkilint, the audit verdict from ``audit.verify_log``: the HTML and the PDF
are rendered from this dictionary and nothing else, so the three agree.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Sequence
from typing import Any

from keyfab import audit
from keyfab.authority import Authority
from keyfab.clock import utc_now
from keyfab.errors import KeyfabError, NotFoundError
from keyfab.pki.display import readable_name
from keyfab.registry import queries
from keyfab.registry.models import Batch
from keyfab.report import lint
from keyfab.report.sbom import SBOM_NAME, Sbom
from keyfab.rot import key_protection, parse_key_uri

FORMAT = 1
RECENT_CHECKPOINTS = 10


def _when(value: datetime.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def gather(authority: Authority, product: str, names: Sequence[str], sbom: Sbom) -> dict[str, Any]:
    """The evidence for ``product`` (its batches ``names``, or all of them)."""
    batches = queries.product_batches(authority.registry, product, names)
    if not batches:
        raise NotFoundError(f"no batch of product {product!r}", slug="batch-not-found")
    ids = [batch.id for batch in batches]
    figures = queries.fleet_figures(authority.registry, ids)
    return {
        "keyfab_evidence_pack": FORMAT,
        "generated_at": utc_now().isoformat(),
        "product": product,
        "organization": authority.organization,
        "batches": [_batch(batch) for batch in batches],
        "devices": {
            "total": sum(figures.states.values()),
            "states": dict(sorted(figures.states.items())),
            "failures": dict(sorted(figures.failures.items())),
        },
        "certificates": {
            "by_profile": dict(sorted(figures.certificates.items())),
            "revoked": dict(sorted(figures.revocations.items())),
        },
        "attestation": {
            "devices": dict(sorted(figures.attestation.items())),
            "results": dict(sorted(figures.results.items())),
            "failure_reasons": dict(sorted(figures.result_reasons.items())),
            "policy": _policy(authority, product),
        },
        "releases": _releases(authority, product),
        "cas": [_ca(authority, name) for name in authority.records],
        "profiles": _lints(authority, ids),
        "audit": _audit(authority),
        "sbom": {"file": SBOM_NAME, **dataclasses.asdict(sbom)},
    }


def _batch(batch: Batch) -> dict[str, Any]:
    return {
        "name": batch.name,
        "count": batch.count,
        "state": batch.state,
        "created_at": _when(batch.created_at),
        "finished_at": _when(batch.finished_at),
    }


def _policy(authority: Authority, product: str) -> dict[str, Any] | None:
    try:
        found = queries.attestation_policy(authority.registry, product)
    except NotFoundError:
        return None
    return {"sha256": found.digest, "updated_at": _when(found.updated_at)}


def _releases(authority: Authority, product: str) -> list[dict[str, Any]]:
    return [
        {
            "version": release.version,
            "rollback_index": release.rollback_index,
            "key_name": release.key_name,
            "key_sha256": release.key_fingerprint,
            "algorithm": release.algorithm,
            "image": release.image,
            "signed_at": _when(release.created_at),
        }
        for release in queries.releases(authority.registry, product)
    ]


def _ca(authority: Authority, name: str) -> dict[str, Any]:
    """A CA, where its key lives (URI without secrets) and what its root of trust says of it."""
    record, certificate = authority.record_of(name), authority.certificate_of(name)
    entry: dict[str, Any] = {
        "name": name,
        "kind": record.kind,
        "state": str(authority.state(name)),
        "subject": readable_name(certificate.subject),
        "not_after": _when(certificate.not_valid_after_utc),
        "key_uri": str(parse_key_uri(record.key_uri)),  # redacted: no PIN
    }
    try:
        found = key_protection(record.key_uri)
    except KeyfabError as error:  # an unreachable token is evidence too, said plainly
        return {**entry, "storage": None, "problem": str(error)}
    return {
        **entry,
        "storage": found.scheme,
        "hardware": found.hardware,
        "attributes": dict(found.attributes),
        "non_exportable": found.non_exportable,
        "note": found.note,
    }


def _lints(authority: Authority, ids: Sequence[int]) -> dict[str, Any]:
    run = lint.linter()
    if run is None:
        return {"linter": None, "results": []}
    documents = [
        (readable_name(authority.certificate_of(n).subject), str(r.kind) + "-ca", "", r.certificate)
        for n, r in authority.records.items()
    ]
    documents += [
        (row.subject, row.profile, row.serial_number, row.der)
        for row in queries.newest_per_profile(authority.registry, ids)
    ]
    return {
        "linter": f"pkilint {lint.version()} (RFC 5280, findings at {lint.THRESHOLD} or worse)",
        "results": [
            dataclasses.asdict(lint.Lint(subject, profile, serial, run(der)))
            for subject, profile, serial, der in documents
        ],
    }


def _audit(authority: Authority) -> dict[str, Any]:
    """``keyfab audit verify``'s verdict, and the newest signed checkpoints."""
    witnesses = audit.witness.found(authority.witness)  # before the snapshot
    with authority.registry.reading() as session:
        verdict = audit.verify_log(session, authority.signers(), witnesses, require_witness=False)
    total, recent = queries.checkpoint_events(authority.registry, RECENT_CHECKPOINTS)
    points = verdict.checkpoints
    return {
        "ok": verdict.ok,
        "problem": verdict.problem,
        "events": verdict.chain.events,
        "head": verdict.chain.head_hash,
        "checkpoints": points.checked if points else 0,
        "checkpoints_recorded": total,
        "latest_checkpoint": points.latest if points else None,
        "witnessed_seq": verdict.anchor.point.seq if verdict.anchor else None,
        "witnesses": verdict.witnesses,
        "unproven": list(verdict.unproven),
        "recent_checkpoints": [
            {"seq": event.seq, "at": _when(event.at), "signer": event.subject,
             "covers": json.loads(event.data).get("seq")}
            for event in recent
        ],
    }  # fmt: skip
