"""Verified boot: U-Boot FIT images signed and verified byte-compatibly with mkimage.

Format model (``Fdt``, ``FitImage``) apart from signing (``sign_fit``), signature
mechanics (``SignatureAlgorithm``) apart from boot policy (``verify_fit``).
"""

from keyfab.boot._algo import SignatureAlgorithm, SigningKey, image_digest
from keyfab.boot._build import build_fit, load_description
from keyfab.boot._errors import FdtError, FitError, FitVerificationError
from keyfab.boot._fdt import Fdt, Node, Prop, parse
from keyfab.boot._files import load_dtb, load_fit, write_atomic
from keyfab.boot._fit import FitImage
from keyfab.boot._inspect import describe
from keyfab.boot._keyfile import hint_from_image, read_pem_key, signing_key
from keyfab.boot._keynode import ControlKey, add_key, read_keys
from keyfab.boot._measure import measured_digests, release_measurements, signed_release
from keyfab.boot._policy import NodeResult, VerifyReport, verify_fit
from keyfab.boot._regions import find_regions
from keyfab.boot._sign import (
    Signer,
    SignImagesWarning,
    StaleSignatureWarning,
    add_hashes,
    sign_fit,
    source_date,
)

__all__ = [
    "ControlKey",
    "Fdt",
    "FdtError",
    "FitError",
    "FitImage",
    "FitVerificationError",
    "Node",
    "NodeResult",
    "Prop",
    "SignImagesWarning",
    "SignatureAlgorithm",
    "Signer",
    "SigningKey",
    "StaleSignatureWarning",
    "VerifyReport",
    "add_hashes",
    "add_key",
    "build_fit",
    "describe",
    "find_regions",
    "hint_from_image",
    "image_digest",
    "load_description",
    "load_dtb",
    "load_fit",
    "measured_digests",
    "parse",
    "read_keys",
    "read_pem_key",
    "release_measurements",
    "sign_fit",
    "signed_release",
    "signing_key",
    "source_date",
    "verify_fit",
    "write_atomic",
]
