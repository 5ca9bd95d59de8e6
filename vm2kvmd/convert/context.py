"""What every conversion step gets: the mounted guest, what is known about it, and a log of edits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from vm2kvmd.adapters.guestfs_api import GuestFS
from vm2kvmd.core.guest.info import Change, DeviceMap, GuestInfo
from vm2kvmd.core.hardware.model import Note, SourceVM
from vm2kvmd.core.planning.guestcaps import GuestCaps
from vm2kvmd.core.planning.plan import DomainPlan
from vm2kvmd.core.secret import Secret


@dataclass(frozen=True)
class ConversionOptions:
    root: str | None = None  # --root: the inspection root to convert (appliance device), None = first
    install_guest_agent: bool = False  # install qemu-guest-agent at first boot
    virtio_win: str = "/usr/share/virtio-win"  # Windows drivers (core.guest.windows.virtio_win)
    bitlocker_key: Secret | None = None  # --key-file: opens BitLocker volumes (convert.windows.bitlocker)
    scratch_dir: str | None = None  # the job's work area, for files read out of the guest (None: $TMPDIR)
    disk_bus: str | None = None  # the disk-bus option (core.planning.diskbus); None: the best there is


@dataclass
class GuestContext:
    """Mutable on purpose: the steps run one after another and each adds what it did.

    ``plan`` and ``devices`` follow ``caps``: a step that takes virtio away
    (the initramfs could not be given the driver) calls ``set_caps`` and the
    later steps see the new target device names.
    """

    g: GuestFS
    guest: GuestInfo
    vm: SourceVM
    caps: GuestCaps
    replan: Callable[[GuestCaps], DomainPlan]  # the domain plan for a set of caps (pure)
    device_map: Callable[[SourceVM, DomainPlan], DeviceMap]
    options: ConversionOptions = ConversionOptions()
    log: Callable[[str], None] = print
    changes: list[Change] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    _plan: DomainPlan | None = None

    @property
    def plan(self) -> DomainPlan:
        if self._plan is None:
            self._plan = self.replan(self.caps)
        return self._plan

    @property
    def devices(self) -> DeviceMap:
        return self.device_map(self.vm, self.plan)

    def set_caps(self, caps: GuestCaps) -> None:
        self.caps = caps
        self._plan = None

    def change(self, area: str, summary: str, path: str | None = None) -> None:
        self.changes.append(Change(area, summary, path))
        self.log(f"{area}: {summary}")

    def note(self, message: str, key: str | None = None) -> None:
        self.notes.append(Note(message, key) if key else Note(message))
        self.log(f"note: {message}")

    # --- small helpers every step needs ---------------------------------------------

    def read_text(self, path: str) -> str | None:
        """The file's text (undecodable bytes replaced), None when it is not a regular file."""
        if not self.g.is_file(path):
            return None
        return self.g.read_file(path).decode("utf-8", "surrogateescape")

    def write_text(self, path: str, text: str) -> None:
        self.g.write(path, text.encode("utf-8", "surrogateescape"))

    def backup(self, path: str, suffix: str = ".vm2kvm-orig") -> str | None:
        """Keep a copy of ``path`` next to it (once: a second backup keeps the first); returns its name."""
        if not self.g.exists(path):
            return None
        copy = path + suffix
        if not self.g.exists(copy):
            self.g.cp_a(path, copy)
        return copy

    def edit(self, area: str, path: str, new: str, summary: str) -> bool:
        """Write ``new`` to ``path`` if it differs from what is there; records the change."""
        old = self.read_text(path)
        if old == new:
            return False
        self.write_text(path, new)
        self.change(area, summary, path)
        return True
