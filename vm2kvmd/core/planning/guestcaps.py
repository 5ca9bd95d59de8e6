"""What the converted guest can drive, decided before the domain XML is written.

The skeleton uses ``GuestCaps.unconverted()``: devices every x86 OS of the last
twenty years has drivers for, so a guest that was copied but not converted
still boots.  Guest conversion (libguestfs) replaces it with what it found.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GuestCaps:
    machine: str = "q35"  # q35 or pc (i440fx, for guests without AHCI)
    disk_bus: str = "sata"  # virtio, scsi (virtio-scsi), sata, ide
    cdrom_bus: str = "sata"  # sata or ide
    nic_model: str = "e1000"  # virtio, e1000, e1000e, rtl8139
    video: str = "vga"  # vga, virtio, qxl, cirrus
    virtio_rng: bool = False
    balloon: bool = False
    guest_agent: bool = False
    reason: str = "guest not converted: devices every x86 OS has drivers for"
    # The OS inspection found, as a libosinfo id (core/planning/osinfo.py); None: VMware's guestOS decides.
    os_id: str | None = None
    # Windows (issue 13): Hyper-V enlightenments the guest uses ("" none, "basic" Vista/2008:
    # relaxed, vapic, spinlocks; "full" 7/2008 R2 and later: also the synthetic timers and
    # clock), and the RTC as the guest reads it (None: from the source's guest OS type).
    hyperv: str = ""
    clock_offset: str | None = None  # utc or localtime

    @classmethod
    def unconverted(cls) -> GuestCaps:
        return cls()
