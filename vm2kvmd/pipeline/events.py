"""How a migration reports to its job: phases, disks, per-disk progress in bytes, log lines."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

# "convert" only when the guest is converted; "verify" only with MigrateOptions.verify;
# "cleanup" only when rolling back.
PHASES = ("inspect", "prepare", "convert", "copy", "verify", "define", "cleanup")


@dataclass(frozen=True)
class DiskProgress:
    """A disk announced before copying."""

    key: str  # the source device, "scsi0:0"
    target: str  # the volume path / file written
    total: int  # bytes the copy will write (see pipeline.copy)


class JobEvents(Protocol):
    """How a migration reports; called from the event loop, never from a thread."""

    def phase(self, name: str) -> None: ...  # one of PHASES; "cleanup" only when rolling back
    def disks(self, items: Sequence[DiskProgress]) -> None: ...
    def disk_progress(self, index: int, done: int, total: int) -> None: ...  # any order across disks
    def log(self, message: str) -> None: ...
