"""What list-vms shows of a VM, as JSON, and the preflight rule about inaccessible datastores."""

from __future__ import annotations

import json

import pytest

from vm2kvmd.core.vsphere.summary import (
    DiskSummary,
    NicSummary,
    VmSummary,
    require_accessible_datastores,
)
from vm2kvmd.errors import ErrorCode, Vm2kvmError


def _vm(*disks: DiskSummary) -> VmSummary:
    return VmSummary(
        name="web01",
        moid="vm-42",
        power_state="poweredOff",
        guest_os="debian10_64Guest",
        guest_os_name="Debian GNU/Linux 10 (64-bit)",
        cpus=2,
        memory_mib=2048,
        disks=disks,
        nics=(NicSummary("Network adapter 1", "00:50:56:01:02:03", "VM Network"),),
        snapshot_count=2,
        cbt=True,
        tools_state="guestToolsNotRunning",
    )


DISK = DiskSummary("Hard disk 1", 16 << 30, "ds1", "[ds1] web01/web01.vmdk", thin=True)


def test_json_round_trips_through_text() -> None:
    data = json.loads(json.dumps(_vm(DISK).to_json()))
    assert data == {
        "name": "web01",
        "moid": "vm-42",
        "power_state": "poweredOff",
        "guest_os": "debian10_64Guest",
        "guest_os_name": "Debian GNU/Linux 10 (64-bit)",
        "cpus": 2,
        "memory_mib": 2048,
        "disks": [
            {
                "label": "Hard disk 1",
                "capacity_bytes": 16 << 30,
                "datastore": "ds1",
                "file": "[ds1] web01/web01.vmdk",
                "thin": True,
                "datastore_accessible": True,
            }
        ],
        "nics": [{"label": "Network adapter 1", "mac": "00:50:56:01:02:03", "network": "VM Network"}],
        "snapshot_count": 2,
        "cbt": True,
        "tools_state": "guestToolsNotRunning",
    }


def test_inaccessible_datastore_is_named() -> None:
    require_accessible_datastores(_vm(DISK))
    gone = DiskSummary("Hard disk 2", 1 << 30, "nfs-gone", "[nfs-gone] web01/data.vmdk", False, False)
    with pytest.raises(Vm2kvmError) as info:
        require_accessible_datastores(_vm(DISK, gone))
    assert info.value.code is ErrorCode.DATASTORE_INACCESSIBLE
    assert "Hard disk 2" in info.value.message and "'nfs-gone'" in info.value.message
