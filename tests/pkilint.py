"""DigiCert's pkilint as an independent judge of what keyfab writes (tests only).

Each linter runs as its own command-line tool on DER bytes; a finding at
WARNING or worse is returned as ``validator: code (SEVERITY)`` so a failing
assertion names it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def findings(linter: str, der: bytes, folder: Path) -> list[str]:
    """pkilint's findings (WARNING and worse) for one document, e.g. ``lint_pkix_cert``."""
    document = folder / f"{linter}.der"
    document.write_bytes(der)
    result = subprocess.run(
        [str(BIN / linter), "lint", "-s", "WARNING", "-f", "JSON", str(document)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.stdout.startswith("{"), result.stderr  # the exit code counts findings
    return [
        f"{item['validator']}: {finding['code']} ({finding['severity']})"
        for item in json.loads(result.stdout)["results"]
        for finding in item["finding_descriptions"]
    ]
