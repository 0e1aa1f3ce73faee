"""The fuzzy extractor: a noisy, biased SRAM start-up pattern in, a stable 256-bit seed out.

Construction (chosen by measurement, see docs/puf.md):

1. **Debiasing** (von Neumann, at enrolment): the cells are read in pairs and
   only pairs whose two bits differ are kept; the first bit of a kept pair is
   unbiased whatever the array's bias, for independent cells. Which pairs were
   kept is public (a bitmap in the helper data) and says nothing about the
   values, since ``01`` and ``10`` are equally likely.
2. **Code-offset** with a concatenated code: a random 128-bit message is
   encoded by BCH(232, 128, t=13) over GF(2^8) (outer code, ``bchlib``: the
   Linux kernel's BCH), each of its 232 bits repeated 9 times (inner code);
   the helper data holds ``offset = response XOR codeword`` (2088 bits).
   Reconstruction XORs a fresh read with the offset, takes the majority of each
   group of 9 and lets BCH correct up to 13 wrong groups.
3. **Binding**: the seed is HKDF-SHA256 over the corrected response, salted
   with the digest of the helper data, and the helper data carries an
   HMAC-SHA256 tag under a key derived from that seed. Manipulated helper data,
   another device's, or a PUF drifted past what the code corrects all fail
   the tag the same way: one error, no oracle telling an attacker which bits a
   manipulation touched (Delvaux et al.'s helper-data manipulation attacks).

Everything is vectorised with numpy; only the outer decoding calls into C.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from dataclasses import dataclass

import bchlib
import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from keyfab.errors import RotError

Bits = npt.NDArray[np.uint8]
"""One bit per byte (0 or 1): what the sources return and the extractor works on."""

REPETITION = 9
BCH_T = 13
BCH_M = 8
MESSAGE_BYTES = 16
MESSAGE_BITS = 8 * MESSAGE_BYTES
CODEWORD_BITS = MESSAGE_BITS + BCH_M * BCH_T  # 232: BCH(255, 151) shortened to 128 data bits
RESPONSE_BITS = REPETITION * CODEWORD_BITS  # 2088 debiased cells
SEED_BYTES = 32
TAG_BYTES = 32

MAGIC = b"KFPH"
VERSION = 1
_HEADER = struct.Struct(">4sBBBBBI")  # magic, version, repetition, m, t, message bytes, cells
MAX_CELLS = 1 << 20  # 128 KiB of SRAM: far more than any device gives its PUF


class PufReconstructionError(RotError):
    """The seed could not be reconstructed: one error for every cause, on purpose."""

    def __init__(self) -> None:
        super().__init__(
            "PUF reconstruction failed: the start-up pattern differs from enrolment by more "
            "than the code corrects (drift) or the helper data is not this device's"
        )


class HelperDataError(RotError):
    """Helper data that cannot even be parsed (truncated, wrong size, unknown version)."""


@dataclass(frozen=True)
class HelperData:
    """The public helper data of one enrolment; ``tag`` binds it to the seed."""

    cells: int
    selection: bytes  # one bit per pair of cells: 1 = the pair was kept (debiasing)
    offset: bytes  # RESPONSE_BITS bits, packed: response XOR codeword
    tag: bytes

    @property
    def body(self) -> bytes:
        """Everything the tag covers: header, selection and offset."""
        header = _HEADER.pack(MAGIC, VERSION, REPETITION, BCH_M, BCH_T, MESSAGE_BYTES, self.cells)
        return header + self.selection + self.offset

    def to_bytes(self) -> bytes:
        return self.body + self.tag

    @property
    def digest(self) -> str:
        """SHA-256 of the whole helper data: what the registry records as evidence."""
        return hashlib.sha256(self.to_bytes()).hexdigest()


def helper_size(cells: int) -> int:
    """The exact size of the helper data for an array of ``cells`` cells."""
    return _HEADER.size + cells // 16 + RESPONSE_BITS // 8 + TAG_BYTES


def parse_helper(data: bytes, cells: int) -> HelperData:
    """Parse helper data for an array of ``cells`` cells, sizes checked before anything else.

    Only the structure is checked here; whether it belongs to this device is
    the tag's job, once the seed is reconstructed.
    """
    if len(data) != helper_size(cells):
        raise HelperDataError(
            f"PUF helper data has {len(data)} bytes, expected {helper_size(cells)} "
            f"for {cells} cells (truncated or from another configuration)"
        )
    header = _HEADER.unpack_from(data)
    if header != (MAGIC, VERSION, REPETITION, BCH_M, BCH_T, MESSAGE_BYTES, cells):
        raise HelperDataError("PUF helper data has an unknown format or code parameters")
    selection_end = _HEADER.size + cells // 16
    selection = data[_HEADER.size : selection_end]
    if int(np.unpackbits(np.frombuffer(selection, np.uint8)).sum()) != RESPONSE_BITS:
        raise HelperDataError("PUF helper data selects the wrong number of cells")
    offset_end = selection_end + RESPONSE_BITS // 8
    return HelperData(cells, selection, data[selection_end:offset_end], data[offset_end:])


def check_cells(cells: int) -> int:
    """An array size the extractor can use: whole pairs of bytes, within bounds."""
    if not (RESPONSE_BITS * 2 <= cells <= MAX_CELLS and cells % 16 == 0):
        raise ValueError(
            f"cells must be a multiple of 16 from {RESPONSE_BITS * 2} to {MAX_CELLS}, not {cells}"
        )
    return cells


def _code() -> bchlib.BCH:
    return bchlib.BCH(BCH_T, m=BCH_M)


def _encode(message: bytes) -> Bits:
    """The concatenated codeword: BCH, then every bit repeated REPETITION times."""
    ecc = bytes(_code().encode(message))
    bits = np.unpackbits(np.frombuffer(message + ecc, np.uint8))[:CODEWORD_BITS]
    return np.repeat(bits, REPETITION)


def _decode(noisy: Bits) -> Bits | None:
    """Majority per repetition group, then BCH; None if more than t groups are wrong."""
    votes = noisy.reshape(CODEWORD_BITS, REPETITION).sum(axis=1, dtype=np.int32)
    outer = (votes > REPETITION // 2).astype(np.uint8)
    packed = np.packbits(outer).tobytes()
    data, ecc = bytearray(packed[:MESSAGE_BYTES]), bytearray(packed[MESSAGE_BYTES:])
    code = _code()
    if code.decode(data, ecc) < 0:
        return None
    code.correct(data, ecc)
    return _encode(bytes(data))


def select_pairs(reference: Bits, needed: int = RESPONSE_BITS) -> Bits:
    """Von Neumann debiasing: a bitmap of the first ``needed`` pairs whose bits differ."""
    pairs = reference.reshape(-1, 2)
    differ = pairs[:, 0] != pairs[:, 1]
    kept = np.flatnonzero(differ)[:needed]
    if kept.size < needed:
        raise RotError(
            f"PUF too biased to enrol: {kept.size} usable pairs of cells, {needed} needed"
        )
    selection = np.zeros(pairs.shape[0], np.uint8)
    selection[kept] = 1
    return selection


def _response(read: Bits, selection: Bits) -> Bits:
    """The debiased response: the first bit of every kept pair."""
    response: Bits = read.reshape(-1, 2)[selection.astype(bool), 0]
    return response


def _seed(response: Bits, body: bytes) -> bytes:
    salt = hashlib.sha256(body).digest()
    hkdf = HKDF(hashes.SHA256(), SEED_BYTES, salt, b"keyfab puf seed v1")
    return hkdf.derive(np.packbits(response).tobytes())


def derive(seed: bytes, info: bytes, length: int = 32) -> bytes:
    """HKDF-Expand of the seed for one purpose: ``info`` names it, so keys never collide."""
    return HKDFExpand(hashes.SHA256(), length, info).derive(seed)


def _tag(seed: bytes, body: bytes) -> bytes:
    return hmac.new(derive(seed, b"keyfab puf helper-data mac"), body, "sha256").digest()


def enrol(reference: Bits) -> tuple[HelperData, bytes]:
    """Helper data and seed for a reference read (ideally a majority of several reads)."""
    cells = check_cells(reference.size)
    selection = select_pairs(reference)
    response = _response(reference, selection)
    codeword = _encode(secrets.token_bytes(MESSAGE_BYTES))
    offset = np.packbits(response ^ codeword).tobytes()
    unsigned = HelperData(cells, np.packbits(selection).tobytes(), offset, b"")
    seed = _seed(response, unsigned.body)
    helper = HelperData(cells, unsigned.selection, offset, _tag(seed, unsigned.body))
    return helper, seed


def reconstruct(read: Bits, helper: HelperData) -> bytes:
    """The enrolment's seed from a fresh read, or PufReconstructionError.

    The tag is checked before the seed is returned; whatever went wrong, the
    caller sees the same error and nothing derived from a wrong seed.
    """
    if read.size != helper.cells:
        raise HelperDataError(f"PUF read has {read.size} cells, the helper data {helper.cells}")
    selection = np.unpackbits(np.frombuffer(helper.selection, np.uint8))
    offset = np.unpackbits(np.frombuffer(helper.offset, np.uint8))
    noisy = _response(read, selection) ^ offset
    codeword = _decode(noisy)
    # A failed decoding still runs the derivation and the tag (on the raw
    # response), so it answers like a wrong tag, in time as in words.
    seed = _seed((noisy if codeword is None else codeword) ^ offset, helper.body)
    matches = hmac.compare_digest(_tag(seed, helper.body), helper.tag)
    if codeword is None or not matches:
        raise PufReconstructionError()
    return seed
