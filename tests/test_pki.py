import contextlib
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from keyfab import pki
from keyfab.errors import ConfigError, PkiError, VerificationError
from keyfab.pki import RevokedCertificate
from keyfab.pki._der import hardware_module_name
from keyfab.rot import KeyAlgorithm, KeySpec
from keyfab.rot.soft import SoftRootOfTrust

HW_TYPE = "1.3.6.1.4.1.99999.1.1"
CAS = tuple[pki.CertificateAuthority, pki.CertificateAuthority]


def _device_cert(mfg: pki.CertificateAuthority, serial: str = "AGW-1") -> x509.Certificate:
    key = SoftRootOfTrust(None).generate_key("idevid", KeySpec(KeyAlgorithm.EC_P256))
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
    )
    return mfg.issue_for_csr(pki.idevid(pki.DeviceIdentity(serial, HW_TYPE, "Acme", "gw")), csr)


def _pem(path: Path, *certs: x509.Certificate) -> Path:
    path.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in certs))
    return path


def test_idevid_follows_8021ar(ca_pair: CAS) -> None:
    _root, mfg = ca_pair
    cert = _device_cert(mfg, "AGW-00000042")
    assert cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == "AGW-00000042"
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert not usage.value.key_cert_sign
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert pki.parse_hardware_module_name(san[0]) == (HW_TYPE, b"AGW-00000042")
    assert cert.not_valid_after_utc.year == 9999
    assert b"99991231235959Z" in cert.public_bytes(Encoding.DER)  # GeneralizedTime, as 802.1AR says
    ski = mfg.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)


@pytest.mark.parametrize(
    "algorithm", [KeyAlgorithm.EC_P256, KeyAlgorithm.EC_P384, KeyAlgorithm.RSA_3072]
)
def test_chain_passes_openssl_strict_and_cryptography(
    tmp_path: Path, algorithm: KeyAlgorithm
) -> None:
    rot = SoftRootOfTrust(None)
    root = pki.CertificateAuthority.create_root(
        pki.root_ca("Acme", "Root"), rot.generate_key("r", KeySpec(algorithm))
    )
    mfg = root.create_subordinate(
        pki.manufacturing_ca("Acme", "Mfg"), rot.generate_key("m", KeySpec(algorithm))
    )
    cert = _device_cert(mfg)
    assert len(pki.verify_device_chain(cert, [mfg.certificate], [root.certificate])) == 3
    result = subprocess.run(
        [
            "openssl",
            "verify",
            "-x509_strict",
            "-CAfile",
            _pem(tmp_path / "root.pem", root.certificate),
            "-untrusted",
            _pem(tmp_path / "mfg.pem", mfg.certificate),
            _pem(tmp_path / "dev.pem", cert),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("OK")


def test_device_policy_requires_signing_key_usage(ca_pair: CAS) -> None:
    """The explicit end-entity policy demands what 802.1AR needs, EKU or not."""
    root, mfg = ca_pair
    key = SoftRootOfTrust(None).generate_key("k", KeySpec(KeyAlgorithm.EC_P256))
    bare = pki.Template(
        "bare",
        x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, "S")]),
        (),
        validity=pki.IDEVID_NOT_AFTER - pki.IDEVID_NOT_AFTER.replace(year=9998),
    )
    with pytest.raises(VerificationError, match="does not verify"):
        pki.verify_device_chain(
            mfg.issue(bare, key.public_key()), [mfg.certificate], [root.certificate]
        )
    with pytest.raises(VerificationError):
        pki.verify_device_chain(mfg.certificate, [], [root.certificate])  # a CA is no device


def test_foreign_root_is_refused(ca_pair: CAS) -> None:
    _, mfg = ca_pair
    other_root, _ = _fresh_pair()
    with pytest.raises(VerificationError, match="does not verify"):
        pki.verify_device_chain(_device_cert(mfg), [mfg.certificate], [other_root.certificate])


def _fresh_pair() -> CAS:
    rot = SoftRootOfTrust(None)
    root = pki.CertificateAuthority.create_root(
        pki.root_ca("X", "X"), rot.generate_key("r", KeySpec(KeyAlgorithm.EC_P256))
    )
    return root, root


def test_csr_with_wrong_signature_is_refused(ca_pair: CAS) -> None:
    _, mfg = ca_pair
    key = SoftRootOfTrust(None).generate_key("k", KeySpec(KeyAlgorithm.EC_P256))
    der = bytearray(
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
        .public_bytes(Encoding.DER)
    )
    der[-5] ^= 0x01  # inside the signature
    csr = x509.load_der_x509_csr(bytes(der))
    with pytest.raises(VerificationError, match="proof of possession"):
        mfg.issue_for_csr(pki.idevid(pki.DeviceIdentity("S", HW_TYPE)), csr)


