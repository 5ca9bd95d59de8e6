"""A small ext4 file system with blocks reserved for root, loop-mounted for a test.

``mkfs.ext4 -m PERCENT`` keeps that share of the blocks for root: ``statvfs``
then reports ``f_bfree`` (all free blocks) well above ``f_bavail`` (what an
unprivileged writer may use), which is what the daemon's space checks must
go by.  Mounting needs root and loop devices; without them the test is skipped.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

MiB = 1 << 20


@dataclass(frozen=True)
class Mounted:
    path: Path

    def bavail(self) -> int:
        fs = os.statvfs(self.path)
        return fs.f_bavail * fs.f_frsize

    def bfree(self) -> int:
        fs = os.statvfs(self.path)
        return fs.f_bfree * fs.f_frsize


@contextlib.contextmanager
def ext4_with_reserve(directory: Path, size: int = 32 * MiB, reserved_percent: int = 50) -> Iterator[Mounted]:
    """An ext4 of ``size`` bytes with ``reserved_percent`` kept for root, mounted in ``directory``."""
    image = directory / "fs.img"
    mnt = directory / "mnt"
    mnt.mkdir()
    with image.open("wb") as f:
        f.truncate(size)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", str(reserved_percent), str(image)], check=True)
    if subprocess.run(["mount", "-o", "loop", str(image), str(mnt)]).returncode != 0:
        pytest.skip("cannot loop-mount an ext4 image here")
    try:
        yield Mounted(mnt)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
