"""The migration report of a converted Windows guest: its facts, and the Windows changes by area."""

from __future__ import annotations

from pathlib import Path

from tests.core.guest.windows.factory import LAYOUTS
from vm2kvmd.core.guest.info import Change, Conversion, Filesystem, GuestInfo
from vm2kvmd.core.guest.windows.caps import caps_for_windows
from vm2kvmd.core.guest.windows.virtio_win import DriverSelection
from vm2kvmd.core.planning.mapping import plan_domain
from vm2kvmd.core.planning.plan import PlanOptions
from vm2kvmd.core.report import build_report
from vm2kvmd.sources.vmware.vm import load_source_vm

VMX = Path(__file__).resolve().parents[3] / "data" / "vmx" / "esxi-win2019-efi.vmx"


def test_windows_report() -> None:
    vm = load_source_vm(str(VMX))
    info = LAYOUTS["2019"]
    caps, notes = caps_for_windows(info, DriverSelection((), None, ()), source="/nowhere")
    plan = plan_domain(
        vm, PlanOptions(target_dir="/images", new_uuid="00000000-0000-4000-8000-000000000001"), caps
    )
    changes = (
        Change(
            "drivers",
            "viostor registered as a boot-start driver",
            "HKLM\\SYSTEM\\ControlSet001\\Services\\viostor",
        ),
        Change("vmware-tools", "VMTools disabled (Start 2 -> 4)"),
        Change("first-boot", "uninstall VMware Tools: msiexec.exe /x {X} /qn /norestart"),
    )
    guest_info = GuestInfo(
        root="/dev/sda2",
        os_type="windows",
        distro="windows",
        product_name=info.product_name,
        major=10,
        minor=0,
        arch="x86_64",
        mountpoints=(("/", "/dev/sda2"),),
        filesystems=(Filesystem("/dev/sda2", "ntfs"),),
        windows=info,
    )
    conversion = Conversion(caps=caps, guest=guest_info, changes=changes, notes=tuple(notes))
    report = build_report(vm, plan, conversion, [])
    guest = report["guest"]
    assert guest["converted"] is True and guest["status"] == "converted: Windows Server 2019 Standard"
    facts = {f["key"]: f["value"] for f in guest["facts"]}
    assert facts["version"] == "10.0 build 17763"
    assert facts["edition"] == "ServerStandard (Server)"
    assert facts["vmware-tools"] == "VMware Tools"
    assert facts["static-ip"] == "vmxnet3 Ethernet Adapter: 192.168.10.20, 192.168.10.21"
    assert facts["rtc"] == "local time"
    assert guest["filesystems"] == [
        {
            "mountpoint": "/",
            "device": "/dev/sda2",
            "target_device": "/dev/sda2",
            "type": "ntfs",
            "uuid": None,
            "label": None,
        }
    ]
    assert [g["area"] for g in report["changes"]] == ["drivers", "vmware-tools", "first-boot"]
