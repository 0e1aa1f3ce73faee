"""The pack's HTML (Jinja2) and PDF (WeasyPrint) from ``evidence.json``'s dictionary.

WeasyPrint was chosen by trying: a pure-Python HTML/CSS paginator (on
Debian's pango), maintained, no browser to start, and the PDF it writes keeps
its text, so ``pdftotext`` reads back the same headings the HTML has. The
HTML is self-contained (style inline, no script, nothing fetched), so an
auditor can open it offline.
"""

from __future__ import annotations

from typing import Any

from keyfab.errors import MissingExtraError

SECTIONS = (
    ("requirements", "Requirements and their evidence"),
    ("batches", "Scope: batches"),
    ("devices", "Devices provisioned and failed"),
    ("certificates", "Device certificates and revocations"),
    ("attestation", "Attestation results"),
    ("releases", "Signed firmware releases"),
    ("cas", "Certificate authorities and their keys"),
    ("profiles", "Certificate profiles linted"),
    ("audit", "Audit chain and signed checkpoints"),
    ("sbom", "Software bill of materials"),
)
"""(id, heading) of every section, in order: the HTML and the PDF have exactly these."""


def html(evidence: dict[str, Any]) -> str:
    """The report as one self-contained HTML document."""
    try:
        import jinja2
    except ImportError:
        raise MissingExtraError("keyfab report evidence", "report") from None
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("keyfab.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    headings = dict(SECTIONS)
    return environment.get_template("report.html.j2").render(
        e=evidence, sections=SECTIONS, headings=headings
    )


def pdf(document: str) -> bytes:
    """The HTML typeset as PDF (A4) by WeasyPrint; nothing is fetched."""
    try:
        import weasyprint
    except (ImportError, OSError):  # OSError: pango missing
        raise MissingExtraError(
            "keyfab report evidence (PDF, with Debian's pango)", "report"
        ) from None
    rendered: bytes = weasyprint.HTML(string=document, url_fetcher=_refuse).write_pdf()
    return rendered


def _refuse(url: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    raise ValueError(f"the report fetches nothing ({url})")
