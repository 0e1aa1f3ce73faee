"""keyfab signs, keyfab verifies: the policy cases U-Boot decides, node by node."""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import pytest

from keyfab.boot import (
    FitError,
    FitImage,
    SignatureAlgorithm,
    Signer,
    SignImagesWarning,
    StaleSignatureWarning,
    add_key,
    parse,
    sign_fit,
    verify_fit,
)
from keyfab.boot._fdt import Fdt
from keyfab.rot import load_key

from .conftest import ItsMaker, KeyMaker

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:keyfab.rot")


def _signer(keydir: KeyMaker, hint: str, kind: str, pss: bool = False) -> Signer:
    key = load_key(f"soft:{keydir(hint, kind) / hint}.pem")
    checksum = "sha384" if kind == "ec384" else "sha256"
    algorithm = SignatureAlgorithm.for_key(key, checksum, pss=pss)
    return Signer(key, hint, algorithm, timestamp=1700000000)


def _control(
    payloads: Path, *signers: Signer, required: str | None = "conf", mode: str | None = None
) -> Fdt:
    control = parse((payloads / "fdt.dtb").read_bytes())
    for signer in signers:
        add_key(control, signer.key.public_key(), signer.hint, signer.algorithm.name, required)
    if mode:
        control.root.add_child("signature").set_str("required-mode", mode)
    return parse(control.to_bytes())


def _signed(make_fit: ItsMaker, *signers: Signer, extra: str = "") -> bytes:
    fit = FitImage.load(make_fit(extra=extra).read_bytes())
    sign_fit(fit, signers)
    return fit.to_bytes()


def _flip(blob: bytes, needle: bytes, bit: int = 0) -> bytes:
    position = blob.index(needle)
    changed = bytearray(blob)
    changed[position] ^= 1 << bit
    return bytes(changed)


@pytest.mark.parametrize(
    ("kind", "pss"),
    [("rsa2048", False), ("rsa2048", True), ("rsa3072", False), ("ec", False), ("ec384", False)],
)
def test_boot_sign_then_verify_each_algorithm(
    make_fit: ItsMaker, keydir: KeyMaker, payloads: Path, kind: str, pss: bool
) -> None:
    signer = _signer(keydir, f"k-{kind}", kind, pss)
    blob = _signed(make_fit, signer)
    report = verify_fit(FitImage.load(blob), _control(payloads, signer))
    assert report.ok, report.reason
    kinds = {(n.path, n.kind, n.ok) for n in report.nodes}
    assert ("/configurations/conf-1/signature-1", "signature", True) in kinds
    assert ("/images/kernel/hash-1", "hash", True) in kinds


def test_boot_sign_flipped_kernel_bit_fails_hash(
    make_fit: ItsMaker, keydir: KeyMaker, payloads: Path
) -> None:
    signer = _signer(keydir, "dev", "rsa2048")
    blob = _flip(_signed(make_fit, signer), b"KERNEL-END")
    report = verify_fit(FitImage.load(blob), _control(payloads, signer))
    assert not report.ok
    assert "kernel" in report.reason
    assert "bad hash value" in report.reason


def test_boot_sign_flipped_hashed_property_fails_signature(
    make_fit: ItsMaker, keydir: KeyMaker, payloads: Path
) -> None:
    signer = _signer(keydir, "dev", "rsa2048")
    blob = _signed(make_fit, signer)
    blob = blob.replace(struct.pack(">I", 0x40400000), struct.pack(">I", 0x40400001), 1)
    report = verify_fit(FitImage.load(blob), _control(payloads, signer))
    assert not report.ok
    assert "required key 'dev' did not verify" in report.reason


def test_boot_sign_unsigned_configuration_refused_only_when_key_required(
    make_fit: ItsMaker, keydir: KeyMaker, payloads: Path
) -> None:
    signer = _signer(keydir, "dev", "rsa2048")
    fit = FitImage.load(make_fit().read_bytes())
    assert not verify_fit(fit, _control(payloads, signer)).ok
    assert verify_fit(fit, _control(payloads, signer, required=None)).ok


def test_boot_sign_required_mode_any_and_all(
    make_fit: ItsMaker, keydir: KeyMaker, payloads: Path
) -> None:
    first, second = _signer(keydir, "dev", "rsa2048"), _signer(keydir, "other", "rsa2048")
    fit = FitImage.load(_signed(make_fit, first))
    assert not verify_fit(fit, _control(payloads, first, second)).ok
    assert verify_fit(fit, _control(payloads, first, second, mode="any")).ok
    both = FitImage.load(_signed(make_fit, first, second))
    report = verify_fit(both, _control(payloads, first, second))
    assert report.ok, report.reason
    assert sum(n.kind == "signature" and n.ok for n in report.nodes) == 2


