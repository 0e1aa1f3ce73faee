"""``keyfab provision --backend tpm2`` over real swtpm instances, attestation checked by the CA."""

from __future__ import annotations

import dataclasses
import json
import secrets
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from tpm2_pytss.constants import TPMA_OBJECT

from keyfab.attest import parse_public
from keyfab.attest._tpm2_crypto import public_key
from keyfab.errors import VerificationError
from keyfab.pki import HARDWARE_MODULE_NAME, CertificateAuthority
from keyfab.provision.flow import issue_device
from keyfab.provision.recipe import parse_recipe
from keyfab.rot import Evidence, KeyAlgorithm
from keyfab.rot.tpm2 import Tpm2RootOfTrust
from keyfab.rot.tpm2._commands import create_persistent
from keyfab.rot.tpm2._templates import KEY_ATTRIBUTES, key_template
from tests.conftest import Keyfab

from . import fleet
from .conftest import LocalCa, Swtpm, SwtpmFactory

RECIPE = fleet.RECIPE + "\n[counters]\nrollback = 3\n"


def _recipe(tmp_path: Path, tpms: list[Swtpm], ca: LocalCa) -> Path:
    path = tmp_path / "recipe.toml"
    tctis = json.dumps([t.tcti for t in tpms])
    path.write_text(RECIPE.format(tctis=tctis, root=ca.root, issuer=ca.issuer))
    return path


def _plant_duplicable_idevid(tpm: Swtpm) -> None:
    """A P-256 key the TPM made but that is not fixedTPM, where the IDevID goes."""
    weak = int(KEY_ATTRIBUTES) & ~int(TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT)
    template = key_template(KeyAlgorithm.EC_P256, restricted=False, attributes=weak)
    with tpm.open() as device:
        create_persistent(device._tpm.transact, template, device.options.key_handle("idevid"))


def test_tpm2_provision_batch_over_swtpms(
    swtpm_factory: SwtpmFactory,
    local_ca: LocalCa,
    rogue_ca: LocalCa,
    keyfab: Keyfab,
    tmp_path: Path,
) -> None:
    good = [swtpm_factory(local_ca) for _ in range(3)]
    rogue = swtpm_factory(rogue_ca)
    duplicable = swtpm_factory(local_ca)
    _plant_duplicable_idevid(duplicable)
    recipe = _recipe(tmp_path, [*good, rogue, duplicable], local_ca)
    assert keyfab("init", "--org", "Acme")[0] == 0

    code, out, err = keyfab(
        "provision", "-r", str(recipe), "--backend", "tpm2", "-n", "5", "-b", "tpm", "--json"
    )
    assert code == 1, out
    assert "2 device(s) failed" in err
    devices = json.loads(keyfab("devices", "list", "--batch", "tpm", "--json")[1])
    states = {d["serial"]: d["state"] for d in devices}
    assert sorted(states.values()) == [
        "failed",
        "failed",
        "provisioned",
        "provisioned",
        "provisioned",
    ]

    failed = json.loads(keyfab("devices", "list", "--state", "failed", "--json")[1])
    for device in failed:
        shown = json.loads(keyfab("devices", "show", device["serial"], "--json")[1])
        assert shown["certificates"] == []  # no certificate for a device whose proof failed
    reasons = {f["serial"]: f["reason"] for f in json.loads(out)["failures"]}
    assert set(reasons) == {d["serial"] for d in failed}
    assert any("does not chain to a configured TPM vendor root" in r for r in reasons.values())
    assert any("certified key is not fixedTPM, fixedParent" in r for r in reasons.values())

    provisioned = [d for d in devices if d["state"] == "provisioned"]
    for device, tpm in zip(sorted(provisioned, key=lambda d: d["serial"]), good, strict=True):
        shown = json.loads(keyfab("devices", "show", device["serial"], "--json")[1])
        assert {c["profile"] for c in shown["certificates"]} == {"idevid", "iak"}
        evidence = shown["evidence"]["idevid"]
        assert evidence["format"] == "tpm2-certify"
        assert evidence["verified"]["credential_activation"] is True
        _check_device_holds_its_certificates(tpm, keyfab, device["serial"])


def _check_device_holds_its_certificates(tpm: Swtpm, keyfab: Keyfab, serial: str) -> None:
    pem = keyfab("devices", "show", serial, "--pem")[1]
    certificates = x509.load_pem_x509_certificates(pem.encode())
    with tpm.open() as device:
        iak_public = parse_public(bytes(device.public_area("iak").marshal()))
        idevid = device.key("idevid").public_key()
        stored = {
            x509.load_der_x509_certificate(device.load_object(label))
            for label in ("idevid-cert", "iak-cert")
        }
    assert stored == set(certificates)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    keys = {c.public_key().public_bytes(serialization.Encoding.DER, spki) for c in certificates}
    assert keys == {
        idevid.public_bytes(serialization.Encoding.DER, spki),
        public_key(iak_public).public_bytes(serialization.Encoding.DER, spki),
    }
    for certificate in certificates:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        others = san.get_values_for_type(x509.OtherName)
        assert any(o.type_id == HARDWARE_MODULE_NAME for o in others)


class _Tampering:
    """A real TPM behind a man in the middle that alters its evidence."""

    def __init__(self, device: Tpm2RootOfTrust, how: str):
        self._device = device
        self._how = how

    def __getattr__(self, name: str) -> object:
        return getattr(self._device, name)

    def certify(self, label: str, nonce: bytes) -> Evidence:
        if self._how == "nonce":
            return self._device.certify(label, secrets.token_bytes(32))
        evidence = self._device.certify(label, nonce)
        attest = bytearray(evidence.parts["attest"])
        attest[-3] ^= 0x40  # a bit of the certified name
        return dataclasses.replace(evidence, parts={**evidence.parts, "attest": bytes(attest)})

    def activate_credential(self, credential_blob: bytes, secret: bytes) -> bytes:
        return self._device.activate_credential(credential_blob, secret)


@pytest.mark.parametrize(
    ("how", "reason"),
    [("nonce", "does not match the nonce"), ("certify-info", "signature does not verify")],
)
def test_tpm2_tampered_evidence_gets_no_certificate(
    rot: Tpm2RootOfTrust,
    local_ca: LocalCa,
    ca_pair: tuple[CertificateAuthority, CertificateAuthority],
    how: str,
    reason: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recipe = parse_recipe(
        RECIPE.format(tctis='"swtpm:"', root=local_ca.root, issuer=local_ca.issuer)
    )
    _, manufacturing = ca_pair
    issued: list[object] = []
    original = CertificateAuthority.issue

    def counting_issue(self: CertificateAuthority, *args: object, **kwargs: object) -> object:
        issued.append(args)
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(CertificateAuthority, "issue", counting_issue)
    tampering = _Tampering(rot, how)
    with pytest.raises(VerificationError, match=reason):
        issue_device(tampering, 1, "AGW-1", recipe, manufacturing, local_ca.policy())  # type: ignore[arg-type]
    assert issued == []