def test_ca_key_must_match_certificate(ca_pair: CAS) -> None:
    root, mfg = ca_pair
    with pytest.raises(PkiError, match="does not match"):
        pki.CertificateAuthority(mfg.certificate, root.key)


def test_crl_lists_revoked_and_openssl_reads_it(tmp_path: Path, ca_pair: CAS) -> None:
    root, mfg = ca_pair
    cert = _device_cert(mfg)
    crl = mfg.crl([RevokedCertificate(cert.serial_number, cert.not_valid_before_utc)], number=7)
    assert crl.is_signature_valid(mfg.certificate.public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
    (tmp_path / "crl.pem").write_bytes(crl.public_bytes(Encoding.PEM))
    result = subprocess.run(
        [
            "openssl",
            "verify",
            "-crl_check",
            "-CAfile",
            _pem(tmp_path / "all.pem", root.certificate, mfg.certificate),
            "-CRLfile",
            tmp_path / "crl.pem",
            _pem(tmp_path / "dev.pem", cert),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "revoked" in (result.stdout + result.stderr)


@pytest.mark.parametrize(
    ("serial", "hw_type"), [("", HW_TYPE), ("x" * 65, HW_TYPE), ("S", "not-an-oid")]
)
def test_bad_identity(serial: str, hw_type: str) -> None:
    with pytest.raises(ConfigError):
        pki.DeviceIdentity(serial, hw_type)


oids = st.builds(
    lambda first, second, rest: ".".join(map(str, [first, second, *rest])),
    st.integers(0, 2),
    st.integers(0, 39),
    st.lists(st.integers(0, 2**64), max_size=8),
)


@given(oid=oids, serial=st.binary(max_size=300))
def test_hardware_module_name_round_trips(oid: str, serial: bytes) -> None:
    assert pki.parse_hardware_module_name(hardware_module_name(oid, serial)) == (oid, serial)


@given(st.binary(max_size=64))
def test_hardware_module_name_parser_rejects_garbage_cleanly(data: bytes) -> None:
    with contextlib.suppress(PkiError):
        pki.parse_hardware_module_name(x509.OtherName(pki.HARDWARE_MODULE_NAME, data))


def test_idevid_common_name_differs_per_device(ca_pair: CAS) -> None:
    _, mfg = ca_pair
    names = {
        _device_cert(mfg, f"AGW-{i}").subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        for i in range(3)
    }
    assert names == {"AGW-0", "AGW-1", "AGW-2"}


def _rsa_public(bits: int) -> rsa.RSAPublicKey:
    """An RSA public key of exactly ``bits`` bits (no private half: sizes only)."""
    return rsa.RSAPublicNumbers(65537, (1 << (bits - 1)) | 0xF1).public_key()


@pytest.mark.parametrize("bits", [2048, 3072, 4096, 8192])
def test_key_policy_accepts_rsa_2048_to_8192(bits: int) -> None:
    key = _rsa_public(bits)
    assert pki.check_public_key(key) is key


@pytest.mark.parametrize(
    ("bits", "reason"),
    [
        (2047, "RSA-2047 is below the 2048-bit minimum"),
        (8193, "RSA-8193 is above the 8192-bit maximum"),
    ],
)
def test_key_policy_refuses_rsa_outside_the_range(bits: int, reason: str) -> None:
    with pytest.raises(pki.KeyNotAllowedError) as refused:
        pki.check_public_key(_rsa_public(bits))
    assert str(refused.value) == f"key refused: {reason}"


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1()], ids=lambda c: c.name)
def test_key_policy_accepts_p256_and_p384(curve: ec.EllipticCurve) -> None:
    pki.check_public_key(ec.generate_private_key(curve).public_key())


def test_ca_refuses_a_weak_key_itself(ca_pair: CAS) -> None:
    """The CA enforces the policy whoever calls it, so no issuer can go around it."""
    _root, mfg = ca_pair
    weak = ec.generate_private_key(ec.SECP256K1()).public_key()
    identity = pki.DeviceIdentity("AGW-1", HW_TYPE, "Acme", "gw")
    with pytest.raises(pki.KeyNotAllowedError, match="curve secp256k1 is not allowed"):
        mfg.issue(pki.idevid(identity), weak)
