"""Hostile FITs: corrupt a signed image anywhere; verification answers, never crashes."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyfab.boot import (
    Fdt,
    FitImage,
    Node,
    Prop,
    SignatureAlgorithm,
    Signer,
    add_key,
    parse,
    sign_fit,
    verify_fit,
)
from keyfab.boot._fdt import read_header
from keyfab.boot._verify import config_regions
from keyfab.errors import KeyfabError
from keyfab.rot import load_key

from .conftest import ItsMaker, KeyMaker

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:keyfab.rot")


@pytest.fixture
def signed(make_fit: ItsMaker, keydir: KeyMaker, payloads: Path) -> tuple[bytes, Fdt]:
    key = load_key(f"soft:{keydir('dev', 'rsa2048') / 'dev'}.pem")
    fit = FitImage.load(make_fit().read_bytes())
    sign_fit(fit, Signer(key, "dev", SignatureAlgorithm.for_key(key), timestamp=1))
    control = parse((payloads / "fdt.dtb").read_bytes())
    add_key(control, key.public_key(), "dev", "sha256,rsa2048", "conf")
    return fit.to_bytes(), parse(control.to_bytes())


def _covered(blob: bytes) -> set[int]:
    """Every byte offset a verdict depends on: signed regions, strings prefix, payloads."""
    fit = FitImage.load(blob)
    config = fit.configuration(None)
    regions = config_regions(fit, config)
    header = read_header(blob)
    regions.append((header.off_dt_strings, header.size_dt_strings))
    base = memoryview(blob)
    for image in fit.images():
        data = fit.image_data(image)
        start = bytes(base).index(bytes(data))
        regions.append((start, len(data)))
    return {offset for start, size in regions for offset in range(start, start + size)}


def test_boot_fuzz_corrupted_fit_never_crashes(signed: tuple[bytes, Fdt]) -> None:
    blob, control = signed
    assert verify_fit(FitImage.load(blob), control).ok
    struct_end = 0x38 + struct.unpack_from(">I", blob, 36)[0]
    covered = _covered(blob)

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def corrupt(data: st.DataObject) -> None:
        changed = bytearray(blob)
        for _ in range(data.draw(st.integers(1, 4))):
            position = data.draw(st.integers(0, struct_end - 1))
            changed[position] ^= 1 << data.draw(st.integers(0, 7))
        try:
            report = verify_fit(FitImage.load(bytes(changed)), control)
        except KeyfabError:
            return
        if report.ok:  # only changes outside every hashed byte and payload may pass
            assert not {i for i in covered if changed[i] != blob[i]}

    corrupt()


def test_boot_fuzz_huge_node_is_linear(tmp_path: Path) -> None:
    """Many properties and siblings: parsing stays linear (sets, not list scans)."""
    strings = bytearray()
    root = Node("")
    for index in range(20000):
        root.props.append(Prop(f"p{index}", b"", nameoff=len(strings)))
        strings += f"p{index}\0".encode()
    root.children = [Node(f"n{index}") for index in range(20000)]
    fdt = parse(Fdt(root, strings).to_bytes())
    assert len(fdt.root.props) == len(fdt.root.children) == 20000
