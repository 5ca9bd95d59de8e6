"""What every Windows conversion step gets: the mounted guest, its WindowsInfo, and a log of edits.

Registry edits go through the appliance's hivex API on the guest's own hive
files (``hivex_commit`` writes them in place, in the overlay); ``set_values``
creates missing keys with their parents and sets values, leaving every other
value of the key as it was.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from vm2kvmd.adapters.guestfs_api import GuestFS
from vm2kvmd.core.guest.info import Change
from vm2kvmd.core.guest.windows.info import WindowsInfo
from vm2kvmd.core.guest.windows.registry import RegKey
from vm2kvmd.core.hardware.model import Note, SourceVM
from vm2kvmd.core.planning.guestcaps import GuestCaps

HIVES = {"SYSTEM": "System32/config/SYSTEM", "SOFTWARE": "System32/config/SOFTWARE"}


@dataclass(frozen=True)
class WindowsOptions:
    virtio_win: str  # virtio-win.iso or a directory (--virtio-win, $VIRTIO_WIN, /usr/share/virtio-win)
    disk_bus: str | None = None  # the disk-bus option (core.planning.diskbus); None: the best there is
    install_guest_agent: bool = True  # the qemu-ga MSI, when virtio-win has one


@dataclass
class WindowsContext:
    g: GuestFS
    info: WindowsInfo
    vm: SourceVM
    options: WindowsOptions
    log: Callable[[str], None] = print
    caps: GuestCaps = field(default_factory=GuestCaps.unconverted)
    changes: list[Change] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)

    def change(self, area: str, summary: str, path: str | None = None) -> None:
        self.changes.append(Change(area, summary, path))
        self.log(f"{area}: {summary}")

    def note(self, message: str, key: str | None = None) -> None:
        self.notes.append(Note(message, key))
        self.log(f"note: {message}")

    # --- paths -----------------------------------------------------------------------

    def path(self, relative: str) -> str:
        """``relative`` under the Windows directory, in the case the guest's files really have.

        Components that do not exist yet keep the case given (libguestfs'
        ``case_sensitive_path`` fails when more than the last one is missing).
        """
        current = self.g.case_sensitive_path(self.info.systemroot)
        parts = [p for p in relative.split("/") if p]
        for i, part in enumerate(parts):
            current = self.g.case_sensitive_path(posixpath.join(current, part))
            if not self.g.exists(current):
                return posixpath.join(current, *parts[i + 1 :])
        return current

    def write_file(self, relative: str, content: bytes) -> str:
        """Write ``content`` under the Windows directory (parents created); returns the path."""
        path = self.path(relative)
        self.g.mkdir_p(posixpath.dirname(path))
        self.g.write(path, content)
        return path

    # --- the registry ----------------------------------------------------------------

    def set_values(self, keys: Iterable[RegKey]) -> None:
        """Apply ``keys`` to the guest's hives, each hive opened and committed once."""
        by_hive: dict[str, list[RegKey]] = {}
        for key in keys:
            by_hive.setdefault(key.hive, []).append(key)
        for hive, hive_keys in by_hive.items():
            self.g.hivex_open(self.path(HIVES[hive]), write=True)
            try:
                for key in hive_keys:
                    node = self.g.hivex_root()
                    for part in key.path:
                        child = self.g.hivex_node_get_child(node, part)
                        node = child if child else self.g.hivex_node_add_child(node, part)
                    for value in key.values:
                        self.g.hivex_node_set_value(node, value.name, int(value.type), value.data)
                self.g.hivex_commit(None)
            finally:
                self.g.hivex_close()

    def read_value(self, hive: str, path: Iterable[str], name: str) -> tuple[int, bytes] | None:
        """(type, data) of one value, None when the key or the value is absent."""
        self.g.hivex_open(self.path(HIVES[hive]), write=False)
        try:
            node = self.g.hivex_root()
            for part in path:
                node = self.g.hivex_node_get_child(node, part)
                if not node:
                    return None
            value = self.g.hivex_node_get_value(node, name)
            if not value:
                return None
            return self.g.hivex_value_type(value), self.g.hivex_value_value(value)
        finally:
            self.g.hivex_close()
