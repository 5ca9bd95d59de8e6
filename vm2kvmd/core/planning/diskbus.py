"""The ``disk-bus`` option: the bus the caller wants the disks on, checked against the guest's drivers.

Without it the conversion picks the best bus the guest drives (virtio-blk,
else virtio-scsi, else SATA, IDE for the oldest guests).  With it the disks
go on that bus or the job stops with ``DiskBusUnsupported`` before anything
is created: a guest without the driver would not boot from them, and a job
that quietly picked another bus would not be what the caller asked for
(leaving the option out is how to say "the best there is").
"""

from __future__ import annotations

from collections.abc import Mapping

from vm2kvmd.errors import ErrorCode, Vm2kvmError

# Option value -> ``GuestCaps.disk_bus`` ("scsi" there is virtio-scsi: a virtio-scsi controller).
DISK_BUSES: Mapping[str, str] = {"virtio": "virtio", "virtio-scsi": "scsi", "sata": "sata"}


def caps_bus(option: str) -> str:
    """The ``GuestCaps.disk_bus`` for an option value (``validate`` has checked it)."""
    return DISK_BUSES[option]


def unsupported_bus(option: str, why: str, hint: str) -> Vm2kvmError:
    """The refusal of ``option``; ``why`` names the driver the guest lacks."""
    return Vm2kvmError(
        ErrorCode.DISK_BUS_UNSUPPORTED,
        f"the disks cannot go on {option}: {why}",
        key="disk-bus",
        value=option,
        hint=f"{hint}, or leave --disk-bus out to let the conversion pick the best bus the guest drives",
    )
