"""CA-side verification of real swtpm evidence, and the ways tampered evidence fails."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

import pytest
from tpm2_pytss.constants import ESYS_TR, TPMA_OBJECT

from keyfab.attest import (
    Tpm2Policy,
    attest_key,
    make_challenge,
    make_credential,
    parse_attest,
    parse_public,
    verify_certify,
    verify_quote,
)
from keyfab.errors import RotError, VerificationError
from keyfab.rot import Evidence, KeyAlgorithm, KeySpec
from keyfab.rot.tpm2 import Tpm2RootOfTrust
from keyfab.rot.tpm2._commands import create_persistent
from keyfab.rot.tpm2._templates import KEY_ATTRIBUTES, key_template

from .conftest import LocalCa, Swtpm, SwtpmFactory, wipe

EC = KeySpec(KeyAlgorithm.EC_P256)
NONCE = bytes(range(32))


@pytest.fixture
def evidence(rot: Tpm2RootOfTrust) -> Evidence:
    rot.generate_key("idevid", EC)
    return rot.certify("idevid", NONCE)


def _with(evidence: Evidence, **parts: bytes) -> Evidence:
    return dataclasses.replace(evidence, parts={**evidence.parts, **parts})


def test_tpm2_attest_full_exchange(rot: Tpm2RootOfTrust, local_ca: LocalCa) -> None:
    key = rot.generate_key("idevid", EC)
    certified, evidence = attest_key(rot, "idevid", local_ca.policy())
    assert certified.public_key.public_numbers() == key.public_key().public_numbers()
    assert certified.manufacturer == "id:00001014"
    assert evidence.format == "tpm2-certify"
    assert rot.transient_count() == 0


def test_tpm2_attest_rsa_idevid_and_rsa_iak(swtpm: Swtpm, local_ca: LocalCa) -> None:
    with swtpm.open(iak_algorithm="rsa-2048", handles={"iak": "0x81020010"}) as device:
        try:
            device.generate_key("other", KeySpec(KeyAlgorithm.RSA_2048))
            certified, _ = attest_key(device, "other", local_ca.policy())
            assert certified.iak_public_key.key_size == 2048
        finally:
            device.delete_key("other")
            device.delete_key("iak")


def test_tpm2_attest_wrong_nonce(evidence: Evidence, local_ca: LocalCa) -> None:
    with pytest.raises(VerificationError, match="extraData does not match the nonce"):
        verify_certify(evidence, bytes(32), local_ca.policy())


def test_tpm2_attest_altered_certify_info(evidence: Evidence, local_ca: LocalCa) -> None:
    attest = bytearray(evidence.parts["attest"])
    attest[-1] ^= 1
    with pytest.raises(VerificationError, match="signature does not verify"):
        verify_certify(_with(evidence, attest=bytes(attest)), NONCE, local_ca.policy())


def test_tpm2_attest_swapped_public_area(
    rot: Tpm2RootOfTrust, evidence: Evidence, local_ca: LocalCa
) -> None:
    other = rot.generate_key("other", EC)
    assert other is not None
    swapped = _with(evidence, public=bytes(rot.public_area("other").marshal()))
    with pytest.raises(VerificationError, match="certified name does not match"):
        verify_certify(swapped, NONCE, local_ca.policy())


def test_tpm2_attest_idevid_not_fixed_tpm(rot: Tpm2RootOfTrust, local_ca: LocalCa) -> None:
    """A key the TPM really made, but one that may be duplicated out of it: refused."""
    weak = int(KEY_ATTRIBUTES) & ~int(TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT)
    template = key_template(KeyAlgorithm.EC_P256, restricted=False, attributes=weak)
    create_persistent(rot._tpm.transact, template, rot.options.key_handle("idevid"))
    evidence = rot.certify("idevid", NONCE)
    with pytest.raises(VerificationError, match="certified key is not fixedTPM, fixedParent"):
        verify_certify(evidence, NONCE, local_ca.policy())


def test_tpm2_attest_ek_must_be_a_restricted_decryption_key(
    evidence: Evidence, local_ca: LocalCa
) -> None:
    ek = bytearray(evidence.parts["ek_public"])
    ek[4:8] = (int.from_bytes(ek[4:8], "big") & ~0x00010000).to_bytes(4, "big")  # not restricted
    with pytest.raises(VerificationError, match="EK is not restricted"):
        verify_certify(_with(evidence, ek_public=bytes(ek)), NONCE, local_ca.policy())


def test_tpm2_attest_iak_must_be_restricted(evidence: Evidence, local_ca: LocalCa) -> None:
    # the certified IDevID is unrestricted: presented as the IAK it must fail
    fake = _with(evidence, iak_public=evidence.parts["public"])
    with pytest.raises(VerificationError, match="IAK is not restricted"):
        verify_certify(fake, NONCE, local_ca.policy())


@pytest.fixture(scope="module")
def rogue_tpm(swtpm_factory: SwtpmFactory, rogue_ca: LocalCa) -> Swtpm:
    return swtpm_factory(rogue_ca)


@pytest.fixture
def rogue(rogue_tpm: Swtpm) -> Iterator[Tpm2RootOfTrust]:
    with rogue_tpm.open() as device:
        device.generate_key("idevid", EC)
        yield device
        wipe(device)


def test_tpm2_attest_unknown_ek_vendor(rogue: Tpm2RootOfTrust, local_ca: LocalCa) -> None:
    with pytest.raises(VerificationError, match="does not chain to a configured TPM vendor root"):
        attest_key(rogue, "idevid", local_ca.policy())


def test_tpm2_attest_manufacturer_allow_list(evidence: Evidence, local_ca: LocalCa) -> None:
    policy = local_ca.policy(manufacturers=frozenset({"id:49465800"}))
    with pytest.raises(VerificationError, match="manufacturer 'id:00001014', not allowed"):
        verify_certify(evidence, NONCE, policy)


def test_tpm2_attest_ek_certificate_of_another_tpm(
    evidence: Evidence, rogue: Tpm2RootOfTrust, rogue_ca: LocalCa
) -> None:
    mixed = _with(evidence, ek_certificate=rogue.ek.certificate)
    with pytest.raises(VerificationError, match="not for the EK in the evidence"):
        verify_certify(mixed, NONCE, rogue_ca.policy())


def test_tpm2_credential_is_bound_to_ek_and_iak(
    rot: Tpm2RootOfTrust, rogue: Tpm2RootOfTrust, evidence: Evidence, local_ca: LocalCa
) -> None:
    certified = verify_certify(evidence, NONCE, local_ca.policy())
    challenge = make_challenge(certified)
    assert rot.activate_credential(challenge.credential_blob, challenge.encrypted_secret) == (
        challenge.secret
    )
    # the same challenge in another TPM (another EK): the TPM refuses to open it
    with pytest.raises(RotError, match="ActivateCredential"):
        rogue.activate_credential(challenge.credential_blob, challenge.encrypted_secret)
    # a challenge bound to another object's name: refused by the right TPM too
    other = make_credential(certified.ek_public, certified.key_name)
    with pytest.raises(RotError, match="ActivateCredential"):
        rot.activate_credential(other.credential_blob, other.encrypted_secret)
    assert rot.transient_count() == 0


def test_tpm2_attest_with_the_ecc_ek(swtpm: Swtpm, local_ca: LocalCa) -> None:
    """swtpm also has an ECC P-384 EK: MakeCredential's ECDH/KDFe path, activated for real."""
    with swtpm.open(ek="ec-p384") as device:
        assert device.ek.algorithm is KeyAlgorithm.EC_P384
        device.generate_key("idevid", EC)
        try:
            certified, _ = attest_key(device, "idevid", local_ca.policy())
            assert certified.ek_public.curve == "secp384r1"
        finally:
            device.delete_key("idevid")
            device.delete_key("iak")


