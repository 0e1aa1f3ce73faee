"""Where start-up patterns come from: dump files of real SRAM, or a statistical model.

Both give one power-up's pattern per :meth:`read`, as one bit per cell. The
dump format is the plainest there is: one file per power-up, the raw bytes of
the SRAM region as read before anything wrote it, cell ``i`` being bit
``7 - i % 8`` of byte ``i // 8`` (most significant bit first), every file of a
device exactly ``cells / 8`` bytes. Files are used in name order.

The model (after Maes, "An accurate probabilistic reliability model for
silicon PUFs", CHES 2013): cell ``i`` has a process-variation value ``m_i``
(standard normal, shifted by the bias), and powers up as 1 when ``m_i`` plus
per-read Gaussian noise is positive. With noise of standard deviation
``tan(pi * ber)`` the mean probability that a read differs from a cell's
preferred value is exactly ``ber``. Temperature and ageing move every cell's
value along its own random direction, so a chip read far from the conditions
it was enrolled in drifts away from its enrolment.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from pathlib import Path
from statistics import NormalDist
from typing import Protocol

import numpy as np

from keyfab import securefile
from keyfab.errors import ConfigError, RotError
from keyfab.rot.puf.extractor import Bits, check_cells

REFERENCE_TEMPERATURE = 25.0
THERMAL_DRIFT = 0.01
"""Drift per degree from 25 °C, in units of the process variation's spread."""
AGEING_DRIFT = 0.15
"""Drift after one year, same units; it grows with the square root of the age."""
MAX_DUMPS = 4096


class PufSource(Protocol):
    """One device's SRAM PUF: ``cells`` bits per power-up."""

    cells: int

    def read(self, power_up: int) -> Bits:
        """The start-up pattern of power-up number ``power_up`` (counted by the device)."""
        ...


class ModelSource:
    """A simulated chip named ``chip``: the same name is the same silicon.

    ``ber`` is the mean per-read bit error rate against each cell's preferred
    value, ``bias`` the fraction of cells that power up as 1, ``temperature``
    (°C) and ``age`` (years) the conditions of every read.
    """

    def __init__(
        self,
        chip: str,
        cells: int,
        ber: float,
        bias: float = 0.5,
        temperature: float = REFERENCE_TEMPERATURE,
        age: float = 0.0,
    ):
        self.cells = check_cells(cells)
        self._noise = math.tan(math.pi * ber)
        shift = NormalDist().inv_cdf(bias) * math.hypot(1.0, self._noise)
        silicon = np.random.default_rng(
            np.frombuffer(hashlib.sha256(b"keyfab puf chip\0" + chip.encode()).digest(), np.uint32)
        )
        process, thermal, ageing = silicon.standard_normal((3, cells))
        drift = THERMAL_DRIFT * (temperature - REFERENCE_TEMPERATURE)
        self._values = process + shift + drift * thermal + AGEING_DRIFT * math.sqrt(age) * ageing

    def read(self, power_up: int = 0) -> Bits:
        noise = np.random.default_rng(secrets.randbits(128)).standard_normal(self.cells)
        bits: Bits = (self._values + self._noise * noise > 0).astype(np.uint8)
        return bits

    def dump(self) -> bytes:
        """One power-up in the dump file format: simulated devices for the files source."""
        return np.packbits(self.read()).tobytes()


class DumpFiles:
    """Start-up dumps in ``directory``: power-up ``n`` reads its ``n``-th file, wrapping round."""

    def __init__(self, directory: Path, cells: int):
        self.cells = check_cells(cells)
        try:
            found = sorted(p for p in directory.iterdir() if p.suffix == ".bin")
        except OSError as error:
            raise ConfigError(f"PUF dumps {directory}: {error.strerror}") from None
        if not 0 < len(found) <= MAX_DUMPS:
            raise ConfigError(f"PUF dumps {directory}: 1 to {MAX_DUMPS} .bin files needed")
        self._files = found

    def read(self, power_up: int) -> Bits:
        path = self._files[power_up % len(self._files)]
        size = self.cells // 8
        data = securefile.read_bounded(path, size, "PUF dump")
        if len(data) != size:
            raise RotError(f"PUF dump {path} has {len(data)} bytes, expected {size}")
        bits: Bits = np.unpackbits(np.frombuffer(data, np.uint8))
        return bits


def write_dump(path: Path, data: bytes) -> None:
    """Save one power-up's dump (0600: a start-up pattern is the device's secret)."""
    securefile.write_secret(path, data)
