"""SourceVM -> DomainPlan: every rule of docs/mapping.md, on values built by hand.

The builders here (``make_vm``, ``full_vm`` ...) are also used by
``test_domainxml.py``.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from vm2kvmd.core.hardware.model import (
    Bus,
    CharPort,
    Cpu,
    DeviceAddress,
    DiskChain,
    DiskLayer,
    Firmware,
    MediaKind,
    Memory,
    Nic,
    Note,
    PortEndpoint,
    PortKind,
    RemovableDrive,
    Sound,
    SourceDisk,
    SourceVM,
    Usb,
    Video,
    Vnc,
)
from vm2kvmd.core.planning.guestcaps import GuestCaps
from vm2kvmd.core.planning.mapping import NAME_MAX_BYTES, domain_name_for, plan_domain, volume_name
from vm2kvmd.core.planning.plan import DomainPlan, PlanOptions
from vm2kvmd.errors import ErrorCode, Vm2kvmError

SRC_DIR = "/srv/vmware/web01"
SRC_UUID = "564d7a1e-2b3c-4d5e-8f90-a1b2c3d4e5f6"
NEW_UUID = "00000000-0000-4000-8000-000000000001"
GIB = 1024**3
OPTS = PlanOptions(target_dir="/var/lib/libvirt/images", new_uuid=NEW_UUID)
CAPS = GuestCaps.unconverted()


# --- builders ----------------------------------------------------------------


def make_disk(
    bus: Bus = Bus.SCSI,
    controller: int = 0,
    unit: int = 0,
    name: str = "web01.vmdk",
    size: int = 16 * GIB,
    *,
    missing: bool = False,
    mode: str = "persistent",
) -> SourceDisk:
    path = f"{SRC_DIR}/{name}"
    chain = None
    if not missing:
        layer = DiskLayer(
            path=path,
            create_type="monolithicSparse",
            cid=0x1234,
            parent_cid=0xFFFFFFFF,
            parent_hint=None,
            extents=(),
            embedded=True,
            virtual_size=size,
        )
        chain = DiskChain(layers=(layer,))
    return SourceDisk(
        address=DeviceAddress(bus, controller, unit),
        file_name=name,
        path=path,
        mode=mode,
        chain=chain,
        problem=f"{path}: disk file does not exist" if missing else None,
        problem_code=ErrorCode.DISK_MISSING if missing else None,
    )


def make_drive(
    bus: Bus,
    controller: int,
    unit: int,
    kind: MediaKind,
    file_name: str | None = None,
    *,
    missing: bool = False,
    start_connected: bool = True,
) -> RemovableDrive:
    path = f"/srv/iso/{file_name}" if kind is MediaKind.IMAGE and file_name else None
    return RemovableDrive(
        address=DeviceAddress(bus, controller, unit),
        kind=kind,
        file_name=file_name,
        path=path,
        start_connected=start_connected,
        missing=missing,
    )


def make_nic(
    index: int,
    mac: str | None,
    network_name: str | None = None,
    *,
    connection_type: str = "bridged",
    model: str = "vmxnet3",
    start_connected: bool = True,
    vnet: str | None = None,
) -> Nic:
    return Nic(
        index=index,
        model=model,
        mac=mac,
        address_type="static",
        connection_type=connection_type,
        network_name=network_name,
        vnet=vnet,
        start_connected=start_connected,
    )


def make_vm(**changes: object) -> SourceVM:
    """A small BIOS VM with one disk and one NIC; ``changes`` replace fields."""
    vm = SourceVM(
        source_path=f"{SRC_DIR}/web01.vmx",
        display_name="web01",
        annotation="",
        guest_os="debian12-64",
        hw_version=19,
        firmware=Firmware.BIOS,
        secure_boot=False,
        cpu=Cpu(vcpus=2),
        memory=Memory(size_mib=2048),
        uuid_bios=SRC_UUID,
        vc_uuid="5012a1b2-c3d4-e5f6-0718-293a4b5c6d7e",
        genid=None,
        disks=(make_disk(),),
        nics=(make_nic(0, "00:50:56:aa:bb:01", "VM Network"),),
    )
    return replace(vm, **changes)  # type: ignore[arg-type]


def full_vm(**changes: object) -> SourceVM:
    """Every device family, with the awkward cases each rule has to handle."""
    vm = make_vm(
        display_name='Web "Front" <01> & more',
        annotation="Line one\nLine <two> & 'three'",
        guest_os="windows9srv-64",
        firmware=Firmware.EFI,
        secure_boot=True,
        cpu=Cpu(vcpus=8, cores_per_socket=4),
        memory=Memory(size_mib=8192, reservation_mib=4096, limit_mib=16384, pinned=True, shares="high"),
        genid="2c4f8e1a-9b7d-4c3e-a5f6-0d1e2f3a4b5c",
        disks=(
            make_disk(Bus.SCSI, 0, 0, "web01.vmdk", 40 * GIB),
            make_disk(Bus.SCSI, 0, 1, "web01_1.vmdk", missing=True),
            make_disk(Bus.SATA, 0, 2, "web01_2.vmdk", 2 * GIB, mode="independent-nonpersistent"),
        ),
        cdroms=(
            make_drive(Bus.SATA, 0, 0, MediaKind.IMAGE, "debian-12.iso"),
            make_drive(Bus.IDE, 1, 0, MediaKind.HOST, "/dev/cdrom"),
            make_drive(Bus.SATA, 0, 1, MediaKind.IMAGE, "gone.iso", missing=True),
            make_drive(Bus.SATA, 0, 3, MediaKind.EMPTY),
        ),
        floppies=(make_drive(Bus.FLOPPY, 0, 0, MediaKind.IMAGE, "drivers.flp"),),
        nics=(
            make_nic(0, "00:50:56:aa:bb:01", "VM Network"),
            make_nic(1, "00:0c:29:12:34:56", "DMZ", model="e1000e"),
            make_nic(2, "00:50:56:aa:bb:03", "Backup LAN", start_connected=False, model="vlance"),
            make_nic(3, "02:00:00:00:00:04", None, connection_type="custom", vnet="/dev/vmnet8"),
        ),
        serials=(
            CharPort(index=0, kind=PortKind.FILE, target=f"{SRC_DIR}/serial0.log"),
            CharPort(index=1, kind=PortKind.PIPE, target=f"{SRC_DIR}/com2", pipe_server=True),
            CharPort(
                index=2,
                kind=PortKind.NETWORK,
                target="telnet://:2345",
                endpoint=PortEndpoint(protocol="telnet", host=None, port=2345, server=True),
            ),
            CharPort(index=3, kind=PortKind.THINPRINT, target=None),
        ),
        parallels=(CharPort(index=0, kind=PortKind.FILE, target=f"{SRC_DIR}/printer.out"),),
        video=Video(vram_kib=12 * 1024, num_displays=2, accel_3d=True),
        sound=Sound(model="hdaudio"),
        usb=Usb(uhci=True, ehci=True),
        vnc=Vnc(enabled=True, port=5911, keymap="de", has_password=True),
        notes=(Note("a source note comes first", "some.key"),),
    )
    return replace(vm, **changes)  # type: ignore[arg-type]


def plan(vm: SourceVM, opts: PlanOptions = OPTS, caps: GuestCaps = CAPS) -> DomainPlan:
    return plan_domain(vm, opts, caps)


def messages(p: DomainPlan, key: str | None = None) -> list[str]:
    return [n.message for n in p.notes if key is None or n.key == key]


# --- identity ---------------------------------------------------------------


def test_uuid_bios_is_the_domain_uuid() -> None:
    p = plan(make_vm())
    assert p.uuid == SRC_UUID
    assert p.smbios_uuid is None
    assert p.source_uuid == SRC_UUID


def test_taken_uuid_gets_new_domain_uuid_and_guest_keeps_old_one() -> None:
    p = plan(make_vm(), replace(OPTS, uuid_taken=True))
    assert p.uuid == NEW_UUID
    assert p.smbios_uuid == SRC_UUID
    assert any("taken" in m for m in messages(p, "uuid.bios"))


def test_taken_uuid_without_new_uuid_generates_one() -> None:
    p = plan(make_vm(), PlanOptions(target_dir="/x", uuid_taken=True))
    assert uuid.UUID(p.uuid).version == 4
    assert p.uuid != SRC_UUID
    assert p.smbios_uuid == SRC_UUID


def test_missing_uuid_bios_gets_new_uuid_with_note() -> None:
    p = plan(make_vm(uuid_bios=None))
    assert p.uuid == NEW_UUID
    assert p.smbios_uuid is None
    assert messages(p, "uuid.bios")
    random = plan(make_vm(uuid_bios=None), PlanOptions(target_dir="/x"))
    assert uuid.UUID(random.uuid).version == 4


def test_new_uuid_option_is_validated() -> None:
    with pytest.raises(Vm2kvmError) as err:
        plan(make_vm(uuid_bios=None), replace(OPTS, new_uuid="not-a-uuid"))
    assert err.value.code is ErrorCode.INVALID_OPTION


def test_identity_metadata_is_carried() -> None:
    vm = full_vm(hw_version=13)
    p = plan(vm)
    assert (p.genid, p.vc_uuid, p.guest_os, p.hw_version, p.source_path) == (
        vm.genid,
        vm.vc_uuid,
        "windows9srv-64",
        13,
        f"{SRC_DIR}/web01.vmx",
    )


@pytest.mark.parametrize(
    "display",
    [
        "web01",
        "Web Server (prod) #2",
        "Café ünïcødé ✓",
        "quo\"te <&> 'x'",
        "tab\there",
        " spaced ",
        "a\\b:c*d?",
    ],
)
def test_name_kept_exactly_when_libvirt_allows_it(display: str) -> None:
    assert domain_name_for(display) == (display, None)
    assert plan(make_vm(display_name=display)).name == display


@pytest.mark.parametrize(
    ("display", "expected"),
    [
        ("web/app", "web-app"),
        ("two\nlines", "two lines"),
        ("cr\r\nlf", "cr lf"),
        ("bell\x07char", "bellchar"),
        (".", "vm"),
        ("..", "vm"),
        ("   ", "vm"),
        ("/", "-"),
    ],
)
def test_name_sanitised_with_note(display: str, expected: str) -> None:
    name, note = domain_name_for(display)
    assert name == expected
    assert note is not None and note.key == "displayName"


def test_long_name_cut_at_character_boundary() -> None:
    name, note = domain_name_for("ü" * 150)  # 300 bytes
    assert note is not None
    assert len(name.encode()) <= NAME_MAX_BYTES
    assert name == "ü" * (NAME_MAX_BYTES // 2)
    assert domain_name_for("x" * NAME_MAX_BYTES) == ("x" * NAME_MAX_BYTES, None)


def test_empty_display_name_uses_vmx_file_name() -> None:
    p = plan(make_vm(display_name=""))
    assert p.name == "web01"
    assert p.title is None
    assert messages(p, "displayName")


def test_name_option_overrides_and_is_checked() -> None:
    assert plan(make_vm(), replace(OPTS, name="other")).name == "other"
    with pytest.raises(Vm2kvmError) as err:
        plan(make_vm(), replace(OPTS, name="bad/name"))
    assert err.value.code is ErrorCode.INVALID_OPTION
    assert err.value.key == "name"


def test_title_is_one_line_and_description_is_origin_then_annotation() -> None:
    p = plan(make_vm(display_name="web\n01 <&>", annotation="first\nsecond <&> \x01"))
    assert p.title == "web 01 <&>"
    origin = f"Migrated by vm2kvm from VMware VMX {make_vm().source_path}"
    assert p.description == f"{origin}.\n\nfirst\nsecond <&> "
    assert plan(make_vm(annotation="")).description == f"{origin}."
    started = datetime(2026, 12, 7, 21, 5, tzinfo=timezone(timedelta(hours=1)))
    dated = plan_domain(make_vm(annotation=""), replace(OPTS, started=started), GuestCaps())
    assert dated.description == f"{origin} on 2026-12-07 20:05 UTC."


# --- CPU, memory, firmware ------------------------------------------------------


@pytest.mark.parametrize(
    ("vcpus", "cps", "topology", "noted"),
    [(1, 1, (1, 1, 1), False), (4, 2, (2, 2, 1), False), (8, 8, (1, 8, 1), False), (6, 4, (6, 1, 1), True)],
)
def test_topology(vcpus: int, cps: int, topology: tuple[int, int, int], noted: bool) -> None:
    p = plan(make_vm(cpu=Cpu(vcpus=vcpus, cores_per_socket=cps)))
    assert p.vcpus == vcpus
    assert (p.sockets, p.cores, p.threads) == topology
    assert p.sockets * p.cores * p.threads == vcpus
    assert bool(messages(p, "cpuid.coresPerSocket")) is noted


def test_memory_pin_locks_and_other_settings_are_notes() -> None:
    p = plan(full_vm())
    assert p.memory_mib == 8192
    assert p.memory_locked
    for key in ("sched.mem.pin", "sched.mem.min", "sched.mem.max", "sched.mem.shares"):
        assert messages(p, key), key
    plain = plan(make_vm())
    assert not plain.memory_locked
    assert not [n for n in plain.notes if n.key and n.key.startswith("sched.")]


def test_efi_with_secure_boot_on_q35() -> None:
    p = plan(full_vm())
    assert p.firmware is Firmware.EFI
    assert p.secure_boot
    assert p.machine == "q35"


def test_secure_boot_needs_q35_and_efi() -> None:
    on_pc = plan(full_vm(), caps=replace(CAPS, machine="pc"))
    assert not on_pc.secure_boot
    assert messages(on_pc, "uefi.secureBoot.enabled")
    bios = plan(make_vm(secure_boot=True))
    assert bios.firmware is Firmware.BIOS and not bios.secure_boot


def test_domain_type_cpu_mode_and_clock() -> None:
    kvm = plan(full_vm())
    assert (kvm.domain_type, kvm.cpu_mode, kvm.clock_offset) == ("kvm", "host-model", "localtime")
    tcg = plan(make_vm(), replace(OPTS, domain_type="qemu"))
    assert (tcg.domain_type, tcg.cpu_mode, tcg.clock_offset) == ("qemu", None, "utc")
    assert plan(make_vm(guest_os="longhorn-64")).clock_offset == "localtime"


# --- storage ------------------------------------------------------------------


def test_every_disk_planned_in_source_order() -> None:
    vm = full_vm()
    p = plan(vm)
    assert [d.source for d in p.disks] == list(vm.disks)
    assert [d.target_dev for d in p.disks] == ["sda", "sdb", "sdc"]
    assert {d.bus for d in p.disks} == {"sata"}
    assert [d.capacity for d in p.disks] == [40 * GIB, 0, 2 * GIB]
    assert [d.boot_order for d in p.disks] == [1, None, None]
    assert [d.volume_name for d in p.disks] == [
        "Web_Front_01_more-disk1.qcow2",
        "Web_Front_01_more-disk2.qcow2",
        "Web_Front_01_more-disk3.qcow2",
    ]
    assert p.disks[0].target_path == "/var/lib/libvirt/images/Web_Front_01_more-disk1.qcow2"
    assert all(d.format == "qcow2" for d in p.disks)
    assert any("size 0" in m for m in messages(p, "scsi0:1"))
    assert any("independent-nonpersistent" in m for m in messages(p, "sata0:2"))


def test_raw_format_and_name_override_reach_the_volumes() -> None:
    p = plan(make_vm(), replace(OPTS, disk_format="raw", name="db01", target_dir="/pool/"))
    assert p.disks[0].volume_name == "db01-disk1.img"
    assert p.disks[0].target_path == "/pool/db01-disk1.img"
    assert p.disks[0].format == "raw"


@pytest.mark.parametrize(
    ("disk_bus", "cdrom_bus", "machine", "disk_devs", "cdrom_devs"),
    [
        ("sata", "sata", "q35", ["sda", "sdb", "sdc"], ["sdd", "sde", "sdf", "sdg"]),
        ("virtio", "sata", "q35", ["vda", "vdb", "vdc"], ["sda", "sdb", "sdc", "sdd"]),
        ("scsi", "sata", "q35", ["sda", "sdb", "sdc"], ["sdd", "sde", "sdf", "sdg"]),
        ("virtio", "ide", "pc", ["vda", "vdb", "vdc"], ["hda", "hdb", "hdc", "hdd"]),
        ("ide", "ide", "pc", ["hda", "hdb", "hdc"], ["hdd", "sda", "sdb", "sdc"]),
        ("ide", "ide", "q35", ["sda", "sdb", "sdc"], ["sdd", "sde", "sdf", "sdg"]),
    ],
)
def test_target_devs_never_collide(
    disk_bus: str, cdrom_bus: str, machine: str, disk_devs: list[str], cdrom_devs: list[str]
) -> None:
    caps = replace(CAPS, disk_bus=disk_bus, cdrom_bus=cdrom_bus, machine=machine)
    p = plan(full_vm(secure_boot=False), caps=caps)
    assert [d.target_dev for d in p.disks] == disk_devs
    assert [c.target_dev for c in p.cdroms] == cdrom_devs
    assert [f.target_dev for f in p.floppies] == ["fda"]
    devs = [d.target_dev for d in p.disks] + [c.target_dev for c in p.cdroms + p.floppies]
    assert len(devs) == len(set(devs))


def test_ide_on_q35_becomes_sata_with_note() -> None:
    p = plan(
        make_vm(cdroms=(make_drive(Bus.IDE, 1, 0, MediaKind.EMPTY),)), caps=replace(CAPS, cdrom_bus="ide")
    )
    assert p.cdroms[0].bus == "sata"
    assert any("IDE" in m for m in messages(p))


def test_unknown_bus_falls_back_to_sata() -> None:
    p = plan(make_vm(), caps=replace(CAPS, disk_bus="nvme"))
    assert (p.disks[0].bus, p.disks[0].target_dev) == ("sata", "sda")
    assert any("nvme" in m for m in messages(p))


def test_cdroms_every_kind() -> None:
    p = plan(full_vm())
    assert [c.device for c in p.cdroms] == ["cdrom"] * 4
    assert [c.path for c in p.cdroms] == ["/srv/iso/debian-12.iso", None, None, None]
    assert messages(p, "ide1:0")  # host drive
    assert messages(p, "sata0:1")  # missing image
    assert not messages(p, "sata0:3")  # empty drive: nothing to say


def test_cdrom_not_connected_at_power_on_is_left_empty() -> None:
    drive = make_drive(Bus.SATA, 0, 1, MediaKind.IMAGE, "tools.iso", start_connected=False)
    p = plan(make_vm(cdroms=(drive,)))
    assert p.cdroms[0].path is None
    assert any("tools.iso" in m for m in messages(p, "sata0:1"))


def test_floppies_on_fdc_and_at_most_two() -> None:
    drives = (
        make_drive(Bus.FLOPPY, 0, 0, MediaKind.IMAGE, "a.flp"),
        make_drive(Bus.FLOPPY, 1, 0, MediaKind.HOST, "/dev/fd0"),
        make_drive(Bus.FLOPPY, 2, 0, MediaKind.EMPTY),
    )
    p = plan(make_vm(floppies=drives))
    assert [(f.device, f.bus, f.target_dev, f.path) for f in p.floppies] == [
        ("floppy", "fdc", "fda", "/srv/iso/a.flp"),
        ("floppy", "fdc", "fdb", None),
    ]
    assert messages(p, "floppy1")
    assert messages(p, "floppy2")


def test_volume_name_is_file_system_safe_and_unique() -> None:
    assert volume_name("web01", 1, "qcow2") == "web01-disk1.qcow2"
    assert volume_name("web01", 2, "raw") == "web01-disk2.img"
    assert volume_name("../etc/passwd", 1, "qcow2") == "etc_passwd-disk1.qcow2"
    assert volume_name("Café ✓", 1, "qcow2") == "Caf-disk1.qcow2"
    assert volume_name("-rf", 1, "qcow2") == "rf-disk1.qcow2"
    assert volume_name("✓✓", 1, "qcow2") == "vm-disk1.qcow2"
    long = volume_name("x" * 300, 12, "qcow2")
    assert len(long.encode()) <= 255
    names = {volume_name("same name", i, "qcow2") for i in range(1, 30)}
    assert len(names) == 29


# --- network ------------------------------------------------------------------


def test_every_nic_with_mac_and_mapping() -> None:
    opts = replace(OPTS, networks=(("VM Network", "prod"),), bridges=(("DMZ", "br-dmz"),))
    p = plan(full_vm(), opts)
    got = [(n.source.index, n.mac, n.kind, n.target, n.model, n.link_up) for n in p.nics]
    assert got == [
        (0, "00:50:56:aa:bb:01", "network", "prod", "e1000", True),
        (1, "00:0c:29:12:34:56", "bridge", "br-dmz", "e1000e", True),
        (2, "00:50:56:aa:bb:03", "network", "default", "e1000", False),
        (3, "02:00:00:00:00:04", "network", "default", "e1000", True),
    ]
    assert any("Backup LAN" in m for m in messages(p, "ethernet2"))
    assert any("vmnet8" in m for m in messages(p, "ethernet3"))
    assert not [m for m in messages(p, "ethernet1") if "mapping" in m]


def test_custom_vnet_is_the_network_name_for_mapping() -> None:
    nic = make_nic(0, "00:50:56:00:00:01", None, connection_type="custom", vnet="/dev/vmnet8")
    p = plan(make_vm(nics=(nic,)), replace(OPTS, networks=(("vmnet8", "natnet"),)))
    assert (p.nics[0].kind, p.nics[0].target) == ("network", "natnet")


def test_nics_in_ethernet_order_and_default_network_option() -> None:
    nics = (make_nic(3, "00:50:56:00:00:03"), make_nic(0, "00:50:56:00:00:00"))
    p = plan(make_vm(nics=nics), replace(OPTS, default_network="lan"))
    assert [n.source.index for n in p.nics] == [0, 3]
    assert {n.target for n in p.nics} == {"lan"}


@pytest.mark.parametrize(
    ("source", "caps_model", "expected"),
    [
        ("vmxnet3", "e1000", "e1000"),
        ("vlance", "e1000", "e1000"),
        ("vmxnet", "rtl8139", "rtl8139"),
        ("e1000e", "e1000", "e1000e"),
        ("e1000", "rtl8139", "e1000"),
        ("vmxnet3", "virtio", "virtio"),
        ("e1000e", "virtio", "virtio"),
    ],
)
def test_nic_model(source: str, caps_model: str, expected: str) -> None:
    nic = make_nic(0, "00:50:56:00:00:01", model=source)
    p = plan(make_vm(nics=(nic,)), caps=replace(CAPS, nic_model=caps_model))
    assert p.nics[0].model == expected


def test_missing_or_multicast_mac_left_to_libvirt_with_note() -> None:
    nics = (make_nic(0, None), make_nic(1, "01:00:5e:00:00:01"))
    p = plan(make_vm(nics=nics))
    assert [n.mac for n in p.nics] == [None, None]
    assert messages(p, "ethernet0") and messages(p, "ethernet1")


# --- serial and parallel ------------------------------------------------------------


def test_serial_ports() -> None:
    p = plan(full_vm())
    got = [(s.source.index, s.kind, s.path, s.host, s.port, s.mode, s.protocol) for s in p.serials]
    assert got == [
        (0, "file", "/var/log/libvirt/qemu/Web_Front_01_more-serial0.log", None, None, None, None),
        (1, "unix", f"/var/lib/libvirt/qemu/vm2kvm-{SRC_UUID}-serial1.sock", None, None, "bind", None),
        (2, "tcp", None, "0.0.0.0", 2345, "bind", "telnet"),
    ]
    assert messages(p, "serial0")  # file moved out of the source directory
    assert messages(p, "serial1")  # pipe in the source directory
    assert messages(p, "serial3")  # thinprint dropped


@pytest.mark.parametrize(
    ("port", "expected"),
    [
        (CharPort(0, PortKind.DEVICE, "/dev/ttyS0"), ("dev", "/dev/ttyS0", None, None, None, None)),
        (CharPort(0, PortKind.DEVICE, "COM1"), ("pty", None, None, None, None, None)),
        (
            CharPort(0, PortKind.PIPE, "/tmp/com1", pipe_server=False),
            ("unix", "/tmp/com1", None, None, "connect", None),
        ),
        (
            CharPort(0, PortKind.PIPE, r"\\.\pipe\com_1"),
            ("unix", f"/var/lib/libvirt/qemu/vm2kvm-{SRC_UUID}-serial0.sock", None, None, "bind", None),
        ),
        (
            CharPort(
                0, PortKind.NETWORK, "tcp://10.0.0.5:7000", PortEndpoint("tcp", "10.0.0.5", 7000, False)
            ),
            ("tcp", None, "10.0.0.5", 7000, "connect", "raw"),
        ),
        (
            CharPort(0, PortKind.NETWORK, "tcp6://:7001", PortEndpoint("tcp6", None, 7001, True)),
            ("tcp", None, "::", 7001, "bind", "raw"),
        ),
        (CharPort(0, PortKind.NETWORK, "telnet://vspc", None), ("pty", None, None, None, None, None)),
        (
            CharPort(0, PortKind.NETWORK, "tcp://:1", PortEndpoint("tcp", None, 1, False)),
            ("pty", None, None, None, None, None),
        ),
    ],
)
def test_serial_kinds(port: CharPort, expected: tuple[object, ...]) -> None:
    p = plan(make_vm(serials=(port,)))
    s = p.serials[0]
    assert (s.kind, s.path, s.host, s.port, s.mode, s.protocol) == expected


def test_serial_ports_beyond_com4_dropped() -> None:
    ports = tuple(CharPort(i, PortKind.FILE, f"s{i}.log") for i in (0, 3, 4))
    p = plan(make_vm(serials=ports))
    assert [s.source.index for s in p.serials] == [0, 3]
    assert messages(p, "serial4")


def test_parallel_ports() -> None:
    ports = (
        CharPort(0, PortKind.FILE, "printer.out"),
        CharPort(1, PortKind.DEVICE, "/dev/parport0"),
        CharPort(2, PortKind.PIPE, "/tmp/lpt"),
    )
    p = plan(make_vm(parallels=ports))
    assert [(x.device, x.kind, x.path) for x in p.parallels] == [
        ("parallel", "file", "/var/log/libvirt/qemu/web01-parallel0.log"),
        ("parallel", "dev", "/dev/parport0"),
    ]
    assert messages(p, "parallel2")


# --- video, sound, USB, console, extras ----------------------------------------------


@pytest.mark.parametrize(
    ("video", "model", "vram", "heads"),
    [
        (Video(vram_kib=12 * 1024, num_displays=2), "vga", 16384, 1),
        (Video(vram_kib=256), "vga", 1024, 1),
        (Video(vram_kib=None), "vga", 16384, 1),
        (Video(vram_kib=1024 * 1024), "vga", 262144, 1),
        (None, "vga", 16384, 1),
        (Video(vram_kib=8192, num_displays=2), "virtio", None, 2),
        (Video(vram_kib=65536, num_displays=3), "qxl", 65536, 3),
        (Video(vram_kib=65536), "cirrus", 16384, 1),
    ],
)
def test_video(video: Video | None, model: str, vram: int | None, heads: int) -> None:
    p = plan(make_vm(video=video), caps=replace(CAPS, video=model))
    assert (p.video_model, p.video_vram_kib, p.video_heads) == (model, vram, heads)


def test_video_3d_and_heads_noted() -> None:
    p = plan(full_vm())
    assert messages(p, "mks.enable3d")
    assert any("displays" in m for m in messages(p, "svga"))


@pytest.mark.parametrize(
    ("source", "machine", "expected"),
    [
        ("es1371", "q35", "es1370"),
        ("hdaudio", "q35", "ich9"),
        ("hdaudio", "pc", "ich6"),
        ("sb16", "q35", "sb16"),
        ("sb16", "pc", "sb16"),
        ("weird", "q35", "ich9"),
    ],
)
def test_sound(source: str, machine: str, expected: str) -> None:
    p = plan(make_vm(sound=Sound(model=source)), caps=replace(CAPS, machine=machine))
    assert p.sound_model == expected
    assert plan(make_vm()).sound_model is None


@pytest.mark.parametrize(
    ("usb", "model"),
    [
        (Usb(), None),
        (Usb(uhci=True), "piix3-uhci"),
        (Usb(uhci=True, ehci=True), "ich9-ehci1"),
        (Usb(uhci=True, ehci=True, xhci=True), "qemu-xhci"),
        (Usb(xhci=True), "qemu-xhci"),
    ],
)
def test_usb(usb: Usb, model: str | None) -> None:
    p = plan(make_vm(usb=usb))
    assert p.usb_model == model
    assert p.tablet is (model is not None)


def test_graphics_always_vnc() -> None:
    p = plan(full_vm())
    assert (p.graphics, p.vnc_port, p.vnc_keymap) == ("vnc", 5911, "de")
    assert messages(p, "RemoteDisplay.vnc.password")
    off = plan(make_vm())
    assert (off.graphics, off.vnc_port, off.vnc_keymap) == ("vnc", None, None)
    aliased = plan(make_vm(vnc=Vnc(enabled=True, keymap="us")))
    assert aliased.vnc_keymap == "en-us"
    odd = plan(make_vm(vnc=Vnc(enabled=True, port=443, keymap="klingon")))
    assert (odd.vnc_port, odd.vnc_keymap) == (None, None)
    assert messages(odd, "RemoteDisplay.vnc.port") and messages(odd, "RemoteDisplay.vnc.keyMap")


def test_caps_extras() -> None:
    p = plan(make_vm())
    assert (p.rng, p.balloon, p.guest_agent) == (False, False, False)
    caps = replace(CAPS, virtio_rng=True, balloon=True, guest_agent=True)
    q = plan(make_vm(), caps=caps)
    assert (q.rng, q.balloon, q.guest_agent) == (True, True, True)


def test_source_notes_come_first_and_all_are_kept() -> None:
    vm = full_vm()
    p = plan(vm)
    assert p.notes[: len(vm.notes)] == vm.notes
    assert len(p.notes) > len(vm.notes) + 10


def test_plan_is_deterministic() -> None:
    assert plan(full_vm()) == plan(full_vm())


def test_libosinfo_id_from_inspection_before_vmware_guest_os() -> None:
    vm = make_vm(guest_os="debian10-64")
    assert plan(vm).os_id == "http://debian.org/debian/10"
    converted = replace(CAPS, os_id="http://debian.org/debian/12")
    assert plan(vm, caps=converted).os_id == "http://debian.org/debian/12"
    assert plan(make_vm(guest_os="other-64")).os_id is None
