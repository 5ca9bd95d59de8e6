"""An NSX NIC with an all-zero static MAC through the whole product (issue 12).

NSX writes ``ethernetN.address = "00:00:00:00:00:00"`` and assigns the MAC at
power-on; vm2kvm used to refuse such a VMX.  Now Inspect shows the fresh MAC and
a note, and Migrate gives the guest that same MAC.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from tests.e2e.support import DaemonProcess, VmxDisk, ctl, write_vmx
from tests.helpers.vmdk_factory import make_vmdk

pytestmark = pytest.mark.libvirt

NSX_NIC = """\
ethernet0.present = "TRUE"
ethernet0.virtualDev = "vmxnet3"
ethernet0.opaqueNetwork.id = "5d9f1a9c-0b6e-4c1d-9a43-7e2f61d5b0a8"
ethernet0.opaqueNetwork.type = "nsx.LogicalSwitch"
ethernet0.addressType = "static"
ethernet0.address = "00:00:00:00:00:00"
ethernet0.pciSlotNumber = "192"
"""


def test_inspect_and_migrate_give_the_same_fresh_mac(daemon: DaemonProcess, tmp_path: Path) -> None:
    vmdir = tmp_path / "vm"
    vmdir.mkdir()
    disk = make_vmdk(vmdir, "disk", "monolithicSparse", 8 << 20)
    vmx = write_vmx(vmdir, "web-nsx", [VmxDisk("scsi0:0", disk.name)], nics=(), extra=NSX_NIC)

    text = ctl(daemon.address, "inspect", str(vmx))
    assert text.status == 0, text.err
    assert "NSX assigns it at power-on" in text.out

    found = ctl(daemon.address, "inspect", str(vmx), "--json")
    assert found.status == 0, found.err
    (nic,) = found.json()["nics"]
    mac = nic["target"]["mac"]
    assert nic["mac"] == "00:00:00:00:00:00" and mac.startswith("52:54:00:")
    assert any(mac in note and "DHCP reservations" in note for note in found.json()["notes"])

    out = tmp_path / "out"
    out.mkdir()
    run = ctl(daemon.address, "migrate", str(vmx), "--output-dir", str(out), "--name", "web-nsx")
    assert run.status == 0, run.err
    xml = etree.parse(str(out / "web-nsx.xml")).getroot()
    assert xml.xpath("/domain/devices/interface/mac/@address") == [mac]
