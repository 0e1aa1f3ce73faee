"""What U-Boot's measured boot extends into PCRs for a FIT configuration.

With ``CONFIG_MEASURED_BOOT``, ``bootm`` measures right after it found the
images and before it loads them (``bootm_measure`` in U-Boot's
``boot/bootm.c``), so each digest is of the payload bytes exactly as they sit
in the FIT (compressed, if the image is), hashed in every active PCR bank:

- PCR 8, ``EV_COMPACT_HASH`` with data ``"linux\\0"``: the ``kernel`` image;
- PCR 9, ``EV_COMPACT_HASH`` with data ``"initrd\\0"``: the ``ramdisk`` image,
  or zero bytes when the configuration has none (U-Boot measures it anyway);
- ``EV_TABLE_OF_DEVICES`` with data ``"dts\\0"`` (``CONFIG_MEASURE_DEVICETREE``;
  PCR 1 today, PCR 9 in older U-Boot): the ``fdt`` image.

The boot arguments (PCR 1) depend on the environment, not the FIT: not here.
Recording these digests when a release is signed is what lets a verifier
match a device's event log against the releases without hand-typed hashes.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import serialization

from keyfab.authority.references import NewRelease
from keyfab.boot._fdt import Node
from keyfab.boot._fit import FitImage
from keyfab.boot._policy import ROLLBACK_PROPERTY
from keyfab.boot._sign import Signer

BANKS = ("sha1", "sha256", "sha384", "sha512")
"""The PCR banks U-Boot's TCG2 code can hash into (``tpm2_supported_algorithms``)."""
MEASURED = {"kernel": "linux", "ramdisk": "initrd", "fdt": "dts"}
"""Configuration property -> the event data (without NUL) U-Boot logs its digest under."""

_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
Digests = dict[str, str]
"""bank -> hex digest."""


def _digests(data: bytes | memoryview) -> Digests:
    return {bank: hashlib.new(bank, data).hexdigest() for bank in BANKS}


def _first_image(fit: FitImage, config: Node, prop: str) -> Node | None:
    """The image U-Boot loads for ``prop``: the first name the property lists."""
    found = config.prop(prop)
    names = found.as_strings() if found is not None else []
    return fit.image(names[0]) if names else None


def measured_digests(fit: FitImage, config: Node) -> dict[str, Digests]:
    """``{"linux": {bank: hex}, "initrd": …, "dts": …}`` for one configuration.

    ``initrd`` is always present (the digest of nothing when there is no
    ramdisk); ``dts`` only when the configuration names an ``fdt``.
    """
    measured: dict[str, Digests] = {}
    for prop, name in MEASURED.items():
        image = _first_image(fit, config, prop)
        if image is not None:
            measured[name] = _digests(fit.image_data(image))
        elif name == "initrd":
            measured[name] = _digests(b"")
    return measured


def release_measurements(
    fit: FitImage, configs: list[str] | None = None
) -> dict[str, dict[str, Digests]]:
    """Per configuration name (the named ones, default all), what U-Boot will measure."""
    targets = [fit.configuration(n) for n in configs] if configs else fit.configurations()
    return {config.name: measured_digests(fit, config) for config in targets}


def signed_release(
    fit: FitImage,
    signer: Signer,
    configs: list[str],
    *,
    product: str,
    version: str,
    rollback_index: int | None,
    image: str,
) -> NewRelease:
    """The release record for configurations just signed: what U-Boot will measure, by whom.

    Without ``rollback_index`` the first signed configuration's own
    ``rollback-index`` (what ``fit verify --min-version`` checks) is recorded.
    """
    if rollback_index is None:
        found = fit.configuration(configs[0]).prop(ROLLBACK_PROPERTY)
        rollback_index = found.as_u32() if found is not None else None
    spki = signer.key.public_key().public_bytes(*_SPKI)
    return NewRelease(
        product=product,
        version=version,
        rollback_index=rollback_index,
        key_name=signer.hint,
        key_fingerprint=hashlib.sha256(spki).hexdigest(),
        algorithm=signer.algorithm.name,
        image=image,
        measurements=release_measurements(fit, configs),
    )
