"""Driving Debian's U-Boot (qemu_arm64 build) in QEMU over its serial console.

No pexpect: QEMU's stdio is the serial port; we read its stdout with select()
until a pattern appears or a deadline passes, and write commands to its stdin.
"""

from __future__ import annotations

import os
import select
import subprocess
import time
from pathlib import Path

UBOOT_BIN = Path("/usr/lib/u-boot/qemu_arm64/u-boot.bin")
MACHINE = ["-machine", "virt", "-cpu", "cortex-a57", "-m", "1024", "-nographic", "-net", "none"]
PROMPT = "=> "


def dump_machine_dtb(path: Path) -> None:
    """QEMU's own device tree for this machine: the base of the control DTB."""
    args = ["qemu-system-aarch64", *MACHINE]
    args[2] = f"virt,dumpdtb={path}"
    subprocess.run(args, check=True, capture_output=True, timeout=30)


class UBoot:
    """One QEMU process with U-Boot, FIT images preloaded at given addresses."""

    def __init__(self, control: Path, images: dict[int, Path]) -> None:
        args = ["qemu-system-aarch64", *MACHINE, "-bios", str(UBOOT_BIN), "-dtb", str(control)]
        for address, image in images.items():
            args += ["-device", f"loader,file={image},addr=0x{address:x},force-raw=on"]
        self.process = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self.log = ""
        self.position = 0
        """How much of ``log`` earlier reads consumed."""

    def read_until(self, *patterns: str, timeout: float = 60) -> str:
        """Everything read up to and including the first pattern; raises on the deadline."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while True:
            text = self.log[self.position :]
            found = [(text.index(p) + len(p)) for p in patterns if p in text]
            if found:
                end = min(found)
                self.position += end
                return text[:end]
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.process.poll() is not None:
                raise TimeoutError(f"U-Boot never printed {patterns}; got: {text[-2000:]!r}")
            ready, _, _ = select.select([fd], [], [], min(remaining, 1.0))
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise TimeoutError(f"QEMU exited; output: {text[-2000:]!r}")
                self.log += chunk.decode("utf-8", "replace").replace("\r", "")

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def stop_autoboot(self) -> None:
        self.read_until("Hit any key to stop autoboot")
        self.send("")
        self.read_until(PROMPT)

    def run(self, command: str, *until: str, timeout: float = 60) -> str:
        """Send a command and return its output up to one of ``until`` (default: prompt)."""
        self.send(command)
        return self.read_until(*(until or (PROMPT,)), timeout=timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
