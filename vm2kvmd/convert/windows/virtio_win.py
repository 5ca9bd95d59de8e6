"""The virtio-win tree on the host: its listing and file contents (``core.guest.windows.virtio_win`` picks).

A directory (the RPM's ``/usr/share/virtio-win``, or an ISO's contents
extracted with ``bsdtar -xf virtio-win.iso -C DIR`` or ``7z x``) is read
directly.  A missing tree is not an error: the guest then keeps emulated
devices, with notes.  An ISO file is refused with the command that unpacks
it, rather than mounting it (no loop devices in the daemon's sandbox).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from vm2kvmd.errors import ErrorCode, Vm2kvmError


@dataclass(frozen=True)
class VirtioWinTree:
    root: Path | None  # None: no tree at that path
    files: tuple[str, ...]  # relative POSIX paths

    def read(self, relative: str) -> bytes:
        assert self.root is not None
        return (self.root / relative).read_bytes()


def open_virtio_win(path: str) -> VirtioWinTree:
    root = Path(path)
    if root.is_file():
        raise Vm2kvmError(
            ErrorCode.INVALID_OPTION,
            f"{path} is a file; virtio-win is read from a directory",
            file=path,
            key="virtio-win",
            hint=f"unpack the ISO (bsdtar -xf {path} -C /srv/virtio-win) and pass that directory",
        )
    if not root.is_dir():
        return VirtioWinTree(None, ())
    files: list[str] = []
    for directory, _dirs, names in os.walk(root, followlinks=True):
        base = Path(directory).relative_to(root)
        files.extend((base / name).as_posix() for name in names)
    return VirtioWinTree(root, tuple(sorted(files)))
