"""Interop: FITs signed by Debian's mkimage verify with keyfab, and keyfab's match mkimage's."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from keyfab.boot import FitImage, parse, verify_fit
from keyfab.boot._fdt import Node
from keyfab.cli.fit import app

from .conftest import ItsMaker, KeyMaker, run

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:keyfab.rot")

CASES = [
    ("sha256,rsa2048", "rsa2048", False),
    ("sha256,rsa2048", "rsa2048", True),
    ("sha256,rsa4096", "rsa4096", False),
    ("sha256,ecdsa256", "ec", False),
]


def _key_node(control: Path, hint: str) -> Node:
    """mkimage 2023.01 names RSA key nodes key-<hint> but ECDSA ones just <hint>."""
    tree = parse(control.read_bytes())
    node = tree.find(f"/signature/key-{hint}") or tree.find(f"/signature/{hint}")
    assert node is not None
    return node


@pytest.mark.parametrize("required", [True, False], ids=["required", "optional"])
@pytest.mark.parametrize(("algo", "kind", "pss"), CASES, ids=["pkcs1", "pss", "rsa4096", "p256"])
def test_boot_mkimage_signed_verifies_with_keyfab(
    make_fit: ItsMaker,
    keydir: KeyMaker,
    control_dtb: Path,
    algo: str,
    kind: str,
    pss: bool,
    required: bool,
) -> None:
    hint = f"mk-{kind}"
    image = make_fit(
        algo=algo,
        hint=hint,
        pss=pss,
        keys=keydir(hint, kind),
        control=control_dtb,
        required=required,
    )
    if kind.startswith("rsa"):  # mkimage 2023.01 writes no 'required' for ECDSA keys
        assert (_key_node(control_dtb, hint).prop("required") is not None) is required
    control = parse(control_dtb.read_bytes())
    report = verify_fit(FitImage.load(image.read_bytes()), control)
    assert report.ok, report.reason
    signature = next(n for n in report.nodes if n.kind == "signature")
    assert signature.ok, signature.detail
    tampered = image.read_bytes().replace(b"KERNEL-END", b"KERNEL-ENE")
    assert not verify_fit(FitImage.load(tampered), control).ok


def test_boot_mkimage_hashed_nodes_match_keyfab_node_list(
    make_fit: ItsMaker, keydir: KeyMaker, control_dtb: Path
) -> None:
    """The nodes keyfab rebuilds from the configuration are the ones mkimage hashed."""
    image = make_fit(
        algo="sha256,rsa2048", hint="dev", keys=keydir("dev", "rsa2048"), control=control_dtb
    )
    fit = FitImage.load(image.read_bytes())
    config = fit.configuration(None)
    signature = config.child("signature-1")
    assert signature is not None
    assert signature.need("hashed-nodes").as_strings() == fit.signed_paths(config)


@pytest.mark.parametrize(
    ("options", "prop"), [(["-E"], "data-offset"), (["-E", "-p", "0x4000"], "data-position")]
)
def test_boot_mkimage_external_data_verifies(
    make_fit: ItsMaker,
    keydir: KeyMaker,
    control_dtb: Path,
    tmp_path: Path,
    options: list[str],
    prop: str,
) -> None:
    folder = keydir("dev", "rsa2048")
    image = make_fit(
        algo="sha256,rsa2048", hint="dev", keys=folder, control=control_dtb, required=True
    )
    external = tmp_path / "external.itb"
    run("mkimage", *options, "-k", folder, "-f", image.with_suffix(".its"), external)
    fit = FitImage.load(external.read_bytes())
    assert fit.images()[0].prop(prop) is not None
    report = verify_fit(fit, parse(control_dtb.read_bytes()))
    assert report.ok, report.reason
    tampered = external.read_bytes().replace(b"KERNEL-END", b"KERNEL-ENE")
    assert (
        "bad hash value"
        in verify_fit(FitImage.load(tampered), parse(control_dtb.read_bytes())).reason
    )


def test_boot_mkimage_keyfab_key_node_matches_mkimage(
    make_fit: ItsMaker, keydir: KeyMaker, control_dtb: Path, tmp_path: Path
) -> None:
    """The RSA key node keyfab writes has mkimage's properties, byte for byte."""
    folder = keydir("dev", "rsa2048")
    fresh = tmp_path / "fresh.dtb"
    fresh.write_bytes(control_dtb.read_bytes())
    make_fit(algo="sha256,rsa2048", hint="dev", keys=folder, control=control_dtb, required=True)
    plain = make_fit("plain")
    result = CliRunner().invoke(
        app,
        [
            "sign",
            str(plain),
            "--key",
            f"soft:{folder / 'dev.pem'}",
            "--key-name-hint",
            "dev",
            "--control",
            str(fresh),
            "--required",
            "conf",
        ],
    )
    assert result.exit_code == 0, result.output
    mine, theirs = _key_node(fresh, "dev"), _key_node(control_dtb, "dev")
    assert {p.name: bytes(p.value) for p in mine.props} == {
        p.name: bytes(p.value) for p in theirs.props
    }


def test_boot_mkimage_lists_keyfab_signed_image(
    make_fit: ItsMaker, keydir: KeyMaker, control_dtb: Path
) -> None:
    """mkimage -l reads what keyfab wrote, hashes and signature included."""
    folder = keydir("dev", "rsa2048")
    plain = make_fit("plain")
    result = CliRunner().invoke(
        app, ["sign", str(plain), "--key", f"soft:{folder / 'dev.pem'}", "--key-name-hint", "dev"]
    )
    assert result.exit_code == 0, result.output
    listing = run("mkimage", "-l", plain).stdout
    assert "Sign algo:    sha256,rsa2048:dev" in listing
    assert "Hash algo:    sha256" in listing
