"""Signature and hash *mechanics* of FIT verification: one node, one key, one answer.

Each function checks one thing and returns ``None`` when it holds or a short
reason when it does not; it never decides whether the image boots. That is the
policy in ``_policy``. Hashed bytes are always taken from the file as read, never
from a re-serialization, so what is verified is what U-Boot would load.
"""

from __future__ import annotations

from keyfab.boot._algo import SignatureAlgorithm, digests_equal, image_digest
from keyfab.boot._errors import FdtError, FitError
from keyfab.boot._fdt import Node
from keyfab.boot._fit import HASH_PREFIX, FitImage, sub_nodes
from keyfab.boot._keynode import ControlKey
from keyfab.boot._regions import Region, find_regions, strings_region


def check_hash(fit: FitImage, image: Node, node: Node) -> str | None:
    """Does this hash node's ``value`` match the image payload?"""
    try:
        algo = node.need("algo", node.name).as_str()
        expected = node.need("value", node.name).as_bytes()
        actual = image_digest(algo, [fit.image_data(image)])
    except (FdtError, FitError) as error:
        return str(error)
    return None if digests_equal(actual, expected) else "bad hash value"


def image_hash_nodes(image: Node) -> list[Node]:
    return sub_nodes(image, HASH_PREFIX)


def _algorithm(sig: Node) -> SignatureAlgorithm:
    padding = sig.prop("padding")
    return SignatureAlgorithm.parse(
        sig.need("algo", sig.name).as_str(), padding.as_str() if padding else None
    )


def config_regions(fit: FitImage, config: Node) -> list[Region]:
    """The struct regions every signature of ``config`` covers; computed once per config."""
    return find_regions(fit.source, fit.signed_paths(config))


def config_digest(fit: FitImage, regions: list[Region], sig: Node) -> bytes:
    """The digest U-Boot computes for a configuration signature node."""
    algorithm = _algorithm(sig)
    regions = list(regions)
    hashed = sig.prop("hashed-strings")
    if hashed is not None:
        if len(hashed.value) < 8:
            raise FitError("invalid hashed-strings property")
        size = int.from_bytes(bytes(hashed.value[4:8]), "big")
        regions.append(strings_region(fit.source, size))
    return algorithm.digest(fit.source[start : start + size] for start, size in regions)


def check_config_signature(
    fit: FitImage, regions: list[Region], sig: Node, key: ControlKey
) -> str | None:
    """Does ``sig`` verify, under ``key``, the configuration ``regions`` were found for?"""
    try:
        algorithm = _algorithm(sig)
        value = sig.need("value", sig.name).as_bytes()
        digest = config_digest(fit, regions, sig)
    except (FdtError, FitError) as error:
        return str(error)
    return None if algorithm.verify(key.public_key, digest, value) else "verification failed"


def check_image_signature(fit: FitImage, image: Node, sig: Node, key: ControlKey) -> str | None:
    """Does ``sig`` (a signature node of ``image``) verify the payload under ``key``?"""
    try:
        algorithm = _algorithm(sig)
        value = sig.need("value", sig.name).as_bytes()
        digest = algorithm.digest([fit.image_data(image)])
    except (FdtError, FitError) as error:
        return str(error)
    return None if algorithm.verify(key.public_key, digest, value) else "verification failed"
