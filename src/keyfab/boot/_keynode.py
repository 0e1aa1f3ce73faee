"""Public keys in the U-Boot control DTB: ``/signature/key-<hint>``.

U-Boot verifies RSA without a bignum library: it needs the modulus with the
Montgomery constants ``rsa,n0-inverse`` (-n^-1 mod 2^32) and ``rsa,r-squared``
(2^(2*bits) mod n) precomputed. On reading, those constants are checked against
the modulus: a control DTB whose constants disagree would make U-Boot and keyfab
reach different verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from keyfab.boot._errors import FdtError, FitError
from keyfab.boot._fdt import Fdt, Node

SIGNATURE_NODE = "signature"
_CURVE_NAMES = {"secp256r1": "prime256v1", "secp384r1": "secp384r1"}
_CURVES: dict[str, ec.EllipticCurve] = {"prime256v1": ec.SECP256R1(), "secp384r1": ec.SECP384R1()}

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


@dataclass(frozen=True)
class ControlKey:
    """One key node of a control DTB, as U-Boot reads it."""

    node_name: str
    hint: str
    algo: str | None
    required: str | None
    public_key: PublicKey


def _rsa_constants(n: int, bits: int) -> tuple[int, int]:
    """(n0-inverse, r-squared) as U-Boot's Montgomery arithmetic expects them."""
    n0_inverse = (-pow(n, -1, 1 << 32)) % (1 << 32)
    return n0_inverse, pow(2, 2 * bits, n)


def check_hint(hint: str) -> str:
    """A key name hint becomes a node name (key-<hint>): no '/', '@' or odd characters."""
    if not hint or len(hint) > 60 or not all(c.isalnum() or c in ",._+-" for c in hint):
        raise FitError(f"invalid key name hint {hint!r}: use letters, digits and , . _ + -")
    return hint


def add_key(
    control: Fdt, public: PublicKey, hint: str, algo: str, required: str | None = None
) -> Node:
    """Write (or overwrite) ``/signature/key-<hint>`` like mkimage -K does."""
    if required not in (None, "conf", "image"):
        raise FitError(f"required must be 'conf' or 'image', not {required!r}")
    check_hint(hint)
    node = control.root.add_child(SIGNATURE_NODE).add_child(f"key-{hint}")
    node.set_str("key-name-hint", hint)
    if isinstance(public, rsa.RSAPublicKey):
        _write_rsa(node, public)
    else:
        _write_ecdsa(node, public)
    node.set_str("algo", algo)
    if required:
        node.set_str("required", required)
    else:
        node.remove("required")
    return node


def _write_rsa(node: Node, public: rsa.RSAPublicKey) -> None:
    numbers = public.public_numbers()
    bits = public.key_size
    n0_inverse, r_squared = _rsa_constants(numbers.n, bits)
    node.set_u32("rsa,num-bits", bits)
    node.set_u32("rsa,n0-inverse", n0_inverse)
    node.set("rsa,exponent", numbers.e.to_bytes(8, "big"))
    node.set("rsa,modulus", numbers.n.to_bytes(bits // 8, "big"))
    node.set("rsa,r-squared", r_squared.to_bytes(bits // 8, "big"))


def _write_ecdsa(node: Node, public: ec.EllipticCurvePublicKey) -> None:
    numbers = public.public_numbers()
    size = (public.curve.key_size + 7) // 8
    curve = _CURVE_NAMES.get(public.curve.name)
    if curve is None:
        raise FitError(f"U-Boot has no ECDSA curve {public.curve.name}")
    node.set_str("ecdsa,curve", curve)
    node.set("ecdsa,x-point", numbers.x.to_bytes(size, "big"))
    node.set("ecdsa,y-point", numbers.y.to_bytes(size, "big"))


def read_keys(control: Fdt) -> list[ControlKey]:
    """Every usable key under ``/signature`` in DTB order (the order U-Boot tries them).

    Nodes that are not signature keys (an AES key for FIT ciphers, say) are
    skipped unless marked required, as U-Boot only fails on keys it must use.
    """
    parent = control.root.child(SIGNATURE_NODE)
    keys: list[ControlKey] = []
    for node in parent.children if parent is not None else []:
        try:
            keys.append(read_key(node))
        except FitError:
            if node.prop("required") is not None:
                raise  # a required key that cannot be read fails verification
    return keys


def read_key(node: Node) -> ControlKey:
    """One key node, with its RSA constants cross-checked."""

    def text(name: str) -> str | None:
        prop = node.prop(name)
        return prop.as_str() if prop is not None else None

    try:
        public = _read_rsa(node) if node.prop("rsa,modulus") else _read_ecdsa(node)
    except (FdtError, ValueError) as error:
        raise FitError(f"control DTB key {node.name!r} is unusable: {error}") from None
    hint = text("key-name-hint") or node.name.removeprefix("key-")
    return ControlKey(node.name, hint, text("algo"), text("required"), public)


def _read_rsa(node: Node) -> rsa.RSAPublicKey:
    bits = node.need("rsa,num-bits").as_u32()
    n = node.need("rsa,modulus").as_int()
    exponent_prop = node.prop("rsa,exponent")
    e = exponent_prop.as_int() if exponent_prop is not None else 65537
    if bits not in (1024, 2048, 3072, 4096) or n.bit_length() != bits:
        raise FdtError(f"rsa,num-bits {bits} does not match the modulus")
    n0_inverse, r_squared = _rsa_constants(n, bits)
    if (
        node.need("rsa,n0-inverse").as_u32() != n0_inverse
        or node.need("rsa,r-squared").as_int() != r_squared
    ):
        raise FdtError("rsa,n0-inverse or rsa,r-squared do not match the modulus")
    return rsa.RSAPublicNumbers(e, n).public_key()


def _read_ecdsa(node: Node) -> ec.EllipticCurvePublicKey:
    curve_name = node.need("ecdsa,curve").as_str()
    curve = _CURVES.get(curve_name)
    if curve is None:
        raise FdtError(f"unsupported curve {curve_name!r}")
    x = node.need("ecdsa,x-point").as_int()
    y = node.need("ecdsa,y-point").as_int()
    return ec.EllipticCurvePublicNumbers(x, y, curve).public_key()