def test_boot_sign_covers_images_left_out_of_sign_images(
    make_fit: ItsMaker, keydir: KeyMaker, payloads: Path
) -> None:
    signer = _signer(keydir, "dev", "rsa2048")
    fit = FitImage.load(make_fit().read_bytes())
    config = fit.configuration(None)
    node = config.add_child("signature-1")
    node.set_str("key-name-hint", "dev")
    node.set("sign-images", b"kernel\0")
    with pytest.warns(SignImagesWarning, match="leaves out fdt"):
        sign_fit(fit, signer)
    blob = fit.to_bytes()
    assert b"/images/fdt-1/hash-1\0" in blob
    tampered = blob.replace(b"flat_dt\0", b"flat_du\0", 1)
    assert not verify_fit(FitImage.load(tampered), _control(payloads, signer)).ok


def test_boot_sign_ignores_edited_hashed_nodes(
    make_fit: ItsMaker, keydir: KeyMaker, payloads: Path
) -> None:
    """An attacker who shortens hashed-nodes must not get the fdt image out of the signature."""
    signer = _signer(keydir, "dev", "rsa2048")
    blob = _signed(make_fit, signer)
    blob = blob.replace(b"/images/fdt-1\0", b"/images/fdt-9\0").replace(b"flat_dt\0", b"flat_du\0")
    assert not verify_fit(FitImage.load(blob), _control(payloads, signer)).ok


def test_boot_sign_is_deterministic_with_source_date_epoch(
    make_fit: ItsMaker, keydir: KeyMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    key = load_key(f"soft:{keydir('dev', 'rsa2048') / 'dev'}.pem")
    outputs = set()
    for _ in range(2):
        signer = Signer(key, "dev", SignatureAlgorithm.for_key(key))
        outputs.add(_signed(make_fit, signer))
    assert len(outputs) == 1
    assert struct.pack(">I", 1700000000) in outputs.pop()


def test_boot_sign_rollback_index(make_fit: ItsMaker, keydir: KeyMaker, payloads: Path) -> None:
    signer = _signer(keydir, "dev", "rsa2048")
    fit = FitImage.load(_signed(make_fit, signer, extra="rollback-index = <5>; "))
    control = _control(payloads, signer)
    assert verify_fit(fit, control, min_version=5).ok
    report = verify_fit(fit, control, min_version=6)
    assert "below the minimum 6" in report.reason
    unsigned = FitImage.load(make_fit(extra="rollback-index = <9>; ").read_bytes())
    report = verify_fit(unsigned, _control(payloads, signer, required=None), min_version=1)
    assert "not covered by a verified signature" in report.reason


def test_boot_sign_image_signatures_required(
    make_fit: ItsMaker, keydir: KeyMaker, payloads: Path
) -> None:
    signer = _signer(keydir, "dev", "rsa2048")
    fit = FitImage.load(make_fit().read_bytes())
    sign_fit(fit, signer, images=True)
    control = _control(payloads, signer, required="image")
    assert verify_fit(FitImage.load(fit.to_bytes()), control).ok
    unsigned = FitImage.load(make_fit("plain").read_bytes())
    assert "required key 'dev'" in verify_fit(unsigned, control).reason


def test_boot_sign_wrong_algorithm_for_key(keydir: KeyMaker) -> None:
    key = load_key(f"soft:{keydir('dev', 'rsa2048') / 'dev'}.pem")
    with pytest.raises(FitError, match="algorithm says"):
        SignatureAlgorithm.parse("sha256,rsa4096").sign(key, b"\0" * 32)
    with pytest.raises(FitError, match="unsupported"):
        SignatureAlgorithm.parse("md5,rsa2048")


def test_boot_sign_refuses_unit_addresses(make_fit: ItsMaker) -> None:
    blob = make_fit().read_bytes().replace(b"fdt-1\0", b"fdt@1\0")
    with pytest.raises(FitError, match="unit address"):
        FitImage.load(blob)


def test_boot_sign_missing_image_reference(make_fit: ItsMaker, keydir: KeyMaker) -> None:
    fit = FitImage.load(make_fit().read_bytes())
    fit.configuration("conf-1").set("kernel", b"nothere\0")
    fit.configuration("conf-1").set("fdt", b"nothere\0")
    with warnings.catch_warnings(), pytest.raises(FitError, match="references no images"):
        sign_fit(fit, _signer(keydir, "dev", "rsa2048"))


def test_boot_sign_warns_when_a_new_signer_invalidates_an_old_signature(
    make_fit: ItsMaker, keydir: KeyMaker, payloads: Path
) -> None:
    first, second = _signer(keydir, "dev", "rsa2048"), _signer(keydir, "other", "rsa2048")
    fit = FitImage.load(make_fit().read_bytes())
    sign_fit(fit, first)
    with pytest.warns(StaleSignatureWarning, match="invalidates the signatures by dev"):
        sign_fit(fit, second)
    report = verify_fit(FitImage.load(fit.to_bytes()), _control(payloads, first, second))
    assert "required key 'dev' did not verify" in report.reason
