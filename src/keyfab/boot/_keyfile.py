"""Which key signs, named the ways mkimage and keyfab name keys.

- ``-k DIR`` (mkimage's key directory): ``DIR/<key-name-hint>.key`` is the PEM
  private key and ``DIR/<key-name-hint>.crt`` its certificate; mkimage's ECDSA
  code reads ``DIR/<key-name-hint>.pem`` instead, so that name is tried next.
- a key URI: ``pkcs11:``, ``tpm2:`` and ``soft:DIR/label.pem`` open a root of
  trust as everywhere in keyfab;
- ``soft:FILE`` with another extension, or a bare path: one PEM private key file
  (RSA or EC), whatever it is called.

The key-name-hint itself may come from the image: an .its names it in each
signature node, and mkimage signs with that name.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from keyfab.boot._algo import SigningKey
from keyfab.boot._errors import FitError
from keyfab.boot._fdt import Node
from keyfab.boot._fit import SIGNATURE_PREFIX, FitImage, sub_nodes
from keyfab.rot import load_key
from keyfab.securefile import read_bounded

MAX_KEY_FILE = 1 << 20
"""A PEM key or certificate is a few KiB."""
_ROT_SCHEMES = ("pkcs11:", "tpm2:")
_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def signing_key(key: str | None, keydir: Path | None, hint: str) -> SigningKey:
    """The private key ``--key`` or ``-k DIR`` names; exactly one of them is needed."""
    if (key is None) == (keydir is None):
        raise FitError("name the signing key with --key URI-or-file or -k DIR (not both)")
    if keydir is not None:
        return _from_keydir(keydir, hint)
    assert key is not None
    if key.startswith(_ROT_SCHEMES) or (key.startswith("soft:") and key.endswith(".pem")):
        return load_key(key)
    return read_pem_key(Path(key.removeprefix("soft:")))


def read_pem_key(path: Path) -> SigningKey:
    """A PEM private key file (PKCS#8 or traditional, RSA or EC), unencrypted as mkimage wants."""
    data = read_bounded(path, MAX_KEY_FILE, "private key")
    try:
        key = serialization.load_pem_private_key(data, None)
    except (ValueError, TypeError) as error:
        raise FitError(f"{path} is not an unencrypted PEM private key: {error}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise FitError(f"{path}: U-Boot verifies only RSA and ECDSA signatures")
    return key


def _from_keydir(keydir: Path, hint: str) -> SigningKey:
    """mkimage -k: ``<hint>.key`` (with ``<hint>.crt``), else ECDSA's ``<hint>.pem``."""
    path = keydir / f"{hint}.key"
    if not path.exists() and (keydir / f"{hint}.pem").exists():
        path = keydir / f"{hint}.pem"
    key = read_pem_key(path)
    certificate = keydir / f"{hint}.crt"
    if certificate.exists():
        _check_certificate(certificate, key)
    return key


def _check_certificate(path: Path, key: SigningKey) -> None:
    """mkimage puts the .crt's key into the control DTB: it must be the signing key's."""
    try:
        cert = x509.load_pem_x509_certificate(read_bounded(path, MAX_KEY_FILE, "certificate"))
    except ValueError as error:
        raise FitError(f"{path} is not a PEM certificate: {error}") from None
    if cert.public_key().public_bytes(*_SPKI) != key.public_key().public_bytes(*_SPKI):
        raise FitError(f"{path} is not the certificate of {path.with_suffix('.key').name}")


def hint_from_image(fit: FitImage, configs: list[str] | None) -> str:
    """The one key-name-hint the signature nodes of the configurations to sign name.

    An .its names the key in each signature node, as mkimage expects; with
    several different names, ``--key-name-hint`` must choose.
    """
    targets = [fit.configuration(c) for c in configs] if configs else fit.configurations()
    hints = sorted({h for config in targets for h in _hints(config)})
    if len(hints) == 1:
        return hints[0]
    if not hints:
        raise FitError("no --key-name-hint, and no signature node in the image names one")
    raise FitError(f"signature nodes name keys {', '.join(hints)}: pick one with --key-name-hint")


def _hints(config: Node) -> list[str]:
    found = (node.prop("key-name-hint") for node in sub_nodes(config, SIGNATURE_PREFIX))
    return [prop.as_str() for prop in found if prop is not None]
