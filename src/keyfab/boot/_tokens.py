"""The flattened device tree (DTB) wire format: header, tokens, bounds checks.

Everything here reads; nothing allocates more than the input. A DTB is
attacker-controlled input (a FIT arrives over the network or on a USB stick),
so every length and offset is checked against the buffer before it is used,
and iteration always advances, so no input can make it loop.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from keyfab.boot._errors import FdtError

FDT_MAGIC = 0xD00DFEED
FDT_BEGIN_NODE = 1
FDT_END_NODE = 2
FDT_PROP = 3
FDT_NOP = 4
FDT_END = 9
MAX_DEPTH = 32
"""The nesting depth U-Boot's region finder accepts; deeper trees are refused."""

HEADER = struct.Struct(">10I")
U32 = struct.Struct(">I")
PROP_HEAD = struct.Struct(">III")
RSV_ENTRY = struct.Struct(">QQ")
VERSION = 17
LAST_COMP_VERSION = 16

Bytes = bytes | bytearray | memoryview


def align4(offset: int) -> int:
    """The next multiple of four: every struct-block token starts aligned."""
    return (offset + 3) & ~3


@dataclass(frozen=True)
class Header:
    """The fixed 40-byte DTB header, already bounds-checked against its buffer."""

    totalsize: int
    off_dt_struct: int
    off_dt_strings: int
    off_mem_rsvmap: int
    version: int
    last_comp_version: int
    boot_cpuid_phys: int
    size_dt_strings: int
    size_dt_struct: int


def read_header(buf: Bytes) -> Header:
    """Parse and bounds-check the header of the DTB at the start of ``buf``."""
    if len(buf) < HEADER.size:
        raise FdtError(f"device tree truncated: {len(buf)} bytes, the header alone is 40")
    fields = HEADER.unpack_from(buf, 0)
    if fields[0] != FDT_MAGIC:
        raise FdtError(f"not a device tree: bad magic 0x{fields[0]:08x}")
    header = Header(*fields[1:])
    if header.version < VERSION or header.last_comp_version > VERSION:
        raise FdtError(f"unsupported device tree version {header.version}")
    if not HEADER.size <= header.totalsize <= len(buf):
        raise FdtError(f"device tree size {header.totalsize} exceeds the {len(buf)} bytes read")
    _check_block("struct", header.off_dt_struct, header.size_dt_struct, header.totalsize, 4)
    _check_block("strings", header.off_dt_strings, header.size_dt_strings, header.totalsize, 1)
    _check_block("reserve map", header.off_mem_rsvmap, 0, header.totalsize, 8)
    struct_end = header.off_dt_struct + header.size_dt_struct
    strings_end = header.off_dt_strings + header.size_dt_strings
    if header.off_dt_struct < strings_end and header.off_dt_strings < struct_end:
        raise FdtError("device tree struct and strings blocks overlap")
    return header


def _check_block(name: str, offset: int, size: int, total: int, alignment: int) -> None:
    if offset < HEADER.size or offset % alignment or offset + size > total:
        raise FdtError(f"device tree {name} block at {offset}+{size} is out of bounds")


@dataclass(frozen=True, slots=True)
class Token:
    """One struct-block token; offsets are relative to the struct block, as in libfdt."""

    tag: int
    offset: int
    next_offset: int
    name: str = ""
    value: memoryview = field(default_factory=lambda: memoryview(b""))
    nameoff: int = 0
    pad: bytes = b""
    """The alignment bytes after a name or value: libfdt does not always zero them."""


def _cstring(block: memoryview, start: int, what: str) -> tuple[str, int]:
    """The NUL-terminated ASCII string at ``start`` and the offset of its NUL."""
    end = bytes(block[start : start + 4096]).find(b"\0")
    if end < 0:
        raise FdtError(f"device tree {what} at {start} is unterminated or too long")
    raw = bytes(block[start : start + end])
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise FdtError(f"device tree {what} at {start} is not ASCII") from None
    if not text.isprintable():
        raise FdtError(f"device tree {what} at {start} has control characters")
    return text, start + end


def iter_tokens(buf: Bytes, header: Header | None = None) -> Iterator[Token]:
    """Walk the struct block token by token, checking every length first.

    Stops after FDT_END; raises FdtError on a truncated token, an unknown tag, a
    name offset outside the strings block or a property running off the end.
    """
    view = memoryview(buf)
    header = header or read_header(view)
    block = view[header.off_dt_struct : header.off_dt_struct + header.size_dt_struct]
    strings = view[header.off_dt_strings : header.off_dt_strings + header.size_dt_strings]
    offset = 0
    while True:
        if offset + 4 > len(block):
            raise FdtError(f"device tree struct block truncated at {offset}")
        tag = U32.unpack_from(block, offset)[0]
        if tag == FDT_BEGIN_NODE:
            name, nul = _cstring(block, offset + 4, "node name")
            end = _bounded(align4(nul + 1), block)
            token = Token(tag, offset, end, name, pad=bytes(block[nul + 1 : end]))
        elif tag == FDT_PROP:
            token = _prop_token(block, strings, offset)
        elif tag in (FDT_END_NODE, FDT_NOP, FDT_END):
            token = Token(tag, offset, offset + 4)
        else:
            raise FdtError(f"device tree has unknown token 0x{tag:x} at {offset}")
        yield token
        if tag == FDT_END:
            return
        offset = token.next_offset


def _bounded(offset: int, block: memoryview) -> int:
    if offset > len(block):
        raise FdtError(f"device tree token runs past the struct block end at {offset}")
    return offset


def _prop_token(block: memoryview, strings: memoryview, offset: int) -> Token:
    if offset + PROP_HEAD.size > len(block):
        raise FdtError(f"device tree property header truncated at {offset}")
    _, length, nameoff = PROP_HEAD.unpack_from(block, offset)
    start = offset + PROP_HEAD.size
    if length > len(block) - start:
        raise FdtError(f"device tree property at {offset} claims {length} bytes, past the end")
    if nameoff >= len(strings):
        raise FdtError(f"device tree property at {offset} names string {nameoff}, out of range")
    name, _ = _cstring(strings, nameoff, "property name")
    if not name:
        raise FdtError(f"device tree property at {offset} has an empty name")
    value = block[start : start + length]
    end = _bounded(align4(start + length), block)
    pad = bytes(block[start + length : end])
    return Token(FDT_PROP, offset, end, name, value, nameoff, pad)


def read_reserve_map(view: memoryview, header: Header) -> list[tuple[int, int]]:
    entries: list[tuple[int, int]] = []
    offset = header.off_mem_rsvmap
    while True:
        if offset + RSV_ENTRY.size > header.totalsize:
            raise FdtError("device tree reserve map is unterminated")
        address, size = RSV_ENTRY.unpack_from(view, offset)
        if (address, size) == (0, 0):
            return entries
        entries.append((address, size))
        offset += RSV_ENTRY.size
