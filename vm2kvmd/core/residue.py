"""What a migration created, as data: written to the job store before it is created.

Pure (no libvirt, no pipeline): the job store imports it, and the daemon must
start without loading the pipeline.  Undoing a residue is
``pipeline.rollback.remove_residue``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["RESIDUE_KINDS", "Residue", "ResidueRecorder"]

RESIDUE_KINDS = ("volume", "file", "directory", "tree", "domain")


@dataclass(frozen=True)
class Residue:
    """Something a migration created, described well enough to remove it from another process."""

    kind: str  # "volume" | "file" | "directory" | "tree" | "domain"
    path: str = ""  # volume/file/directory/tree path
    pool: str = ""  # volume: its pool
    name: str = ""  # volume name or domain name
    uri: str = ""  # libvirt URI (volume, domain)
    # domain: the UUID we defined it with.  A domain of that name with another UUID was
    # defined by someone else after us (the name was free when we checked): left alone.
    uuid: str = ""

    def describe(self) -> str:
        """What the log lines call it: "volume x in pool y", "file /srv/out/vm.xml"."""
        if self.kind == "volume":
            return f"volume {self.name} in pool {self.pool}"
        if self.kind == "domain":
            return f"domain {self.name}"
        if self.kind == "tree":
            return f"directory tree {self.path}"
        return f"{self.kind} {self.path}"


class ResidueRecorder(Protocol):
    """Where residues are written down (the job store); thread-safe, called from worker threads."""

    def record(self, residue: Residue) -> int: ...  # persisted BEFORE the thing is created; its id
    def forget(self, rid: int) -> None: ...  # it was removed, or creating it failed
    def forget_all(self) -> None: ...  # the job ended cleanly (success, or rollback done)
