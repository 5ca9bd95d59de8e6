"""The migration pipeline: the pure core driven through the libvirt and qemu-img adapters.

``inspect_source`` (blocking) reads and plans; ``preflight`` (blocking) runs
every check that needs no copy; ``run_migration`` (async) does the whole job
(``pipeline.engine``, with the disk strategy ``--snapshots`` asks for:
``pipeline.strategies``), with optional ``BeforeCopy`` hooks on the disks' overlays.
The D-Bus service and the demo call only these.
"""

from __future__ import annotations

from vm2kvmd.pipeline.engine import (
    PHASES,
    BeforeCopy,
    DiskProgress,
    JobEvents,
    MigrationResult,
    preflight,
    run_migration,
)
from vm2kvmd.pipeline.planning import PLACEHOLDER_DIR, InspectResult, inspect_source

__all__ = [
    "PHASES",
    "PLACEHOLDER_DIR",
    "BeforeCopy",
    "DiskProgress",
    "InspectResult",
    "JobEvents",
    "MigrationResult",
    "inspect_source",
    "preflight",
    "run_migration",
]
