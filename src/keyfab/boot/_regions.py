"""Which bytes of a FIT a configuration signature covers (U-Boot's fdt_find_regions).

U-Boot hashes byte ranges of the struct block, chosen by node path: a node in the
include set contributes its tags and properties (minus the excluded ones, the
image payloads), its direct subnodes contribute only their begin/end tags, and
everything deeper nothing. Adjacent ranges merge. The final FDT_END token is
always included, then a prefix of the strings block. Signer and verifier both
call this one function on the final blob, so they cannot disagree on the bytes.
"""

from __future__ import annotations

from collections.abc import Collection

from keyfab.boot._errors import FdtError
from keyfab.boot._tokens import (
    FDT_BEGIN_NODE,
    FDT_END,
    FDT_END_NODE,
    FDT_NOP,
    FDT_PROP,
    MAX_DEPTH,
    Bytes,
    iter_tokens,
    read_header,
)

EXCLUDED_PROPS = frozenset({"data", "data-size", "data-position", "data-offset"})
"""Image payload properties: covered by the image hash nodes, not the signature."""

MAX_PATH = 200
"""U-Boot's path buffer in the verifier; longer paths fail there, so here too."""

Region = tuple[int, int]
"""(absolute offset, size) of a hashed range of the blob."""


class _Walk:
    """The state machine of fdt_find_regions: 'want' per depth and the open range."""

    def __init__(self, base: int) -> None:
        self.base = base
        self.regions: list[Region] = []
        self.start = -1
        self.want = 0
        self.stack: list[int] = []
        self.path: list[str] = []

    def flush(self, include: int, offset: int, stop_at: int) -> None:
        if include and self.start == -1:
            last = self.regions[-1] if self.regions else None
            if last is not None and offset == last[0] + last[1] - self.base:
                self.start = self.regions.pop()[0] - self.base
            else:
                self.start = offset
        if not include and self.start != -1:
            self.regions.append((self.base + self.start, stop_at - self.start))
            self.start = -1

    def begin(self, name: str, include_paths: Collection[str]) -> tuple[int, bool]:
        """Enter a node: returns (include, stop at this token's start)."""
        if len(self.stack) >= MAX_DEPTH:
            raise FdtError(f"device tree deeper than {MAX_DEPTH} levels")
        parent_length = len("/" + "/".join(self.path[1:])) if self.path else 0
        if parent_length + 2 + len(name) >= MAX_PATH:  # U-Boot's exact limit
            raise FdtError(f"device tree path longer than {MAX_PATH} bytes")
        self.path.append(name)
        path = "/" + "/".join(self.path[1:])
        self.stack.append(self.want)
        stop_here = self.want == 1
        if path in include_paths:
            self.want = 2
        elif self.want:
            self.want -= 1
        else:
            stop_here = True
        return self.want, stop_here

    def end(self) -> int:
        include = self.want
        if not self.stack:
            raise FdtError("device tree closes more nodes than it opens")
        self.want = self.stack.pop()
        self.path.pop()
        return include


def find_regions(
    blob: Bytes,
    include_paths: Collection[str],
    exclude_props: Collection[str] = EXCLUDED_PROPS,
) -> list[Region]:
    """The struct-block regions (absolute offsets) U-Boot hashes for these nodes."""
    header = read_header(blob)
    walk = _Walk(header.off_dt_struct)
    next_offset = 0
    for token in iter_tokens(blob, header):
        offset, next_offset = token.offset, token.next_offset
        stop_at = next_offset
        if token.tag == FDT_PROP:
            include = int(walk.want >= 2 and token.name not in exclude_props)
            stop_at = offset
        elif token.tag == FDT_NOP:
            include, stop_at = int(walk.want >= 2), offset
        elif token.tag == FDT_BEGIN_NODE:
            include, stop_here = walk.begin(token.name, include_paths)
            stop_at = offset if stop_here else stop_at
        elif token.tag == FDT_END_NODE:
            include = walk.end()
        else:
            include = 1
        walk.flush(include, offset, stop_at)
        if token.tag == FDT_END:
            break
    if next_offset != header.size_dt_struct or walk.start == -1:
        raise FdtError("device tree struct block does not end with its end token")
    walk.regions.append((walk.base + walk.start, next_offset - walk.start))
    return walk.regions


def strings_region(blob: Bytes, size: int) -> Region:
    """The hashed prefix of the strings block, refused when larger than the block."""
    header = read_header(blob)
    if not 0 <= size <= header.size_dt_strings:
        raise FdtError(f"hashed strings size {size} exceeds the strings block")
    return header.off_dt_strings, size
