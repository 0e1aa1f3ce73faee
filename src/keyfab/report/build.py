"""Write an evidence pack: SBOM, evidence, HTML, PDF, then the signed manifest.

The signature comes last and over everything: the authority certifies a
one-time key for this manifest (recording the report event in the same
transaction), the key signs it once and is dropped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from keyfab.authority import Authority
from keyfab.authority.reports import certify_report
from keyfab.errors import ReportError
from keyfab.report import render, signature
from keyfab.report.evidence import gather
from keyfab.report.pack import FILES, MANIFEST, SIGNATURE, manifest
from keyfab.report.requirements import assess
from keyfab.report.sbom import write_sbom


def write_pack(
    authority: Authority, product: str, batches: Sequence[str], folder: Path
) -> dict[str, object]:
    """Write the pack for ``product`` into ``folder`` (new or empty of pack files)."""
    folder.mkdir(parents=True, exist_ok=True)
    taken = [name for name in (*FILES, MANIFEST, SIGNATURE) if (folder / name).exists()]
    if taken:
        raise ReportError(f"{folder} already holds {taken[0]}: choose an empty directory")
    sbom = write_sbom(folder)
    evidence = gather(authority, product, batches, sbom)
    evidence["requirements"] = assess(evidence)
    document = render.html(evidence)
    (folder / "evidence.json").write_text(json.dumps(evidence, indent=2, sort_keys=True) + "\n")
    (folder / "report.html").write_text(document)
    (folder / "report.pdf").write_bytes(render.pdf(document))
    listed = manifest(folder)
    signer = certify_report(
        authority,
        product,
        [b["name"] for b in evidence["batches"]],
        hashlib.sha256(listed).hexdigest(),
    )
    (folder / MANIFEST).write_bytes(listed)
    (folder / SIGNATURE).write_bytes(
        signature.sign(listed, signer.key, signer.certificate, signer.chain)
    )
    return evidence
