"""Shared pieces of the OVF hardware readers: item kinds, the note collector, small parsers."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from vm2kvmd.core.hardware.model import Note
from vm2kvmd.core.ovf.envelope import OvfEnvelope, OvfItem, parse_number

# rasd:ResourceType values (DMTF CIM_ResourceAllocationSettingData).
OTHER, CPU, MEMORY, IDE, SCSI, ETHERNET = 1, 3, 4, 5, 6, 10
FLOPPY, CD, DVD, DISK, OTHER_STORAGE = 14, 15, 16, 17, 20
SERIAL, PARALLEL, USB, GRAPHICS, SOUND = 21, 22, 23, 24, 35

PCI_SLOT_KEY = "slotInfo.pciSlotNumber"
# vmw:Config keys with no meaning for the target that need no note either.
_QUIET_KEYS = frozenset(
    {PCI_SLOT_KEY, "connectable.allowGuestControl", "guestReadOnly", "autoConnectDevices", "ehciEnabled"}
)
_MAX_LISTED = 12


@dataclass
class OvfContext:
    """The envelope being read and the notes collected so far."""

    env: OvfEnvelope
    notes: list[Note] = field(default_factory=list)

    @property
    def path(self) -> str:
        return self.env.path

    def note(self, message: str, where: str | None = None) -> None:
        self.notes.append(Note(message, where))

    def number(self, text: str, key: str, maximum: int) -> int:
        return parse_number(text, self.path, key, maximum=maximum)

    def ignored_config(self, item: OvfItem, used: Iterable[str] = ()) -> None:
        """One note listing the item's ``vmw:Config`` settings that were not used."""
        skip = _QUIET_KEYS.union(used)
        rest = [f"{k}={v}" for k, v in item.config.items() if k not in skip]
        if rest:
            self.note("settings not carried over: " + listing(rest), item.label)


def listing(words: list[str]) -> str:
    """``a, b, c and 4 more``: long lists stay one readable note."""
    shown = ", ".join(words[:_MAX_LISTED])
    return shown + (f" and {len(words) - _MAX_LISTED} more" if len(words) > _MAX_LISTED else "")


def parse_bool(value: str | None) -> bool | None:
    """``true``/``false`` as OVF and vmw:Config write them; None when absent or neither."""
    if value is None:
        return None
    word = value.strip().lower()
    return True if word in ("true", "1", "yes") else False if word in ("false", "0", "no") else None


def pci_slot(item: OvfItem) -> int | None:
    slot = item.config.get(PCI_SLOT_KEY, "")
    return int(slot) if slot.isdigit() and len(slot) < 6 else None


def by_type(items: Iterable[OvfItem], *types: int) -> list[OvfItem]:
    return [item for item in items if item.resource_type in types]
