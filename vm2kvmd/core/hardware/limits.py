"""VMware's maxima of devices per VM, and the refusal of a source that has more.

A VMware VM never has more than these (VMware "Configuration Maximums",
Virtual Machine Maximums, vSphere 4.0 to 8.0; hardware versions as noted):

* virtual NICs: 10 (``ethernet0`` to ``ethernet9``) in every release;
* SCSI: 4 adapters, 15 targets each (unit 7 is the adapter itself), 64 from
  hardware version 13 (vSphere 6.5; "super wide" PVSCSI);
* SATA: 4 adapters, 30 devices each (hardware version 10, vSphere 5.5, on);
* IDE: 1 controller with 2 channels, 4 devices;
* NVMe: 4 adapters (hardware version 13 on), 15 targets each until vSphere
  7.0, 64 in vSphere 8.0;
* so at most 4 x 64 SCSI + 4 x 30 SATA + 4 IDE + 4 x 64 NVMe disks.

The per-bus numbers are ``core.vmware.vmx_storage.bus_rules`` (shared by the
VMX, OVF and vSphere readers).  A source beyond them is not a VM VMware can
run: a hand-edited or generated file, or the wrong file.  It is refused with
``HardwareLimit`` naming the key, instead of a domain with thousands of
devices or, worse, one that silently lacks a disk.
"""

from __future__ import annotations

from vm2kvmd.errors import ErrorCode, Vm2kvmError

__all__ = ["MAX_NICS", "beyond_vmware"]

MAX_NICS = 10


def beyond_vmware(what: str, key: str, maximum: str) -> Vm2kvmError:
    """The refusal of ``what`` (at ``key``) beyond VMware's ``maximum`` ("10 NICs (ethernet0-9)")."""
    return Vm2kvmError(
        ErrorCode.HARDWARE_LIMIT,
        f"{what}: a VMware VM has at most {maximum}",
        key=key,
        hint="no VMware VM has this; check that the file is the VM's own configuration, "
        "or remove the device in VMware first",
    )
