"""How ``keyfab agent status`` and ``keyfab device status`` print a status: one fact a line."""

from __future__ import annotations

from typing import Any

import typer


def render_status(report: dict[str, Any]) -> None:
    certificate = report.get("certificate") or {}
    attestation = report.get("attestation") or {}
    boot = report.get("boot") or {}
    events = report.get("events") or []
    lines = [
        ("agent", report.get("agent", "running")),
        ("root of trust", report.get("rot")),
        ("serial", report.get("serial") or "-"),
        ("certificate", certificate.get("subject") or certificate.get("error", "-")),
        ("expires", certificate.get("not_after", "-")),
        ("operational", "yes" if certificate.get("operational") else "no (factory identity)"),
        ("last attestation", _attestation(attestation)),
        ("boot check", _boot(boot)),
        ("service", f"REFUSED: {report['refused']}" if report.get("refused") else "in service"),
        ("tamper events", str(sum(1 for e in events if e.get("kind") == "tamper"))),
    ]
    for name, value in lines:
        typer.echo(f"{name:17} {value}")


def _attestation(result: dict[str, Any]) -> str:
    if not result:
        return "never"
    reasons = "; ".join(result.get("reasons") or [])
    return f"{result.get('verdict')} at {result.get('at')}" + (f" ({reasons})" if reasons else "")


def _boot(boot: dict[str, Any]) -> str:
    if not boot:
        return "not configured"
    if boot.get("ok"):
        return f"release {boot.get('release')} ok at {boot.get('at')}"
    return f"MISMATCH at {boot.get('at')}: " + "; ".join(boot.get("problems") or [])[:200]
