"""What ``vm2kvmctl list-vms`` shows of each VM on an ESXi host or vCenter, as plain values.

The session adapter (``vm2kvmd.adapters.vsphere``) fills these from one property collector
read; here they are frozen values with their JSON form and the preflight rule about datastores.
"""

from __future__ import annotations

from dataclasses import dataclass

from vm2kvmd.errors import ErrorCode, Vm2kvmError


@dataclass(frozen=True)
class DiskSummary:
    label: str  # "Hard disk 1", as the vSphere client shows it
    capacity_bytes: int
    datastore: str | None  # None: not on a datastore (an RDM's mapping file still names one)
    file: str  # "[LocalDS_0] vm/vm.vmdk"
    thin: bool | None  # None: the backing has no such notion (RDM, sparse)
    datastore_accessible: bool = True

    def to_json(self) -> dict[str, object]:
        return {
            "label": self.label,
            "capacity_bytes": self.capacity_bytes,
            "datastore": self.datastore,
            "file": self.file,
            "thin": self.thin,
            "datastore_accessible": self.datastore_accessible,
        }


@dataclass(frozen=True)
class NicSummary:
    label: str  # "Network adapter 1"
    mac: str | None
    network: str | None  # the port group / network name (None: not connected to one we know)

    def to_json(self) -> dict[str, object]:
        return {"label": self.label, "mac": self.mac, "network": self.network}


@dataclass(frozen=True)
class VmSummary:
    name: str
    moid: str  # the managed object id ("vm-42"), also accepted by --vm
    power_state: str  # poweredOn, poweredOff, suspended
    guest_os: str | None  # guestId as configured ("debian10_64Guest")
    guest_os_name: str | None  # its full name ("Debian GNU/Linux 10 (64-bit)")
    cpus: int
    memory_mib: int
    disks: tuple[DiskSummary, ...]
    nics: tuple[NicSummary, ...]
    snapshot_count: int
    cbt: bool  # changed block tracking enabled
    tools_state: str | None  # guest.toolsRunningStatus ("guestToolsRunning", ...)

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "moid": self.moid,
            "power_state": self.power_state,
            "guest_os": self.guest_os,
            "guest_os_name": self.guest_os_name,
            "cpus": self.cpus,
            "memory_mib": self.memory_mib,
            "disks": [d.to_json() for d in self.disks],
            "nics": [n.to_json() for n in self.nics],
            "snapshot_count": self.snapshot_count,
            "cbt": self.cbt,
            "tools_state": self.tools_state,
        }


def require_accessible_datastores(vm: VmSummary) -> None:
    """Refuse a VM whose disks sit on a datastore vSphere reports inaccessible (preflight)."""
    for disk in vm.disks:
        if not disk.datastore_accessible:
            raise Vm2kvmError(
                ErrorCode.DATASTORE_INACCESSIBLE,
                f"VM {vm.name!r}: {disk.label} ({disk.file}) is on datastore {disk.datastore!r}, "
                "which the host reports inaccessible",
                hint="reconnect or remount the datastore in vSphere, then try again",
            )
