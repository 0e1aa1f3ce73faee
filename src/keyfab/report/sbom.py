"""keyfab's own software bill of materials: CycloneDX, by CycloneDX's own tool.

``cyclonedx-py environment`` (PyPI ``cyclonedx-bom``, the ``report`` extra)
lists what is installed beside keyfab in the interpreter that runs it: the
code that actually signs and records, not a requirements file's idea of it.
It runs as a separate process, its documented interface.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from keyfab.errors import MissingExtraError, ReportError
from keyfab.securefile import read_bounded

SBOM_NAME = "sbom.cdx.json"
SBOM_MAX = 16 * 1024 * 1024
TIMEOUT = 300


@dataclass(frozen=True)
class Sbom:
    """What the report says of the SBOM file written beside it."""

    spec_version: str
    components: int
    tool: str
    keyfab: str | None  # keyfab's own version as the SBOM lists it


def write_sbom(folder: Path) -> Sbom:
    """Write ``sbom.cdx.json`` into ``folder`` (reproducible: no random serial, no time)."""
    target = folder / SBOM_NAME
    command = [sys.executable, "-m", "cyclonedx_py", "environment", sys.executable]
    options = ["--of", "JSON", "--output-reproducible", "--no-validate", "-o", str(target)]
    try:
        done = subprocess.run(
            [*command, *options], capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        raise ReportError(f"cyclonedx-py took longer than {TIMEOUT} s") from None
    if done.returncode != 0:
        if "No module named cyclonedx_py" in done.stderr:
            raise MissingExtraError("keyfab report evidence", "report")
        raise ReportError(f"cyclonedx-py failed: {done.stderr.strip().splitlines()[-1:]}")
    return _summary(json.loads(read_bounded(target, SBOM_MAX, "SBOM")))


def _summary(bom: dict[str, object]) -> Sbom:
    components = bom.get("components")
    listed = components if isinstance(components, list) else []
    tools = bom.get("metadata", {}).get("tools", {})  # type: ignore[attr-defined]
    names = [f"{t['name']} {t['version']}" for t in tools.get("components", [])][:1]
    ours = [c.get("version") for c in listed if c.get("name") == "keyfab"]
    return Sbom(
        str(bom.get("specVersion")), len(listed), ", ".join(names), ours[0] if ours else None
    )
