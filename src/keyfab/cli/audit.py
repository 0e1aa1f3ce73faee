"""``keyfab audit``: check the hash chain, its checkpoints and their witnesses."""

from __future__ import annotations

from pathlib import Path

import typer
from cryptography import x509

from keyfab import audit as audit_log
from keyfab.authority import Authority
from keyfab.cli._context import workspace
from keyfab.cli._output import JSON_OPTION, console, emit_json
from keyfab.errors import AuditError
from keyfab.pki.files import load_certificates

app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)


@app.command()
def verify(
    ctx: typer.Context,
    signers: list[Path] = typer.Option(
        None,
        "--signer",
        help="PEM certificate whose checkpoints you trust (repeatable) "
        "[default: this workspace's manufacturing CAs, retired ones too].",
    ),
    checkpoints: list[Path] = typer.Option(
        None,
        "--checkpoint",
        help="A witnessed checkpoint file to anchor the log to (repeatable; the newest counts) "
        "[default: the witness directory's].",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Recompute the chain, check signed and witnessed checkpoints; exit 1 naming the first break.

    With --signer or --checkpoint a witnessed checkpoint is required: without
    one, nothing signed proves the log was not cut back or rebuilt.
    """
    with Authority.open(workspace(ctx)) as authority:
        trusted = _load_signers(signers) if signers else authority.signers()
        given = [audit_log.witness.read(path) for path in checkpoints or ()]
        witnesses = given or audit_log.witness.found(authority.witness)  # before the snapshot
        with authority.registry.reading() as session:
            verdict = audit_log.verify_log(
                session, trusted, witnesses, require_witness=bool(signers or checkpoints)
            )
    if as_json:
        emit_json(_as_json(verdict))
    if not verdict.ok:
        raise AuditError(verdict.problem)
    if not as_json:
        _say(verdict)


def _as_json(verdict: audit_log.Verdict) -> dict[str, object]:
    chain, points, anchor = verdict.chain, verdict.checkpoints, verdict.anchor
    return {
        "ok": verdict.ok,
        "events": chain.events,
        "head": chain.head_hash,
        "broken_at": chain.broken_at,
        "reason": chain.reason,
        "problem": verdict.problem,
        "checkpoints": points.checked if points else 0,
        "latest_checkpoint": points.latest if points else None,
        "witnesses": verdict.witnesses,
        "witnessed_seq": anchor.point.seq if anchor else None,
        "witness_source": str(anchor.source) if anchor else None,
        "unproven": list(verdict.unproven),
    }


def _say(verdict: audit_log.Verdict) -> None:
    chain, points, anchor = verdict.chain, verdict.checkpoints, verdict.anchor
    checked = points.checked if points else 0
    console.print(
        f"[green]audit log intact[/]: {chain.events} events, head {chain.head_hash[:16]}…, "
        f"{checked} signed checkpoint(s), newest covering event "
        f"{points.latest if points else None}",
        highlight=False,
    )
    if anchor is None:
        console.print(
            "proven: every link of the chain (no event changed, removed or reordered in place)",
            markup=False,
            highlight=False,
        )
    else:
        console.print(
            f"witnessed: the log holds event {anchor.point.seq} as {anchor.source} signed it "
            f"({verdict.witnesses} witness file(s) checked)",
            markup=False,
            highlight=False,
        )
    for gap in verdict.unproven:
        console.print(f"[yellow]not proven[/]: {gap}", highlight=False)


@app.command()
def checkpoint(ctx: typer.Context) -> None:
    """Sign the current head of the chain with the manufacturing CA's key and witness it."""
    with Authority.open(workspace(ctx)) as authority, authority.transaction() as session:
        seq = authority.checkpoint(session)
        where = authority.witness
    console.print(f"checkpoint signed as event {seq}, witnessed in {where}", markup=False)


def _load_signers(paths: list[Path]) -> list[x509.Certificate]:
    return [c for path in paths for c in load_certificates(path, "signer certificate")]
