"""The pure-Python DTB reader/writer: byte-exact round trips and hostile input."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyfab.boot import Fdt, FdtError, Node, find_regions, parse
from keyfab.boot._tokens import iter_tokens, read_header

from .conftest import ItsMaker, run


def _tree() -> Fdt:
    root = Node("")
    root.set_str("compatible", "x")
    child = root.add_child("memory@40000000")
    child.set("reg", struct.pack(">QQ", 0x40000000, 0x1000))
    child.set("empty", b"")
    return Fdt(root)


def test_boot_fdt_roundtrip_dtc_blob(payloads: Path) -> None:
    blob = (payloads / "fdt.dtb").read_bytes()
    assert parse(blob).to_bytes() == blob


def test_boot_fdt_roundtrip_mkimage_fit_keeps_padding_and_free_space(make_fit: ItsMaker) -> None:
    blob = make_fit().read_bytes()
    assert parse(blob).to_bytes() == blob


def test_boot_fdt_written_tree_reads_back_with_dtc(tmp_path: Path) -> None:
    path = tmp_path / "t.dtb"
    path.write_bytes(_tree().to_bytes())
    source = run("dtc", "-I", "dtb", "-O", "dts", path).stdout
    assert "memory@40000000" in source
    assert 'compatible = "x"' in source


def test_boot_fdt_strings_are_appended_never_reordered() -> None:
    fdt = _tree()
    before = bytes(fdt.strings)
    fdt.root.set_str("zzz-new", "v")
    fdt.root.set_str("compatible", "y")
    blob = fdt.to_bytes()
    again = parse(blob)
    assert bytes(again.strings).startswith(before)
    assert again.strings.count(b"compatible\0") == 1
    assert again.root.need("zzz-new").as_str() == "v"


def test_boot_fdt_string_offsets_reuse_suffixes_like_libfdt() -> None:
    fdt = _tree()
    fdt.root.set("data-size", b"\0\0\0\1")
    fdt.to_bytes()
    size = len(fdt.strings)
    assert fdt.string_offset("size") == fdt.strings.find(b"size\0")
    assert len(fdt.strings) == size


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:20], "truncated"),
        (lambda b: b"\0\0\0\0" + b[4:], "bad magic"),
        (lambda b: b[:4] + struct.pack(">I", 1 << 30) + b[8:], "exceeds"),
        (lambda b: b[:8] + struct.pack(">I", 1 << 20) + b[12:], "out of bounds"),
        (lambda b: b[:20] + struct.pack(">I", 2) + b[24:], "version"),
    ],
)
def test_boot_fdt_rejects_bad_headers(mutate: object, message: str) -> None:
    blob = _tree().to_bytes()
    with pytest.raises(FdtError, match=message):
        parse(mutate(blob))  # type: ignore[operator]


def _struct_offset(blob: bytes) -> int:
    return read_header(blob).off_dt_struct


def test_boot_fdt_rejects_huge_property_length() -> None:
    blob = bytearray(_tree().to_bytes())
    first_prop = _struct_offset(blob) + 8  # after BEGIN_NODE and the empty root name
    struct.pack_into(">I", blob, first_prop + 4, 0xFFFFFFF0)
    with pytest.raises(FdtError, match="claims"):
        parse(bytes(blob))


def test_boot_fdt_rejects_name_offset_out_of_range() -> None:
    blob = bytearray(_tree().to_bytes())
    struct.pack_into(">I", blob, _struct_offset(blob) + 16, 0x7FFFFFFF)
    with pytest.raises(FdtError, match="out of range"):
        parse(bytes(blob))


def test_boot_fdt_rejects_unknown_token_and_unbalanced_nodes() -> None:
    blob = bytearray(_tree().to_bytes())
    struct.pack_into(">I", blob, _struct_offset(blob), 7)
    with pytest.raises(FdtError, match="unknown token"):
        parse(bytes(blob))
    header = read_header(bytes(blob))
    end_node = header.off_dt_struct + header.size_dt_struct - 8
    blob = bytearray(_tree().to_bytes())
    struct.pack_into(">I", blob, end_node, 4)  # NOP instead of the root's END_NODE
    with pytest.raises(FdtError, match="complete root"):
        parse(bytes(blob))


def test_boot_fdt_rejects_duplicate_names() -> None:
    root = Node("")
    root.children += [Node("a"), Node("a")]
    with pytest.raises(FdtError, match="two nodes"):
        parse(Fdt(root).to_bytes())


def test_boot_fdt_rejects_too_deep_trees() -> None:
    root = node = Node("")
    for level in range(40):
        node = node.add_child(f"n{level}")
    with pytest.raises(FdtError, match="deeper"):
        Fdt(root).to_bytes()


SEED = _tree().to_bytes()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_boot_fdt_fuzz_reader_never_crashes(data: st.DataObject) -> None:
    """Random corruption of a valid blob: the reader returns a tree or an FdtError."""
    blob = bytearray(SEED)
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(blob) - 1))
        blob[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    candidate = bytes(blob[:cut]) + data.draw(st.binary(max_size=16))
    try:
        fdt = parse(candidate)
    except FdtError:
        return
    assert parse(fdt.to_bytes()).to_bytes() == fdt.to_bytes()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_boot_fdt_fuzz_arbitrary_bytes(raw: bytes) -> None:
    try:
        header = read_header(raw)
        list(iter_tokens(raw, header))
        parse(raw)
    except FdtError:
        pass


def test_boot_fdt_regions_follow_uboot_want_levels() -> None:
    """Included node: tags and props (minus payloads); its subnodes: tags only; deeper: nothing."""
    root = Node("")
    root.set_str("description", "d")
    images = root.add_child("images")
    kernel = images.add_child("kernel")
    kernel.set("data", b"PAYLOAD!")
    kernel.set_str("type", "kernel")
    kernel.add_child("hash-1").set_str("algo", "sha256")
    kernel.add_child("other").add_child("deep").set_str("x", "HIDDEN")
    images.add_child("unreferenced").set_str("type", "SECRET")
    blob = Fdt(root).to_bytes()
    regions = find_regions(blob, ["/", "/images/kernel"])
    covered = b"".join(blob[start : start + size] for start, size in regions)
    assert b"PAYLOAD!" not in covered
    assert b"kernel\0" in covered  # the type value and the node name
    assert b"hash-1\0" in covered
    assert b"other\0" in covered
    assert b"deep\0" not in covered
    assert b"HIDDEN" not in covered
    assert b"unreferenced" not in covered
    assert b"SECRET" not in covered
    assert covered.endswith(struct.pack(">I", 9))  # FDT_END always included


def test_boot_fdt_regions_refuse_overlong_paths() -> None:
    root = Node("")
    root.add_child("a" * 120).add_child("b" * 120)
    with pytest.raises(FdtError, match="path longer"):
        find_regions(Fdt(root).to_bytes(), ["/"])
