"""Tamper and perimeter sensors, and the thread that watches them.

The seam is ``Sensor.tampered() -> bool``. Three kinds:

* ``GpioSensor``: one line of a Linux GPIO character device (``/dev/gpiochipN``),
  requested as an input with GPIO_V2_GET_LINE_IOCTL and read with
  GPIO_V2_LINE_GET_VALUES_IOCTL (uAPI v2, ``linux/gpio.h``). Real lines need
  hardware: tests check the structures and ioctl numbers, and run the calls
  against a recording ioctl.
* ``FileSensor``: a file or sysfs value (``/sys/class/gpio/gpio17/value``, a
  case switch exposed by a driver); tampered when it reads ``triggered``.
* ``TestSensor``: set from code, for tests and demonstrations.

``Watch`` polls a sensor and calls ``on_event`` once per transition to
tampered (a latched line does not fire again until it clears).
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from keyfab.agent.policy import SensorConfig
from keyfab.errors import ConfigError

log = logging.getLogger("keyfab.agent")

# linux/gpio.h, uAPI v2
GPIO_V2_LINES_MAX = 64
GPIO_MAX_NAME_SIZE = 32
GPIO_V2_LINE_NUM_ATTRS_MAX = 10
GPIO_V2_LINE_FLAG_ACTIVE_LOW = 1 << 1
GPIO_V2_LINE_FLAG_INPUT = 1 << 2
# struct gpio_v2_line_config: flags u64, num_attrs u32, padding u32[5],
#   attrs[10] of {attr {id u32, padding u32, value u64}, mask u64}
LINE_CONFIG = struct.Struct("=QI5I" + "IIQQ" * GPIO_V2_LINE_NUM_ATTRS_MAX)
# struct gpio_v2_line_request: offsets u32[64], consumer char[32], config,
#   num_lines u32, event_buffer_size u32, padding u32[5], fd s32
LINE_REQUEST = struct.Struct(f"={GPIO_V2_LINES_MAX}I{GPIO_MAX_NAME_SIZE}s{LINE_CONFIG.size}sII5Ii")
LINE_VALUES = struct.Struct("=QQ")  # struct gpio_v2_line_values: bits, mask


def _iowr(kind: int, number: int, size: int) -> int:
    """_IOWR(kind, number, size) as asm-generic/ioctl.h builds it."""
    return (3 << 30) | (size << 16) | (kind << 8) | number


GPIO_V2_GET_LINE_IOCTL = _iowr(0xB4, 0x07, LINE_REQUEST.size)
GPIO_V2_LINE_GET_VALUES_IOCTL = _iowr(0xB4, 0x0E, LINE_VALUES.size)
Ioctl = Callable[[int, int, bytearray], object]


class Sensor(Protocol):
    name: str

    def tampered(self) -> bool: ...

    def close(self) -> None: ...


def line_request(line: int, consumer: str, *, active_low: bool) -> bytearray:
    """A gpio_v2_line_request for one input line."""
    flags = GPIO_V2_LINE_FLAG_INPUT | (GPIO_V2_LINE_FLAG_ACTIVE_LOW if active_low else 0)
    config = LINE_CONFIG.pack(flags, 0, *[0] * 5, *[0] * 4 * GPIO_V2_LINE_NUM_ATTRS_MAX)
    offsets = [line] + [0] * (GPIO_V2_LINES_MAX - 1)
    name = consumer.encode()[: GPIO_MAX_NAME_SIZE - 1]
    return bytearray(LINE_REQUEST.pack(*offsets, name, config, 1, 0, *[0] * 5, -1))


class GpioSensor:
    """One GPIO line, held open as an input for the agent's lifetime."""

    def __init__(
        self,
        name: str,
        chip: Path,
        line: int,
        *,
        active_low: bool = False,
        ioctl: Ioctl = fcntl.ioctl,
    ):
        self.name = name
        self._ioctl = ioctl
        request = line_request(line, "keyfab-agent", active_low=active_low)
        chip_fd = os.open(chip, os.O_RDONLY | os.O_CLOEXEC)
        try:
            ioctl(chip_fd, GPIO_V2_GET_LINE_IOCTL, request)
        except OSError as error:
            raise ConfigError(
                f"tamper sensor {name}: cannot request {chip} line {line}: {error.strerror}"
            ) from None
        finally:
            os.close(chip_fd)
        self._fd: int = LINE_REQUEST.unpack(request)[-1]

    def tampered(self) -> bool:
        values = bytearray(LINE_VALUES.pack(0, 1))
        self._ioctl(self._fd, GPIO_V2_LINE_GET_VALUES_IOCTL, values)
        bits, _ = LINE_VALUES.unpack(values)
        return bool(bits & 1)  # active_low is applied by the kernel

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class FileSensor:
    """A file or sysfs attribute; tampered while it reads ``triggered`` (stripped)."""

    def __init__(self, name: str, path: Path, triggered: str = "1"):
        self.name = name
        self.path = path
        self.triggered = triggered

    def tampered(self) -> bool:
        try:
            with self.path.open("rb") as source:
                value = source.read(64)
        except FileNotFoundError:
            return False
        return value.strip().decode(errors="replace") == self.triggered

    def close(self) -> None:
        pass


class TestSensor:
    """A sensor set from code."""

    __test__ = False  # not a pytest class

    def __init__(self, name: str):
        self.name = name
        self.state = False
        self.changed = threading.Event()

    def trigger(self, value: bool = True) -> None:
        self.state = value
        self.changed.set()

    def tampered(self) -> bool:
        return self.state

    def close(self) -> None:
        pass


def open_sensor(config: SensorConfig) -> Sensor:
    if config.kind == "test":
        return TestSensor(config.name)
    if config.path is None:
        raise ConfigError(f"tamper sensor {config.name}: give path")
    if config.kind == "gpio":
        return GpioSensor(config.name, config.path, config.line, active_low=config.active_low)
    return FileSensor(config.name, config.path, config.triggered)


class Watch:
    """A thread polling one sensor; ``on_event(sensor)`` once per transition to tampered."""

    def __init__(self, sensor: Sensor, poll_seconds: float, on_event: Callable[[Sensor], None]):
        self.sensor = sensor
        self.poll = poll_seconds
        self.on_event = on_event
        self.polls = 0  # how many readings so far (tests wait on it, not on time)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"tamper-{sensor.name}", daemon=True)

    def start(self) -> Watch:
        self._thread.start()
        return self

    def _wait(self) -> None:
        if isinstance(self.sensor, TestSensor):  # woken by trigger(), no polling delay
            self.sensor.changed.wait(self.poll)
            self.sensor.changed.clear()
        else:
            self._stop.wait(self.poll)

    def _run(self) -> None:
        was = False
        while not self._stop.is_set():
            try:
                now = self.sensor.tampered()
            except OSError as error:
                log.error("tamper sensor %s unreadable: %s", self.sensor.name, error)
                now = was
            if now and not was:
                try:
                    self.on_event(self.sensor)
                except Exception:  # the watch outlives one failed response
                    log.exception("tamper response for %s failed", self.sensor.name)
            was = now
            self.polls += 1
            self._wait()

    def stop(self) -> None:
        self._stop.set()
        if isinstance(self.sensor, TestSensor):
            self.sensor.changed.set()
        self._thread.join(timeout=5)
        self.sensor.close()
