"""Building SourceVM from VMX files: the test VMs in tests/data/vmx, identity, CPU, memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.core.vmware.vmx_support import BASE, DATA, build, from_data, note_text
from vm2kvmd.core.hardware.model import Bus, DeviceAddress, Firmware, MediaKind, PortEndpoint, PortKind
from vm2kvmd.errors import ErrorCode, Vm2kvmError

# --- the test VMs --------------------------------------------------------------------


def test_esxi_rhel55() -> None:
    vm = from_data("esxi-rhel55.vmx")
    assert (vm.display_name, vm.guest_os, vm.hw_version, vm.firmware) == (
        "rhel55-web01",
        "rhel5-64",
        7,
        Firmware.BIOS,
    )
    assert vm.uuid_bios == "420a7e51-c39d-2b6e-a104-5f338d90127c"
    assert vm.vc_uuid == "500a114f-62d8-a30e-975c-2b1de40688a1"
    assert (vm.cpu.vcpus, vm.memory.size_mib) == (2, 2048)
    assert [(c.bus, c.index, c.model, c.pci_slot) for c in vm.controllers] == [
        (Bus.SCSI, 0, "lsilogic", 16),
        (Bus.IDE, 1, None, None),
    ]
    assert [(d.address.key, d.mode) for d in vm.disks] == [
        ("scsi0:0", "persistent"),
        ("scsi0:1", "independent-persistent"),
    ]
    assert vm.disks[0].path == str(DATA / "rhel55-web01.vmdk")
    assert vm.disks[0].problem_code is ErrorCode.DISK_MISSING
    (cdrom,) = vm.cdroms
    assert (cdrom.kind, cdrom.file_name, cdrom.start_connected) == (MediaKind.HOST, "auto detect", False)
    (nic,) = vm.nics
    assert (nic.model, nic.mac, nic.address_type, nic.network_name, nic.pci_slot) == (
        "vmxnet3",
        "00:50:56:8a:3c:17",
        "vpx",
        "VM Network",
        160,
    )
    assert nic.source_network == "VM Network"
    assert vm.floppies == () and vm.video is not None and vm.video.vram_kib == 8192
    assert vm.notes == ()


def test_esxi_winxp() -> None:
    vm = from_data("esxi-winxp-sp3.vmx")
    assert (vm.guest_os, vm.is_64bit, vm.cpu.vcpus, vm.memory.size_mib) == ("winxppro", False, 1, 512)
    assert (vm.memory.reservation_mib, vm.memory.shares) == (128, "low")
    assert vm.controllers[0].model == "buslogic"
    assert vm.nics[0].model == "vlance"  # no virtualDev (the "Flexible" NIC) on a 32-bit guest
    (cdrom,) = vm.cdroms
    assert cdrom.kind is MediaKind.EMPTY  # the vSphere client's drive
    (floppy,) = vm.floppies
    assert (floppy.kind, floppy.missing, floppy.start_connected) == (MediaKind.IMAGE, True, False)
    assert floppy.address == DeviceAddress(Bus.FLOPPY, 0, 0)
    assert vm.sound is None and not vm.usb.present and vm.serials == ()
    notes = note_text(vm)
    assert "numvcpus" in notes and "ethernet0.virtualDev" in notes and "ide0:0.clientDevice" in notes


def test_esxi_win7_32() -> None:
    vm = from_data("esxi-win7-32.vmx")
    assert vm.annotation == "Accounting desktop, Ticket #4411\nOwner: j.miller"
    assert (vm.cpu.vcpus, vm.cpu.cores_per_socket, vm.memory.size_mib) == (2, 2, 3072)
    assert vm.controllers[0].model == "lsisas1068"
    assert [(n.model, n.mac, n.start_connected) for n in vm.nics] == [
        ("e1000", "00:50:56:a1:7d:3b", True),
        ("vmxnet3", "00:50:56:a1:12:c4", False),
    ]
    assert vm.cdroms[0].kind is MediaKind.IMAGE and vm.cdroms[0].missing
    assert vm.vnc is not None and (vm.vnc.port, vm.vnc.keymap, vm.vnc.has_password) == (5942, "de", True)
    assert "s3cret" not in repr(vm)
    assert vm.usb.uhci and vm.usb.ehci and not vm.usb.xhci


def test_esxi_win2019_efi() -> None:
    vm = from_data("esxi-win2019-efi.vmx")
    assert (vm.firmware, vm.secure_boot, vm.hw_version) == (Firmware.EFI, True, 19)
    assert (vm.cpu.vcpus, vm.cpu.cores_per_socket) == (8, 4)
    assert (vm.memory.size_mib, vm.memory.reservation_mib, vm.memory.pinned) == (16384, 16384, True)
    assert vm.genid == "96a75bfa-91a5-58bd-59c7-e6547494ffd8"
    assert [(c.bus, c.model, c.pci_slot) for c in vm.controllers] == [
        (Bus.SCSI, "pvscsi", 160),
        (Bus.SATA, None, 33),
        (Bus.NVME, None, 256),
    ]
    assert [d.address.key for d in vm.disks] == ["scsi0:0", "scsi0:1", "scsi0:8", "scsi0:21", "nvme0:0"]
    assert vm.disks[3].mode == "independent-persistent"
    (dvs, mgmt) = vm.nics
    assert (dvs.network_name, dvs.dvs_port_group) == (None, "dvportgroup-2043")
    assert dvs.dvs_switch == "50 1e 9d 2a 44 c7 0b 91-6f 38 a2 e5 d0 17 4c 83"
    assert (mgmt.model, mgmt.network_name) == ("e1000e", "Mgmt-VLAN10")
    assert vm.video is not None and (vm.video.num_displays, vm.video.autodetect) == (2, False)
    assert vm.cdroms[0].address.key == "sata0:0" and not vm.cdroms[0].start_connected


def test_workstation_sles11() -> None:
    vm = from_data("ws-sles11sp1.vmx")
    assert vm.display_name == "SLES 11 SP1 (build host)"
    assert vm.disks[0].file_name == "SLES11.vmdk"
    assert [(n.connection_type, n.mac, n.source_network) for n in vm.nics] == [
        ("nat", "00:0c:29:5e:a7:41", "nat"),
        ("hostonly", "00:0c:29:5e:a7:4b", "hostonly"),
    ]
    assert vm.sound is not None and vm.sound.model == "es1371"
    assert vm.usb.uhci and vm.usb.ehci
    (serial,) = vm.serials
    assert (serial.kind, serial.target) == (PortKind.FILE, "sles11-console.log")
    (floppy,) = vm.floppies
    assert (floppy.kind, floppy.file_name) == (MediaKind.HOST, "/dev/fd0")
    assert vm.uuid_bios == "564d5ea7-410b-8d23-c944-607f1ae203b6" and vm.vc_uuid is None


def test_player_win2008r2() -> None:
    vm = from_data("player-win2008r2.vmx")
    assert (vm.guest_os, vm.is_64bit, vm.memory.size_mib) == ("windows7srv-64", True, 4096)
    assert vm.controllers[0].model == "lsisas1068"
    assert vm.disks[0].path == str(DATA / "Windows Server 2008 R2 x64.vmdk")
    (nic,) = vm.nics
    assert (nic.model, nic.connection_type, nic.network_name, nic.source_network) == (
        "e1000",
        "bridged",
        None,
        "bridged",
    )
    assert vm.serials[0].kind is PortKind.THINPRINT
    assert vm.cdroms[0].path == str(
        DATA / "en_windows_server_2008_r2_standard_enterprise_datacenter_web_x64_dvd.iso"
    )
    assert "Windows path" in note_text(vm)


def test_fusion_ubuntu_efi() -> None:
    vm = from_data("fusion-ubuntu-efi.vmx")
    assert (vm.firmware, vm.secure_boot, vm.cpu.vcpus, vm.cpu.cores_per_socket) == (Firmware.EFI, False, 4, 2)
    assert vm.genid == "a60ed6f2-a818-c2ac-49e7-768cb60ae46a"
    assert [d.address.key for d in vm.disks] == ["nvme0:0"]
    (cdrom,) = vm.cdroms
    assert (cdrom.address.key, cdrom.kind, cdrom.file_name) == ("sata0:1", MediaKind.EMPTY, None)
    assert vm.usb.xhci and not vm.usb.ehci
    assert vm.sound is not None and vm.sound.model == "hdaudio"
    assert vm.video is not None and (vm.video.vram_kib, vm.video.accel_3d) == (262144, True)
    assert "shared folder '/Users/mara/Projects' dropped" in note_text(vm)


def test_awkward() -> None:
    raw = (DATA / "awkward.vmx").read_bytes()
    assert b"\r\n" in raw and b"\xe9" in raw  # CRLF and a windows-1252 byte, as committed
    vm = from_data("awkward.vmx")
    assert vm.display_name == 'Café "legacy" box 50%'
    assert vm.annotation == "Migrated from bare metal in 2016\nFirewall rules: see wiki | ops"
    assert vm.firmware is Firmware.BIOS
    assert (vm.memory.size_mib, vm.cpu.vcpus, vm.cpu.cores_per_socket) == (1536, 3, 1)
    assert vm.disks[1].problem_code is ErrorCode.PATH_OUTSIDE_SOURCE and vm.disks[1].path is None
    assert vm.cdroms[0].kind is MediaKind.EMPTY
    bridged, static = vm.nics
    assert (bridged.model, bridged.network_name, bridged.source_network) == ("vmxnet3", None, "bridged")
    assert (static.address_type, static.mac, static.network_name) == (
        "static",
        "00:50:56:3f:00:10",
        'DMZ "public"',
    )
    no_port, listening = vm.serials
    assert no_port.kind is PortKind.NETWORK and no_port.endpoint is None
    assert listening.endpoint == PortEndpoint("telnet", "0.0.0.0", 2000, True)
    assert vm.parallels[0].target == "printer.out"
    notes = note_text(vm)
    for expected in (
        "line 13 ignored",
        "memsize: key appears 2 times",
        "ethernet0.virtualDev: key appears 2 times",
        "cpuid.coresPerSocket: 2 cores per socket do not divide 3 vCPUs",
        "serial0.fileName: network URI",
        "keys with wildcards ignored: pciPassthru*.present",
        "pciPassthru0.present: PCI passthrough device dropped",
    ):
        assert expected in notes


# --- identity, CPU, memory --------------------------------------------------------------


def test_defaults_when_keys_are_missing(tmp_path: Path) -> None:
    vm = build(tmp_path, 'config.version = "8"\n')
    assert (vm.display_name, vm.guest_os, vm.firmware, vm.hw_version) == ("vm", "other", Firmware.BIOS, None)
    assert (vm.cpu.vcpus, vm.memory.size_mib) == (1, 32)
    assert (vm.uuid_bios, vm.vc_uuid, vm.genid, vm.video is not None) == (None, None, None, True)
    notes = note_text(vm)
    for key in ("displayName", "guestOS", "numvcpus", "memsize"):
        assert f"{key}: " in notes


def test_genid_byte_order(tmp_path: Path) -> None:
    # The guest of this VM reported 8987940a09512cc5:e81510634ff550b9 under VMware;
    # libvirt passes <genid> to QEMU, which stores it in GUID byte order.
    vm = build(tmp_path, BASE + 'vm.genid = "-8536691797830587195"\nvm.genidX = "-1723453263670062919"\n')
    assert vm.genid == "09512cc5-940a-8987-b950-f54f631015e8"


def test_genid_needs_both_halves(tmp_path: Path) -> None:
    vm = build(tmp_path, BASE + 'vm.genid = "12345"\n')
    assert vm.genid is None
    assert "vm.genid: only one half" in note_text(vm)


def test_uuid_forms(tmp_path: Path) -> None:
    vm = build(tmp_path, BASE + 'uuid.bios = "{564D1234-ABCD-ef01-2345-6789abcdef01}"\n')
    assert vm.uuid_bios == "564d1234-abcd-ef01-2345-6789abcdef01"


def test_memory_scheduling(tmp_path: Path) -> None:
    vm = build(
        tmp_path,
        'memsize = "1024"\nsched.mem.min = "4096"\nsched.mem.max = "-1"\n'
        'sched.mem.shares = "lots"\nsched.mem.pin = "TRUE"\n',
    )
    assert (vm.memory.reservation_mib, vm.memory.limit_mib, vm.memory.shares, vm.memory.pinned) == (
        1024,
        None,
        None,
        True,
    )
    assert "sched.mem.min: reservation above memsize" in note_text(vm)
    assert "sched.mem.shares: memory shares 'lots'" in note_text(vm)
    assert (
        build(
            tmp_path, 'memsize = "1024"\nsched.mem.max = "512"\nsched.mem.shares = "1500"\n'
        ).memory.limit_mib
        == 512
    )


def test_secure_boot_needs_efi(tmp_path: Path) -> None:
    vm = build(tmp_path, BASE + 'firmware = "bios"\nuefi.secureBoot.enabled = "TRUE"\n')
    assert (vm.firmware, vm.secure_boot) == (Firmware.BIOS, False)
    assert "uefi.secureBoot.enabled: secure boot needs EFI" in note_text(vm)


NIC0 = 'ethernet0.present = "TRUE"\n'


@pytest.mark.parametrize(
    "extra",
    [
        f'memsize = "{10**30}"',
        'memsize = "0"',
        'memsize = "-512"',
        'memsize = "25165825"',
        'numvcpus = "-2"',
        'numvcpus = "four"',
        'numvcpus = "0"',
        'numvcpus = "769"',
        'cpuid.coresPerSocket = "0"',
        'uuid.bios = "56 4d 12 34"',
        'vc.uuid = "52 zz 0f 3c a9 71 64 d2-0b 3e 5a c7 19 88 f0 4d"',
        'vm.genidX = "1"\nvm.genid = "0xZZ"',
        f'vm.genidX = "1"\nvm.genid = "{2**64}"',
        'firmware = "uefi"',
        'virtualHW.version = "9000"',
        NIC0 + 'ethernet0.generatedAddress = "00:50:56:zz:00:01"',
        NIC0 + 'ethernet0.generatedAddress = "00:50:56:01"',
        NIC0 + 'ethernet0.addressType = "static"\nethernet0.address = "01:00:5e:00:00:01"',
        NIC0 + 'ethernet0.generatedAddress = "00:00:00:00:00:00"',
        NIC0 + 'ethernet0.pciSlotNumber = "-2"',
        'scsi0.present = "TRUE"\nscsi0:0.present = "maybe"',
        f'svga.vramSize = "{2**40}"',
        'RemoteDisplay.vnc.enabled = "TRUE"\nRemoteDisplay.vnc.port = "70000"',
    ],
)
def test_nonsense_values_are_named_errors(tmp_path: Path, extra: str) -> None:
    # The last line holds the bad value; a repeated BASE key overrides BASE (last wins).
    key, _, quoted = extra.splitlines()[-1].partition(" = ")
    value = quoted.strip('"')
    with pytest.raises(Vm2kvmError) as info:
        build(tmp_path, BASE + extra + "\n")
    err = info.value
    assert err.code is ErrorCode.INVALID_VALUE
    assert (err.file, err.key, err.value) == (str(tmp_path / "vm.vmx"), key, value)
    assert value in err.describe() and key in err.describe() and str(tmp_path) in err.describe()
