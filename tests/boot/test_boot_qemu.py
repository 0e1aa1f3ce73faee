"""The real judge: Debian's U-Boot in QEMU boots what keyfab signs and refuses tampering.

One QEMU boot serves every case: the refused images are tried first (a failed
bootm returns to the prompt), the good one last (it starts the "kernel").
keyfab's verifier must reach the same verdict as U-Boot on each image.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from keyfab.boot import (
    FitImage,
    SignatureAlgorithm,
    Signer,
    SignImagesWarning,
    add_key,
    parse,
    sign_fit,
    verify_fit,
)
from keyfab.rot import PrivateKey, load_key

from .conftest import ItsMaker, KeyMaker, require_tool
from .uboot import PROMPT, UBOOT_BIN, UBoot, dump_machine_dtb

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::UserWarning:keyfab.rot")]

GOOD, KERNEL_BIT, HASHED_PROP, UNSIGNED, PARTIAL = (
    0x50000000,
    0x51000000,
    0x52000000,
    0x53000000,
    0x54000000,
)
REFUSED = (KERNEL_BIT, HASHED_PROP, UNSIGNED, PARTIAL)


@pytest.fixture(scope="module")
def uboot_ready() -> None:
    require_tool("qemu-system-aarch64")
    if not UBOOT_BIN.exists():
        pytest.skip(f"{UBOOT_BIN} missing (Debian package u-boot-qemu)")


def _flip(blob: bytes, needle: bytes) -> bytes:
    changed = bytearray(blob)
    changed[blob.index(needle)] ^= 1
    return bytes(changed)


Setup = tuple[Path, dict[int, Path]]


def _write(tmp_path: Path, key: PrivateKey, blobs: dict[int, bytes]) -> Setup:
    """The image files and a control DTB: QEMU's own tree plus the required key."""
    files = {}
    for address, blob in blobs.items():
        files[address] = tmp_path / f"image-{address:x}.itb"
        files[address].write_bytes(blob)
    machine = tmp_path / "virt.dtb"
    dump_machine_dtb(machine)
    control = parse(machine.read_bytes())
    add_key(control, key.public_key(), "dev", "sha256,rsa2048", "conf")
    control_path = tmp_path / "control.dtb"
    control_path.write_bytes(control.to_bytes())
    return control_path, files


def _key(keydir: KeyMaker) -> tuple[PrivateKey, Signer]:
    key = load_key(f"soft:{keydir('dev', 'rsa2048') / 'dev'}.pem")
    return key, Signer(key, "dev", SignatureAlgorithm.for_key(key))


@pytest.fixture
def images(uboot_ready: None, make_fit: ItsMaker, keydir: KeyMaker, tmp_path: Path) -> Setup:
    key, signer = _key(keydir)
    fit = FitImage.load(make_fit().read_bytes())
    sign_fit(fit, signer, ["conf-1"])
    good = fit.to_bytes()
    load = struct.pack(">I", 0x40400000)
    partial = make_fit(
        "partial", algo="sha256,rsa2048", keys=keydir("dev", "rsa2048"), sign_images='"kernel"'
    )
    return _write(
        tmp_path,
        key,
        {
            GOOD: good,
            KERNEL_BIT: _flip(good, b"KERNEL-END"),
            HASHED_PROP: good.replace(load, struct.pack(">I", 0x40400001), 1),
            UNSIGNED: make_fit("unsigned").read_bytes(),
            PARTIAL: partial.read_bytes(),  # mkimage signed the kernel only
        },
    )


def _keyfab_accepts(control_path: Path, image: Path) -> bool:
    control = parse(control_path.read_bytes())
    return verify_fit(FitImage.load(image.read_bytes()), control, "conf-1").ok


def test_boot_qemu_uboot_agrees_with_keyfab(images: Setup) -> None:
    """U-Boot refuses each tampered image, then boots the good one; keyfab agrees."""
    control_path, files = images
    uboot = UBoot(control_path, files)
    try:
        uboot.stop_autoboot()
        refused = {
            a: uboot.run(f"bootm 0x{a:x}#conf-1", "Starting kernel", PROMPT) for a in REFUSED
        }
        booted = uboot.run(f"bootm 0x{GOOD:x}#conf-1", "Starting kernel", PROMPT)
    finally:
        uboot.close()
    for address, output in refused.items():
        assert "can't get kernel image" in output, output
        assert not _keyfab_accepts(control_path, files[address]), output
    assert "sha256,rsa2048:dev+ OK" in refused[KERNEL_BIT]
    assert "Bad hash value for 'hash-1' hash node in 'kernel'" in refused[KERNEL_BIT]
    assert "sha256,rsa2048:dev-" in refused[HASHED_PROP]
    assert "Failed to verify required signature 'key-dev'" in refused[UNSIGNED]
    assert "sha256,rsa2048:dev-" in refused[PARTIAL]
    assert "sha256,rsa2048:dev+ OK" in booted
    assert "sha256+ OK" in booted
    assert "Starting kernel" in booted
    assert _keyfab_accepts(control_path, files[GOOD])


def test_boot_qemu_boots_keyfab_image_whose_sign_images_left_one_out(
    uboot_ready: None, make_fit: ItsMaker, keydir: KeyMaker, tmp_path: Path
) -> None:
    """keyfab warns about a partial sign-images list and signs every image, so U-Boot boots."""
    key, signer = _key(keydir)
    fit = FitImage.load(make_fit(algo="sha256,rsa2048", sign_images='"kernel"').read_bytes())
    with pytest.warns(SignImagesWarning):
        sign_fit(fit, signer, ["conf-1"])
    control_path, files = _write(tmp_path, key, {GOOD: fit.to_bytes()})
    uboot = UBoot(control_path, files)
    try:
        uboot.stop_autoboot()
        booted = uboot.run(f"bootm 0x{GOOD:x}#conf-1", "Starting kernel", PROMPT)
    finally:
        uboot.close()
    assert booted.count("sha256,rsa2048:dev+ OK") == 2, booted
    assert "Starting kernel" in booted
    assert _keyfab_accepts(control_path, files[GOOD])


@pytest.mark.parametrize("mode", ["all", "any"])
def test_boot_qemu_required_mode(
    uboot_ready: None, make_fit: ItsMaker, keydir: KeyMaker, tmp_path: Path, mode: str
) -> None:
    """Two required keys, image signed by one: U-Boot boots only with required-mode "any"."""
    key, signer = _key(keydir)
    other = load_key(f"soft:{keydir('other', 'rsa2048') / 'other'}.pem")
    fit = FitImage.load(make_fit().read_bytes())
    sign_fit(fit, signer, ["conf-1"])
    control_path, files = _write(tmp_path, key, {GOOD: fit.to_bytes()})
    control = parse(control_path.read_bytes())
    add_key(control, other.public_key(), "other", "sha256,rsa2048", "conf")
    if mode == "any":
        control.root.add_child("signature").set_str("required-mode", "any")
    control_path.write_bytes(control.to_bytes())
    uboot = UBoot(control_path, files)
    try:
        uboot.stop_autoboot()
        output = uboot.run(f"bootm 0x{GOOD:x}#conf-1", "Starting kernel", PROMPT)
    finally:
        uboot.close()
    booted = "Starting kernel" in output
    assert booted is (mode == "any"), output
    assert _keyfab_accepts(control_path, files[GOOD]) is booted
