"""Every certificate profile keyfab writes, linted by DigiCert's pkilint (RFC 5280).

The certificates come from a real workspace through the same calls the CLI
and the service make (init, a batch, a station, the server's TLS, a manifest
signer, an EST enrolment, a root rollover with its link certificates); the
IAK, which needs a TPM ceremony, is signed from its profile by the same CA.
"""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from keyfab import pki
from keyfab.authority import Authority, Principal, Role, enrolment
from keyfab.authority.credentials import (
    issue_cmp_responder,
    issue_manifest_signer,
    issue_ocsp_signer,
    issue_station,
    issue_tls_server,
)
from keyfab.authority.reports import certify_report
from keyfab.registry import queries
from keyfab.workspace import Workspace
from tests.conftest import Keyfab
from tests.pkilint import findings
from tests.server.est_client import new_csr


def _every_profile(workspace: Workspace, recipe_file: Path) -> None:
    code, _, err = Keyfab(workspace.home)(
        "provision", "--recipe", str(recipe_file), "--count", "1", "--batch", "lint"
    )
    assert code == 0, err
    with Authority.open(workspace) as authority:
        issue_station(authority, "line-1")
        issue_tls_server(authority, ("factory.example", "127.0.0.1"))
        issue_cmp_responder(authority)
        issue_ocsp_signer(authority, authority.issuing)
        certify_report(authority, "acme-gateway", ["lint"], "00" * 32)
        signer = ec.generate_private_key(ec.SECP256R1()).public_key()
        issue_manifest_signer(authority, signer, "manifests", "soft:/nowhere/signer.pem")
        _, body = new_csr("LINT-1")
        request = x509.load_der_x509_csr(base64.b64decode(body))
        enrolment.enrol(authority, Principal("admin", Role.ADMIN), request, None)
        device = pki.DeviceIdentity("LINT-1", "1.3.6.1.4.1.99999.1.1", "Acme", "gateway")
        authority.issue(
            pki.iak(device),
            ec.generate_private_key(ec.SECP256R1()).public_key(),
            key_label="iak",
        )
    code, _, err = Keyfab(workspace.home)("ca", "rotate", "--root")  # new CAs and root links
    assert code == 0, err


def test_every_profile_is_clean(workspace: Workspace, recipe_file: Path, tmp_path: Path) -> None:
    _every_profile(workspace, recipe_file)
    with workspace.registry() as registry:
        cas = {name: row.certificate for name, row in queries.authorities(registry).items()}
        issued = queries.issued_certificates(registry)
    documents = {f"{name} CA": der for name, der in cas.items()}
    documents |= {f"{row.profile} {row.serial_number[:8]}": row.der for row in issued}
    reported = {what: findings("lint_pkix_cert", der, tmp_path) for what, der in documents.items()}
    assert {what: found for what, found in reported.items() if found} == {}
    linted = {row.profile for row in issued} | {pki.Profile.ROOT_CA, pki.Profile.MANUFACTURING_CA}
    assert linted == set(pki.Profile)  # a new profile must be linted here too