def test_tpm2_attest_when_nobody_persisted_the_ek(
    swtpm_factory: SwtpmFactory, local_ca: LocalCa
) -> None:
    """Many real TPMs ship without a persisted EK: it is re-created from the L-1 template,
    must match the certificate, and activation goes through ESAPI with a transient EK."""
    tpm = swtpm_factory(local_ca)
    with tpm.open() as device:
        esys = device._tpm.esys
        esys.evict_control(ESYS_TR.OWNER, esys.tr_from_tpmpublic(0x81010001), 0x81010001)
    with tpm.open(ek="rsa-2048") as device:
        assert device.ek.persistent_handle is None
        device.generate_key("idevid", EC)
        certified, _ = attest_key(device, "idevid", local_ca.policy())
        assert certified.ek_public.type == 0x0001
        assert device.transient_count() == 0
        wipe(device)


def test_tpm2_quote_verifies_and_detects_changed_pcrs(rot: Tpm2RootOfTrust) -> None:
    nonce = os.urandom(20)
    quote = rot.quote([0, 1, 7, 16], nonce)
    iak = parse_public(quote.parts["iak_public"])
    from keyfab.attest._tpm2_crypto import public_key

    verified = verify_quote(quote, nonce, public_key(iak))
    assert verified.pcrs == (0, 1, 7, 16)
    assert verified.bank == "sha256"
    assert parse_attest(quote.parts["attest"]).type == 0x8018
    values = bytearray(quote.parts["pcr_values"])
    values[0] ^= 1
    with pytest.raises(VerificationError, match="PCR values do not match"):
        verify_quote(_with(quote, pcr_values=bytes(values)), nonce, public_key(iak))
    with pytest.raises(VerificationError, match="nonce"):
        verify_quote(quote, bytes(20), public_key(iak))


def test_tpm2_policy_needs_roots() -> None:
    from keyfab.errors import ConfigError

    with pytest.raises(ConfigError, match="no EK roots"):
        Tpm2Policy(ek_roots=[])
