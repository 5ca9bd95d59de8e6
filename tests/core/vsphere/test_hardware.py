"""vSphere configuration (plain values, written by hand here) -> SourceVM -> domain plan."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.core.planning.test_mapping import OPTS, plan
from vm2kvmd.core.domainxml import render_domain_xml
from vm2kvmd.core.hardware.model import Bus, DeviceAddress, Firmware, MediaKind, PortKind, SourceVM
from vm2kvmd.core.planning.plan import PlanOptions
from vm2kvmd.core.vsphere.config import (
    BackingKind,
    ControllerKind,
    DiskBacking,
    DriveKind,
    NetworkBacking,
    NetworkKind,
    SerialKind,
    VsController,
    VsDisk,
    VsDrive,
    VsNic,
    VsSerial,
    VsVideo,
    VsVm,
)
from vm2kvmd.core.vsphere.hardware import build_source_vm, datastore_of
from vm2kvmd.errors import ErrorCode, Vm2kvmError

GIB = 1 << 30
SOURCE = "vsphere://esx.example.com/vm-42"
PVSCSI = VsController(key=1000, kind=ControllerKind.PVSCSI, bus_number=0)
IDE0 = VsController(key=200, kind=ControllerKind.IDE, bus_number=0)
STANDARD = NetworkBacking(NetworkKind.STANDARD, "VM Network")


def flat(file_name: str = "[LocalDS_0] web/web.vmdk", **changes: object) -> DiskBacking:
    backing = DiskBacking(kind=BackingKind.FLAT, file_name=file_name, datastore="LocalDS_0", thin=True)
    return replace(backing, **changes)  # type: ignore[arg-type]


def disk(backing: DiskBacking | None = None, *, key: int = 2000, ctrl: int = 1000, unit: int = 0) -> VsDisk:
    return VsDisk(
        key=key,
        controller_key=ctrl,
        unit_number=unit,
        capacity_bytes=16 * GIB,
        backing=backing or flat(),
        label=f"Hard disk {key - 1999}",
    )


def nic(network: NetworkBacking = STANDARD, **changes: object) -> VsNic:
    card = VsNic(key=4000, kind="vmxnet3", mac="00:50:56:aa:bb:cc", address_type="assigned", network=network)
    return replace(card, **changes)  # type: ignore[arg-type]


def vsvm(**changes: object) -> VsVm:
    vm = VsVm(
        name="web01",
        moid="vm-42",
        uuid="42 1c 5e 2d 8a 7b 4c 3d-9e 0f 1a 2b 3c 4d 5e 6f".replace(" ", "").replace("-", ""),
        instance_uuid="5029a1b2-c3d4-e5f6-0718-293a4b5c6d7e",
        guest_id="debian10_64Guest",
        annotation="the web server",
        version="vmx-19",
        num_cpu=4,
        cores_per_socket=2,
        memory_mb=4096,
        controllers=(PVSCSI, IDE0),
        disks=(disk(),),
        nics=(nic(),),
        video=VsVideo(vram_kib=8192),
    )
    return replace(vm, **changes)  # type: ignore[arg-type]


def build(**changes: object) -> SourceVM:
    return build_source_vm(vsvm(**changes), source_path=SOURCE)


def notes(vm: SourceVM) -> list[str]:
    return [str(n) for n in vm.notes]


# --- identity, CPU, memory, firmware --------------------------------------------------


def test_identity_cpu_memory() -> None:
    vm = build()
    assert vm.source_path == SOURCE
    assert vm.display_name == "web01"
    assert vm.annotation == "the web server"
    assert vm.guest_os == "debian10-64"
    assert vm.is_64bit
    assert vm.hw_version == 19
    assert vm.uuid_bios == "421c5e2d-8a7b-4c3d-9e0f-1a2b3c4d5e6f"
    assert vm.vc_uuid == "5029a1b2-c3d4-e5f6-0718-293a4b5c6d7e"
    assert (vm.cpu.vcpus, vm.cpu.cores_per_socket) == (4, 2)
    assert vm.memory.size_mib == 4096
    assert vm.firmware is Firmware.BIOS
    assert vm.video is not None and vm.video.vram_kib == 8192
    assert vm.notes == ()


@pytest.mark.parametrize(
    ("guest_id", "guest_os"),
    [
        ("windows9Server64Guest", "windows9srv-64"),
        ("rhel7_64Guest", "rhel7-64"),
        ("otherGuest64", "other-64"),
        ("winXPProGuest", "winxppro"),
    ],
)
def test_guest_ids_map_like_ovf(guest_id: str, guest_os: str) -> None:
    assert build(guest_id=guest_id).guest_os == guest_os


def test_unknown_guest_id_is_noted() -> None:
    vm = build(guest_id="", guest_full_name="Something 64-bit")
    assert vm.guest_os == "other-64"
    assert any("config.guestId" in n for n in notes(vm))


def test_efi_and_secure_boot() -> None:
    vm = build(firmware="efi", secure_boot=True)
    assert (vm.firmware, vm.secure_boot) == (Firmware.EFI, True)
    bios = build(secure_boot=True)
    assert not bios.secure_boot
    assert "config.bootOptions.efiSecureBootEnabled: secure boot needs EFI firmware; ignored" in notes(bios)


def test_unsupported_firmware_is_a_named_error() -> None:
    with pytest.raises(Vm2kvmError) as caught:
        build(firmware="coreboot")
    err = caught.value
    assert (err.code, err.key, err.value, err.file) == (
        ErrorCode.INVALID_VALUE,
        "config.firmware",
        "coreboot",
        SOURCE,
    )


def test_cores_that_do_not_divide_and_bad_counts() -> None:
    vm = build(num_cpu=6, cores_per_socket=4)
    assert vm.cpu.cores_per_socket == 1
    assert any("config.hardware.numCoresPerSocket" in n for n in notes(vm))
    with pytest.raises(Vm2kvmError, match="numCPU"):
        build(num_cpu=0)
    with pytest.raises(Vm2kvmError, match="memoryMB"):
        build(memory_mb=0)


def test_memory_reservation_and_unlimited_limit() -> None:
    vm = build(memory_reservation_mb=8192, memory_limit_mb=-1)
    assert (vm.memory.reservation_mib, vm.memory.limit_mib) == (4096, None)
    assert build(memory_limit_mb=2048).memory.limit_mib == 2048


def test_genid_from_extra_config() -> None:
    vm = build(extra_config=(("vm.genid", "-8536691797830587195"), ("vm.genidX", "-4977300166613574717")))
    assert vm.genid is not None and len(vm.genid) == 36
    half = build(extra_config=(("vm.genid", "12"),))
    assert half.genid is None
    assert any("generation ID dropped" in n for n in notes(half))


def test_bad_uuid_is_a_named_error() -> None:
    with pytest.raises(Vm2kvmError) as caught:
        build(uuid="not-a-uuid")
    assert caught.value.key == "config.uuid"


# --- storage -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "bus", "model"),
    [
        (ControllerKind.LSILOGIC, Bus.SCSI, "lsilogic"),
        (ControllerKind.LSISAS, Bus.SCSI, "lsisas1068"),
        (ControllerKind.PVSCSI, Bus.SCSI, "pvscsi"),
        (ControllerKind.BUSLOGIC, Bus.SCSI, "buslogic"),
        (ControllerKind.SATA, Bus.SATA, None),
        (ControllerKind.NVME, Bus.NVME, None),
        (ControllerKind.IDE, Bus.IDE, None),
    ],
)
def test_each_controller_kind(kind: ControllerKind, bus: Bus, model: str | None) -> None:
    ctrl = VsController(key=1000, kind=kind, bus_number=1, pci_slot=160)
    vm = build(controllers=(ctrl,), disks=(disk(unit=1),))
    (controller,) = vm.controllers
    assert (controller.bus, controller.index, controller.model, controller.pci_slot) == (bus, 1, model, 160)
    assert vm.disks[0].address == DeviceAddress(bus, 1, 1)


def test_disk_is_read_at_migration_from_its_datastore() -> None:
    vm = build()
    (d,) = vm.disks
    assert d.address.key == "scsi0:0"
    assert d.file_name == "[LocalDS_0] web/web.vmdk"
    assert (d.chain, d.path, d.problem_code) == (None, None, None)
    assert not d.missing
    assert d.remote is not None
    assert (d.remote.datastore, d.remote.layers, d.remote.capacity, d.remote.thin) == (
        "LocalDS_0",
        ("[LocalDS_0] web/web.vmdk",),
        16 * GIB,
        True,
    )
    assert d.capacity == 16 * GIB
    p = plan(vm)
    assert p.disks[0].capacity == 16 * GIB
    assert "on a vSphere datastore" in " ".join(n.message for n in p.notes)


def test_snapshot_chain_reads_the_current_state() -> None:
    base = flat("[LocalDS_0] web/web.vmdk", thin=False)
    middle = DiskBacking(BackingKind.SESPARSE, "[LocalDS_0] web/web-000001.vmdk", "LocalDS_0", parent=base)
    top = DiskBacking(BackingKind.SESPARSE, "[LocalDS_0] web/web-000002.vmdk", "LocalDS_0", parent=middle)
    vm = build(disks=(disk(top),), snapshot_count=2, current_snapshot="before upgrade")
    (d,) = vm.disks
    assert d.file_name == "[LocalDS_0] web/web-000002.vmdk"
    assert d.remote is not None
    assert d.remote.layers == (
        "[LocalDS_0] web/web-000002.vmdk",
        "[LocalDS_0] web/web-000001.vmdk",
        "[LocalDS_0] web/web.vmdk",
    )
    assert d.remote.thin is False  # the base disk's provisioning
    text = notes(vm)
    assert (
        "Hard disk 1 (device 2000): current state read through 3 files (snapshot deltas and base disk)"
        in text
    )
    assert any("2 snapshot(s)" in n and "'before upgrade'" in n for n in text)


@pytest.mark.parametrize("mode", ["physicalMode", "virtualMode"])
def test_rdm_is_an_unsupported_disk(mode: str) -> None:
    rdm = DiskBacking(
        BackingKind.RDM,
        "[LocalDS_0] web/web-rdm.vmdk",
        "LocalDS_0",
        compatibility_mode=mode,
        lun="/vmfs/devices/disks/naa.600508b1001c",
    )
    vm = build(disks=(disk(), disk(rdm, key=2001, unit=1)))
    good, bad = vm.disks
    assert good.problem_code is None
    assert bad.problem_code is ErrorCode.UNSUPPORTED_DISK
    assert bad.remote is None and bad.missing
    assert bad.problem is not None
    assert mode in bad.problem and "naa.600508b1001c" in bad.problem and "Hard disk 2" in bad.problem
    assert "Storage vMotion" in bad.problem


def test_backing_without_a_file_is_unsupported() -> None:
    other = DiskBacking(BackingKind.OTHER, "", None, type_name="VirtualDiskLocalPMemBackingInfo")
    (d,) = build(disks=(disk(other),)).disks
    assert d.problem_code is ErrorCode.UNSUPPORTED_DISK
    assert d.problem is not None and "VirtualDiskLocalPMemBackingInfo" in d.problem


def test_inaccessible_datastore_anywhere_in_the_chain() -> None:
    base = flat("[SlowNFS] web/web.vmdk", datastore="SlowNFS", datastore_accessible=False)
    top = DiskBacking(BackingKind.SPARSE, "[LocalDS_0] web/web-000001.vmdk", "LocalDS_0", parent=base)
    (d,) = build(disks=(disk(top),)).disks
    assert d.problem_code is ErrorCode.DATASTORE_INACCESSIBLE
    assert d.problem is not None
    assert "datastore SlowNFS holding [SlowNFS] web/web.vmdk is inaccessible" in d.problem


def test_independent_disks() -> None:
    persistent = disk(flat(disk_mode="independent_persistent"))
    nonpersistent = disk(
        flat("[LocalDS_0] web/scratch.vmdk", disk_mode="independent_nonpersistent"), key=2001, unit=1
    )
    vm = build(disks=(persistent, nonpersistent))
    assert [d.mode for d in vm.disks] == ["independent-persistent", "independent-nonpersistent"]
    assert all(d.remote is not None and d.problem_code is None for d in vm.disks)
    assert (
        "Hard disk 1 (device 2000): independent disk: outside snapshots; its current content is migrated"
        in notes(vm)
    )
    p = plan(vm)
    assert any("VMware discarded changes at power-off" in n.message for n in p.notes if n.key == "scsi0:1")


def test_unknown_disk_mode_is_noted() -> None:
    vm = build(disks=(disk(flat(disk_mode="funky")),))
    assert vm.disks[0].mode == "persistent"
    assert any("unknown disk mode 'funky'" in n for n in notes(vm))


def test_shared_unit_moves_the_drive_not_the_disk() -> None:
    # govmomi's simulator puts a CD-ROM and the disk on the same unit.
    cd = VsDrive(key=3000, controller_key=1000, unit_number=0, kind=DriveKind.EMPTY, label="CD/DVD drive 1")
    vm = build(cdroms=(cd,))
    assert vm.disks[0].address.key == "scsi0:0"
    assert vm.cdroms[0].address.key == "scsi0:1"
    assert "CD/DVD drive 1 (device 3000): unit 0 on scsi0 is taken or out of range; unit 1 used" in notes(vm)


def test_scsi_unit_7_is_the_controller() -> None:
    vm = build(disks=(disk(unit=7),))
    assert vm.disks[0].address.key == "scsi0:0"
    lsi16 = build(version="vmx-10", disks=(disk(unit=20),))
    assert lsi16.disks[0].address.key == "scsi0:0"  # 16 units before hardware version 13
    assert build(disks=(disk(unit=20),)).disks[0].address.key == "scsi0:20"


def test_disk_on_no_controller_is_invalid() -> None:
    with pytest.raises(Vm2kvmError) as caught:
        build(disks=(disk(ctrl=9999),))
    assert caught.value.code is ErrorCode.INVALID_SOURCE
    assert caught.value.key == "Hard disk 1 (device 2000)"


def test_controller_number_out_of_range_is_invalid() -> None:
    with pytest.raises(Vm2kvmError, match="outside VMware's range"):
        build(controllers=(VsController(key=1000, kind=ControllerKind.SATA, bus_number=4),))


def test_disks_sorted_by_address() -> None:
    sata = VsController(key=15000, kind=ControllerKind.SATA, bus_number=0)
    vm = build(
        controllers=(sata, PVSCSI),
        disks=(disk(key=2000, ctrl=15000, unit=0), disk(flat("[LocalDS_0] web/b.vmdk"), key=2001, unit=3)),
    )
    assert [d.address.key for d in vm.disks] == ["scsi0:3", "sata0:0"]


def test_removable_drives() -> None:
    iso = VsDrive(3000, 200, 0, DriveKind.IMAGE, "[LocalDS_0] iso/debian.iso", label="CD/DVD drive 1")
    host = VsDrive(3001, 200, 1, DriveKind.HOST, "/dev/cdrom", start_connected=False)
    client = VsDrive(3002, 9999, 0, DriveKind.CLIENT)
    floppy = VsDrive(8000, None, None, DriveKind.IMAGE, "[LocalDS_0] web/boot.flp")
    vm = build(cdroms=(iso, host, client), floppies=(floppy,))
    assert [(d.address.key, d.kind, d.file_name) for d in vm.cdroms] == [
        ("ide0:0", MediaKind.EMPTY, None),
        ("ide0:1", MediaKind.HOST, "/dev/cdrom"),
    ]
    assert not vm.cdroms[1].start_connected
    assert [(d.address.key, d.kind) for d in vm.floppies] == [("floppy0", MediaKind.EMPTY)]
    text = notes(vm)
    assert (
        "CD/DVD drive 1 (device 3000): CD/DVD image [LocalDS_0] iso/debian.iso is on the datastore "
        "and not copied; drive left empty"
    ) in text
    assert any("no storage controller; dropped" in n for n in text)
    assert any("boot.flp" in n for n in text)


# --- network and other devices ---------------------------------------------------------


def test_standard_distributed_and_nsx_networks() -> None:
    dvpg = NetworkBacking(
        NetworkKind.DISTRIBUTED, "DC0_DVPG0", portgroup_key="dvportgroup-13", switch_uuid="fe a9 79 29"
    )
    nsx = NetworkBacking(NetworkKind.OPAQUE, "seg-web", opaque_id="c1b7-44", opaque_type="nsx.LogicalSwitch")
    vm = build(
        nics=(
            nic(key=4000),
            nic(key=4001, network=dvpg, kind="e1000e", mac="00:0C:29:11:22:33", address_type="generated"),
            nic(key=202, network=nsx, mac="00:50:56:00:00:03", address_type="manual"),
        )
    )
    first, second, third = vm.nics
    assert [n.index for n in vm.nics] == [0, 1, 2]
    assert (first.model, first.mac, first.address_type, first.source_network) == (
        "vmxnet3",
        "00:50:56:aa:bb:cc",
        "vpx",
        "VM Network",
    )
    assert (second.model, second.mac, second.address_type, second.source_network) == (
        "e1000e",
        "00:0c:29:11:22:33",
        "generated",
        "DC0_DVPG0",
    )
    assert (second.dvs_port_group, second.dvs_switch) == ("dvportgroup-13", "fe a9 79 29")
    assert (third.address_type, third.source_network) == ("static", "seg-web")
    assert any("NSX network 'seg-web' (nsx.LogicalSwitch)" in n for n in notes(vm))
    opts = replace(OPTS, networks=(("DC0_DVPG0", "default"),), bridges=(("seg-web", "br0"),))
    planned = plan(vm, opts).nics
    assert [(n.kind, n.target) for n in planned][1:] == [("network", "default"), ("bridge", "br0")]


def test_an_nsx_network_whose_name_is_not_visible_maps_by_its_id() -> None:
    nsx = NetworkBacking(NetworkKind.OPAQUE, None, opaque_id="c1b7-44", opaque_type="nsx.LogicalSwitch")
    vm = build(nics=(nic(network=nsx),))
    (n,) = vm.nics
    assert (n.source_network, n.opaque_network_id, n.opaque_network_type) == (
        "c1b7-44",
        "c1b7-44",
        "nsx.LogicalSwitch",
    )
    text = notes(vm)
    assert any("NSX network c1b7-44 (nsx.LogicalSwitch): its name is not visible" in t for t in text)
    assert not any("on no vSphere network" in t for t in text)
    planned = plan(vm, replace(OPTS, networks=(("c1b7-44", "nsx-net"),))).nics
    assert [(p.kind, p.target) for p in planned] == [("network", "nsx-net")]


def test_nic_on_no_network_and_unknown_kind() -> None:
    vm = build(nics=(nic(NetworkBacking(NetworkKind.OTHER, None), kind="sriov"),))
    (n,) = vm.nics
    assert n.model == "e1000"  # VMware's default for a 64-bit guest
    assert n.source_network == "bridged"
    text = notes(vm)
    assert any("NIC type 'sriov' has no KVM counterpart" in m for m in text)
    assert any("on no vSphere network" in m for m in text)
    assert build(guest_id="winXPProGuest", nics=(nic(kind="sriov"),)).nics[0].model == "vlance"


@pytest.mark.parametrize(
    ("mac", "why"),
    [
        ("00:00:00:00:00:00", "all-zero MAC address"),
        ("01:00:5e:00:00:01", "not a unicast address"),
        ("garbage", "not a unicast address"),
        (None, "no MAC address"),
    ],
)
def test_macs_the_target_must_replace(mac: str | None, why: str) -> None:
    vm = build(nics=(nic(mac=mac),))
    assert vm.nics[0].mac is None
    assert any(why in n for n in notes(vm))


def test_too_many_nics() -> None:
    assert len(build(nics=tuple(nic(key=4000 + i) for i in range(10))).nics) == 10
    with pytest.raises(Vm2kvmError) as exc:
        build(nics=tuple(nic(key=4000 + i) for i in range(12)))
    assert exc.value.code is ErrorCode.HARDWARE_LIMIT
    assert exc.value.key == "device 4010"
    assert "a VMware VM has at most 10 NICs" in exc.value.message


def test_serial_ports() -> None:
    ports = (
        VsSerial(9000, SerialKind.URI, "telnet://:7001", server=True),
        VsSerial(9001, SerialKind.PIPE, r"\\.\pipe\com1", server=False),
        VsSerial(9002, SerialKind.FILE, "[LocalDS_0] web/serial.log"),
        VsSerial(9003, SerialKind.URI, "nonsense", label="Serial port 4"),
    )
    vm = build(serials=ports)
    uri, pipe, log, bad = vm.serials
    assert uri.kind is PortKind.NETWORK and uri.endpoint is not None
    assert (uri.endpoint.protocol, uri.endpoint.port, uri.endpoint.server) == ("telnet", 7001, True)
    assert (pipe.kind, pipe.pipe_server) == (PortKind.PIPE, False)
    assert (log.kind, log.target) == (PortKind.FILE, "[LocalDS_0] web/serial.log")
    assert bad.endpoint is None
    assert any(n.startswith("Serial port 4 (device 9003): network URI") for n in notes(vm))


def test_sound_usb_state_and_dropped_devices() -> None:
    vm = build(
        sound="hdaudio",
        usb=("uhci", "ehci", "xhci"),
        power_state="suspended",
        other_devices=("VMCI device", "PCI device 0"),
    )
    assert vm.sound is not None and vm.sound.model == "hdaudio"
    assert (vm.usb.uhci, vm.usb.ehci, vm.usb.xhci) == (True, True, True)
    text = notes(vm)
    assert "runtime.powerState: the VM is suspended; its memory state is lost and it cold boots" in text
    assert "config.hardware.device: PCI device 0 dropped: it has no place in the KVM domain" in text
    assert not any("powerState" in n for n in notes(build(power_state="poweredOn")))


def test_datastore_of() -> None:
    assert datastore_of("[LocalDS_0] vm/vm.vmdk") == "LocalDS_0"
    assert datastore_of("[datastore 1] a b/c.vmdk") == "datastore 1"
    assert datastore_of("/vmfs/volumes/x/vm.vmdk") is None


def test_whole_vm_renders() -> None:
    vm = build(
        firmware="efi",
        controllers=(PVSCSI, IDE0, VsController(15000, ControllerKind.SATA, 0)),
        disks=(disk(), disk(flat("[LocalDS_0] web/data.vmdk"), key=2001, ctrl=15000, unit=0)),
        cdroms=(VsDrive(3000, 200, 0, DriveKind.EMPTY),),
        serials=(VsSerial(9000, SerialKind.URI, "telnet://:7001"),),
    )
    xml = render_domain_xml(plan(vm, PlanOptions(target_dir="/images", new_uuid=OPTS.new_uuid)))
    assert "<name>web01</name>" in xml
    assert xml.count("<disk ") == 3
    assert "421c5e2d-8a7b-4c3d-9e0f-1a2b3c4d5e6f" in xml
