"""Reading a VM's snapshot database (``.vmsd``) from the host; ``core.vmware.vmsd`` parses it."""

from __future__ import annotations

import os
import stat

from vm2kvmd.core.vmware.vmsd import (
    MAX_VMSD_BYTES,
    SnapshotTree,
    broken_vmsd,
    parse_vmsd,
    vmsd_path_for,
    with_memory,
)
from vm2kvmd.errors import ErrorCode, Vm2kvmError

__all__ = ["load_snapshot_tree", "read_vmsd"]


def read_vmsd(path: str) -> SnapshotTree:
    """Read and parse the ``.vmsd`` at ``path``.

    Raises ``Vm2kvmError``: SOURCE_NOT_FOUND when it is missing or unreadable,
    INVALID_SOURCE when it is not a regular file or too large, and what
    ``parse_vmsd`` raises.
    """
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            # A FIFO would block the daemon forever.
            raise broken_vmsd(path, None, None, "the snapshot database is not a regular file")
        if info.st_size > MAX_VMSD_BYTES:
            raise broken_vmsd(
                path, None, None, f"the snapshot database is {info.st_size} bytes; that is no .vmsd"
            )
        with open(path, "rb") as handle:
            data = handle.read(MAX_VMSD_BYTES + 1)
    except OSError as err:
        raise Vm2kvmError(
            ErrorCode.SOURCE_NOT_FOUND,
            f"cannot read the snapshot database: {err.strerror or err}",
            file=path,
            hint="check the file's permissions",
        ) from None
    return parse_vmsd(data, path)


def _file_size(path: str) -> int | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def load_snapshot_tree(vmx_path: str) -> SnapshotTree | None:
    """The snapshot tree of the VM at ``vmx_path``; None when it has no ``.vmsd``."""
    path = vmsd_path_for(vmx_path)
    if not os.path.lexists(path):
        return None
    return with_memory(read_vmsd(path), _file_size)
