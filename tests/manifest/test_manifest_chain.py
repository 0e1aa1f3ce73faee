"""The explicit path check used for chains the verifier refuses only for time encoding."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from keyfab import pki as keyfab_pki
from keyfab.errors import VerificationError
from keyfab.manifest._chain import _explicit_path

from .conftest import T0, Pki

NOW = T0 + datetime.timedelta(days=30)


def _device(pki_: Pki) -> x509.Certificate:
    return pki_.device_chain("0a0a")[0]


def test_manifest_chain_explicit_path_accepts_good_chain(pki: Pki) -> None:
    chain = _explicit_path(_device(pki), [pki.intermediate], [pki.root], NOW)
    assert [c.subject for c in chain[1:]] == [pki.intermediate.subject, pki.root.subject]


def test_manifest_chain_explicit_path_needs_the_intermediate(pki: Pki) -> None:
    with pytest.raises(VerificationError, match="no path to a root"):
        _explicit_path(_device(pki), [], [pki.root], NOW)


def test_manifest_chain_explicit_path_refuses_non_ca_issuer(pki: Pki) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    fake = pki.ca.issue(keyfab_pki.manifest_signer("Example", "Not a CA"), key.public_key(), now=T0)
    leaf = keyfab_pki.CertificateAuthority(fake, key).issue(
        keyfab_pki.idevid(keyfab_pki.DeviceIdentity("X1", "1.2.3")),
        ec.generate_private_key(ec.SECP256R1()).public_key(),
        now=T0,
    )
    with pytest.raises(VerificationError, match="an issuer is not a CA"):
        _explicit_path(leaf, [fake, pki.intermediate], [pki.root], NOW)


def test_manifest_chain_explicit_path_checks_validity(pki: Pki) -> None:
    with pytest.raises(VerificationError, match="device certificate is not valid"):
        _explicit_path(
            _device(pki), [pki.intermediate], [pki.root], T0 - datetime.timedelta(days=1)
        )


def test_manifest_chain_explicit_path_refuses_weak_hash(pki: Pki) -> None:
    from cryptography.hazmat.primitives import hashes

    good = _device(pki)
    builder = (
        x509.CertificateBuilder()
        .subject_name(good.subject)
        .issuer_name(good.issuer)
        .public_key(good.public_key())
        .serial_number(good.serial_number)  # type: ignore[arg-type]
        .not_valid_before(good.not_valid_before_utc)
        .not_valid_after(good.not_valid_after_utc)
    )
    for extension in good.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    weak = builder.sign(pki.ca.key, hashes.SHA224())
    with pytest.raises(VerificationError, match="weak or unknown hash"):
        _explicit_path(weak, [pki.intermediate], [pki.root], NOW)
