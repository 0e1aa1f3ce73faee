"""Signing a FIT the way ``mkimage -F -k`` does, with a key from any root of trust.

Order matters and follows mkimage: image hash nodes first, then image
signatures, then configuration signatures (which cover the image nodes). A
configuration signature is computed on the serialized blob *before* the
signature's own properties are written; those live in a node the signature
covers only by its begin/end tags, and their new names are appended to the
strings block after ``hashed-strings``, so writing them leaves the signed bytes
unchanged.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

from keyfab.boot._algo import SignatureAlgorithm, SigningKey, image_digest
from keyfab.boot._errors import FitError
from keyfab.boot._fdt import Node, read_header
from keyfab.boot._fit import HASH_PREFIX, SIGNATURE_PREFIX, FitImage, sub_nodes
from keyfab.boot._keynode import check_hint
from keyfab.boot._regions import find_regions

SIGNER_NAME = "keyfab"
SIGNER_VERSION = "0.1.0"


class SignImagesWarning(UserWarning):
    """A ``sign-images`` list leaves out an image the configuration references."""


class StaleSignatureWarning(UserWarning):
    """A new signature node changed bytes that an existing signature covers."""


def source_date() -> int:
    """SOURCE_DATE_EPOCH when set (reproducible builds), else now; as U-Boot's u32."""
    raw = os.environ.get("SOURCE_DATE_EPOCH")
    if raw is None:
        return int(time.time()) & 0xFFFFFFFF
    if not raw.isdigit() or int(raw) > 0xFFFFFFFF:
        raise FitError("SOURCE_DATE_EPOCH must be a decimal number of seconds below 2^32")
    return int(raw)


@dataclass(frozen=True)
class Signer:
    """Who signs and how: the key, its name hint in the control DTB, the algorithm."""

    key: SigningKey
    hint: str
    algorithm: SignatureAlgorithm
    timestamp: int = field(default_factory=source_date)

    def __post_init__(self) -> None:
        check_hint(self.hint)


def add_hashes(fit: FitImage, algo: str = "sha256") -> None:
    """Give every image a hash node if it has none and (re)compute every hash value."""
    for image in fit.images():
        hashes = sub_nodes(image, HASH_PREFIX)
        if not hashes:
            node = image.add_child(f"{HASH_PREFIX}-1")
            node.set_str("algo", algo)
            hashes = [node]
        data = fit.image_data(image)
        for node in hashes:
            node.set("value", image_digest(node.need("algo", node.name).as_str(), [data]))


def _signature_node(parent: Node, signer: Signer) -> Node:
    """The signature node for this key hint: an existing one, or the next free name."""
    for node in sub_nodes(parent, SIGNATURE_PREFIX):
        hint = node.prop("key-name-hint")
        if hint is None or hint.as_str() == signer.hint:
            break
    else:
        index = 1
        while parent.child(f"{SIGNATURE_PREFIX}-{index}") is not None:
            index += 1
        node = parent.add_child(f"{SIGNATURE_PREFIX}-{index}")
    node.set_str("algo", signer.algorithm.name)
    node.set_str("key-name-hint", signer.hint)
    if signer.algorithm.pss:
        node.set_str("padding", "pss")
    else:
        node.remove("padding")
    return node


def _write_signature(node: Node, signer: Signer, value: bytes) -> None:
    node.set("value", value)
    node.set_str("signer-name", SIGNER_NAME)
    node.set_str("signer-version", SIGNER_VERSION)
    node.set_u32("timestamp", signer.timestamp)


def sign_images(fit: FitImage, signer: Signer) -> None:
    """Sign each image's payload (U-Boot's ``required = "image"`` mode)."""
    for image in fit.images():
        node = _signature_node(image, signer)
        digest = signer.algorithm.digest([fit.image_data(image)])
        _write_signature(node, signer, signer.algorithm.sign(signer.key, digest))


def _check_sign_images(fit: FitImage, config: Node, node: Node) -> None:
    """Warn when a user's ``sign-images`` omits a referenced image; cover it anyway."""
    kinds = list(dict.fromkeys(kind for kind, _ in fit.references(config)))
    listed = node.prop("sign-images")
    if listed is None:
        node.set("sign-images", b"".join(k.encode() + b"\0" for k in kinds))
        return
    missing = [k for k in kinds if k not in listed.as_strings()]
    if missing:
        warnings.warn(
            f"configuration {config.name!r}: sign-images leaves out {', '.join(missing)}; "
            "signing every referenced image anyway (U-Boot verifies them all)",
            SignImagesWarning,
            stacklevel=3,
        )


def sign_configuration(fit: FitImage, config: Node, signer: Signer) -> None:
    """Add or refresh this signer's signature of one configuration.

    Call ``_signature_node`` for every signer first: a new signature node adds
    its begin/end tags to the configuration's signed bytes.
    """
    node = _signature_node(config, signer)
    _check_sign_images(fit, config, node)
    paths = fit.signed_paths(config)
    blob = memoryview(fit.fdt.to_bytes())
    header = read_header(blob)
    strings_size = header.size_dt_strings
    chunks = [blob[start : start + size] for start, size in find_regions(blob, paths)]
    chunks.append(blob[header.off_dt_strings : header.off_dt_strings + strings_size])
    value = signer.algorithm.sign(signer.key, signer.algorithm.digest(chunks))
    _write_signature(node, signer, value)
    node.set("hashed-strings", (0).to_bytes(4, "big") + strings_size.to_bytes(4, "big"))
    node.set("hashed-nodes", b"".join(p.encode() + b"\0" for p in paths))


def _hint(node: Node) -> str | None:
    prop = node.prop("key-name-hint")
    return prop.as_str() if prop is not None else None


def _warn_if_orphaning(config: Node, signers: Sequence[Signer]) -> None:
    """A new signature node changes the signed bytes of the ones already there."""
    hints = {s.hint for s in signers}
    existing = sub_nodes(config, SIGNATURE_PREFIX)
    names = {hint for n in existing if n.prop("value") is not None and (hint := _hint(n))}
    if hints - names and names - hints:
        warnings.warn(
            f"configuration {config.name!r}: adding a signature node invalidates the "
            f"signatures by {', '.join(sorted(names - hints))}; sign with all keys at once",
            StaleSignatureWarning,
            stacklevel=3,
        )


def sign_fit(
    fit: FitImage,
    signers: Signer | Sequence[Signer],
    configs: list[str] | None = None,
    *,
    images: bool = False,
    hash_algo: str = "sha256",
) -> list[str]:
    """Hash, optionally sign images, then sign the named (default: all) configurations.

    Several signers sign together: all their signature nodes are created before
    the first signature is computed, as when an .its lists them all for mkimage.
    Returns the names of the configurations signed.
    """
    group = [signers] if isinstance(signers, Signer) else list(signers)
    add_hashes(fit, hash_algo)
    if images:
        for signer in group:
            sign_images(fit, signer)
    targets = [fit.configuration(name) for name in configs] if configs else fit.configurations()
    if not targets:
        raise FitError("FIT has no configurations to sign")
    for config in targets:
        _warn_if_orphaning(config, group)
        for signer in group:
            _signature_node(config, signer)
        for signer in group:
            sign_configuration(fit, config, signer)
    return [config.name for config in targets]
