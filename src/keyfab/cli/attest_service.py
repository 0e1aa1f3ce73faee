"""``keyfab attest challenge | verify | history | quote``: the attestation service's commands.

``challenge``, ``verify`` and ``history`` act on the workspace as an operator;
``quote`` runs on the device and needs only its TPM (the ``tpm2`` extra).
"""

from __future__ import annotations

from pathlib import Path

import typer

from keyfab.attest.evidence import MAX_EVENTLOG, MAX_EVIDENCE, collect, parse_evidence
from keyfab.attest.service import Result
from keyfab.authority import Principal, Role
from keyfab.cli._context import operator, workspace
from keyfab.cli._output import JSON_OPTION, console, emit_json, errors, fields, table
from keyfab.errors import ConfigError, KeyNotFoundError, MissingExtraError
from keyfab.securefile import read_bounded

MEASUREMENTS = Path("/sys/kernel/security/tpm0/binary_bios_measurements")


def _principal() -> Principal:
    return Principal(operator(), Role.OPERATOR)


def challenge(
    ctx: typer.Context,
    serial: str = typer.Argument(..., help="The device's serial number."),
    as_json: bool = JSON_OPTION,
) -> None:
    """A one-time nonce for SERIAL, hex (as 'keyfab attest quote --nonce' takes it)."""
    from keyfab.attest import service
    from keyfab.authority import Authority

    with Authority.open(workspace(ctx)) as authority:
        made = service.challenge(authority, serial, _principal())
    shown = {
        "serial": serial,
        "nonce": made.nonce.hex(),
        "expires": made.expires.isoformat(),
        "bank": made.selection.bank,
        "pcrs": list(made.selection.pcrs),
    }
    if as_json:
        emit_json(shown)
    else:
        fields(
            f"challenge for {serial}", {**shown, "pcrs": ",".join(map(str, made.selection.pcrs))}
        )


def verify(
    ctx: typer.Context,
    serial: str = typer.Argument(..., help="The device's serial number."),
    evidence: Path = typer.Argument(..., help="Evidence from 'keyfab attest quote' (JSON)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Verify SERIAL's evidence and record the result; exit 1 if the device failed."""
    from keyfab.attest import service
    from keyfab.authority import Authority

    parsed = parse_evidence(read_bounded(evidence, MAX_EVIDENCE, "evidence"))
    with Authority.open(workspace(ctx)) as authority:
        result = service.verify(authority, serial, _principal(), parsed)
    if as_json:
        emit_json(result.to_json())
    else:
        fields(f"attestation of {serial}: {result.verdict}", _summary(result))
    if not result.trusted:
        errors.print(f"{serial} failed attestation: {'; '.join(result.reasons)}", highlight=False)
        raise typer.Exit(1)


def _summary(result: Result) -> dict[str, object]:
    return {
        "at": result.at.isoformat(),
        "reasons": "; ".join(result.reasons) or "-",
        "notes": "; ".join(result.notes) or "-",
        "resetCount": result.reset_count,
        "restartCount": result.restart_count,
        "clock (ms)": result.clock,
    }


def history(
    ctx: typer.Context,
    serial: str = typer.Argument(..., help="The device's serial number."),
    limit: int = typer.Option(20, "--limit", min=1, max=1000, help="The newest N results."),
    as_json: bool = JSON_OPTION,
) -> None:
    """SERIAL's attestation state and its newest results."""
    from keyfab.registry import queries

    with workspace(ctx).registry() as registry:
        found = queries.attestation_history(registry, serial, limit)
    results = [Result.from_row(serial, row) for row in found.results]
    if as_json:
        attested = found.device.attested_at
        emit_json(
            {
                "serial": serial,
                "state": found.device.attestation,
                "attested_at": None if attested is None else attested.isoformat(),
                "results": [r.to_json() for r in results],
            }
        )
        return
    rows = [
        (r.at.isoformat(), r.verdict, "; ".join(r.reasons) or "-", "; ".join(r.notes) or "-")
        for r in results
    ]
    table(f"{serial}: {found.device.attestation}", ["at", "verdict", "reasons", "notes"], rows)


def _pcrs(text: str) -> list[int]:
    """'0-9' or '0,1,7' or '0-7,9'."""
    chosen: set[int] = set()
    try:
        for part in text.split(","):
            low, _, high = part.partition("-")
            chosen.update(range(int(low), int(high or low) + 1))
    except ValueError:
        raise ConfigError(f"--pcrs {text[:32]!r}: use e.g. 0-9 or 0,1,7") from None
    if not chosen or min(chosen) < 0 or max(chosen) > 23:
        raise ConfigError("--pcrs: PCRs are 0 to 23")
    return sorted(chosen)


def quote(
    tcti: str = typer.Option(..., "--tcti", help="e.g. device:/dev/tpmrm0, swtpm:port=2321."),
    nonce: str = typer.Option(..., "--nonce", help="The challenge's nonce, hex."),
    pcrs: str = typer.Option("0-9", "--pcrs", help="The PCRs the challenge names."),
    bank: str = typer.Option("sha256", "--bank", help="PCR bank."),
    log: Path = typer.Option(MEASUREMENTS, "--log", help="The boot event log."),
    out: Path = typer.Option(
        None, "--out", "-o", help="File to write the evidence to [default: stdout]."
    ),
) -> None:
    """On the device: quote the PCRs with the IAK over the nonce; print the evidence (JSON)."""
    try:
        from keyfab.rot.tpm2 import open_device
    except ImportError:
        raise MissingExtraError("keyfab attest quote", "tpm2") from None
    try:
        challenge_nonce = bytes.fromhex(nonce)
    except ValueError:
        raise ConfigError("--nonce must be hex") from None
    eventlog = read_bounded(log, MAX_EVENTLOG, "event log")
    with open_device({"tcti": tcti}, 0) as rot:
        try:
            certificate: bytes | None = rot.load_object("iak-cert")
        except KeyNotFoundError:
            certificate = None
        evidence = collect(
            rot, challenge_nonce, _pcrs(pcrs), eventlog, bank=bank, iak_certificate=certificate
        )
    document = evidence.to_json()
    if out is None:
        typer.echo(document.decode())
    else:
        out.write_bytes(document)
        console.print(f"evidence written to {out}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add these commands to the ``attest`` group."""
    for command in (challenge, verify, history, quote):
        app.command(command.__name__)(command)
