"""The OVF reader: real-world descriptors (vSphere, ovftool from Workstation, VirtualBox) to ``SourceVM``.

Pure: the disks are given by a fake loader, except in the golden-file tests,
which read ``tests/data/ovf/<case>.ovf`` with ``load_source`` (the disk files
are absent, as for the VMX captures) and compare the domain XML with
``<case>.xml`` (``--regenerate`` rewrites them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.core.domainxml.test_domainxml import define_everywhere
from tests.helpers.golden import check_golden
from vm2kvmd.core.domainxml import render_domain_xml
from vm2kvmd.core.hardware.model import Bus, DiskChain, DiskLayer, Extent, Firmware, MediaKind, SourceVM
from vm2kvmd.core.ovf.envelope import OvfFile, parse_ovf, parse_units
from vm2kvmd.core.ovf.guest import guest_os_from_vim
from vm2kvmd.core.ovf.hardware import OvfDiskLoader, build_source_vm
from vm2kvmd.core.planning.guestcaps import GuestCaps
from vm2kvmd.core.planning.mapping import plan_domain
from vm2kvmd.core.planning.plan import PlanOptions
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.sources import load_source

DATA = Path(__file__).resolve().parents[2] / "data" / "ovf"
GOLDEN_DIR = "/golden/ovf"
CASES = sorted(DATA.glob("*.ovf"))
GiB = 1 << 30


def fake_disks(size: int | None = None) -> tuple[OvfDiskLoader, list[str]]:
    """A loader giving a one-layer chain per file (``size`` or its ovf:size), and the hrefs it was asked."""
    asked: list[str] = []

    def load(file: OvfFile, key: str) -> DiskChain:
        asked.append(file.href)
        path = f"/pkg/{file.href}"
        sectors = (size or file.size or GiB) // 512
        ext = Extent("RW", sectors, "SPARSE", file.href, path)
        return DiskChain(
            (DiskLayer(path, "streamOptimized", 1, 0xFFFFFFFF, None, (ext,), True, None, sectors * 512),)
        )

    return load, asked


def missing(file: OvfFile, key: str) -> DiskChain:
    raise Vm2kvmError(ErrorCode.DISK_MISSING, f"no {file.href}", file="/pkg", key=key)


def read_case(name: str, load: OvfDiskLoader = missing) -> SourceVM:
    path = DATA / name
    return build_source_vm(parse_ovf(path.read_bytes(), str(path)), load, source_path=str(path))


def notes(vm: SourceVM) -> str:
    return "\n".join(str(n) for n in vm.notes)


# --- real-world descriptors ---------------------------------------------------------


def test_vsphere_export() -> None:
    load, asked = fake_disks()
    vm = read_case("vsphere-rhel7.ovf", load)
    assert asked == ["rhel7-app01-1.vmdk", "rhel7-app01-2.vmdk"]
    assert vm.display_name == "rhel7-app01"
    assert vm.annotation == "Payments API, app tier\nOwner: team-payments@example.com"
    assert vm.guest_os == "rhel7-64" and vm.is_64bit
    assert vm.hw_version == 13
    assert vm.firmware is Firmware.BIOS and not vm.secure_boot
    assert (vm.cpu.vcpus, vm.cpu.cores_per_socket) == (2, 1)
    assert vm.memory.size_mib == 4096
    assert [(c.bus, c.index, c.model, c.pci_slot) for c in vm.controllers] == [
        (Bus.SCSI, 0, "lsilogic", 16),
        (Bus.IDE, 0, None, None),
        (Bus.IDE, 1, None, None),
    ]
    assert [(d.address.key, d.file_name, d.mode, d.path) for d in vm.disks] == [
        ("scsi0:0", "rhel7-app01-1.vmdk", "persistent", "/pkg/rhel7-app01-1.vmdk"),
        ("scsi0:1", "rhel7-app01-2.vmdk", "persistent", "/pkg/rhel7-app01-2.vmdk"),
    ]
    assert [(c.address.key, c.kind, c.start_connected) for c in vm.cdroms] == [
        ("ide1:0", MediaKind.EMPTY, False)
    ]
    assert [f.address.key for f in vm.floppies] == ["floppy0"]
    assert [(n.index, n.model, n.mac, n.source_network, n.start_connected, n.pci_slot) for n in vm.nics] == [
        (0, "vmxnet3", None, "VM Network", True, 192),
        (1, "e1000", None, "Backup", False, 224),
    ]
    assert vm.video is not None and vm.video.vram_kib == 8192 and not vm.video.autodetect
    assert vm.sound is None and not vm.usb.present
    assert vm.uuid_bios is None
    text = notes(vm)
    assert "no BIOS UUID" in text
    assert "Item[rasd:InstanceID='12'] (Network adapter 1): no MAC address" in text
    assert (
        "Item[rasd:InstanceID='12'] (Network adapter 1): settings not carried over: wakeOnLanEnabled=true"
        in text
    )
    assert "Item[rasd:InstanceID='7'] (VirtualVMCIDevice): VMCI device dropped" in text
    assert "VirtualHardwareSection/vmw:Config: settings not carried over: cpuHotAddEnabled=false" in text
    # The capacity in the DiskSection (40 GiB) differs from the fake file: noted, the file wins.
    assert "gives a capacity of 42949672960 bytes" in text


def test_vsphere_efi_export_with_extra_config() -> None:
    load, _ = fake_disks()
    vm = read_case("vsphere-win2019-efi.ovf", load)
    assert vm.display_name == "WIN-DC01"
    assert vm.guest_os == "windows2019srv-64"
    assert vm.hw_version == 19
    assert vm.firmware is Firmware.EFI and vm.secure_boot
    assert (vm.cpu.vcpus, vm.cpu.cores_per_socket) == (4, 2)
    assert (vm.memory.size_mib, vm.memory.reservation_mib, vm.memory.pinned) == (8192, 8192, True)
    assert vm.uuid_bios == "421a5c3e-9b1f-2d4c-8a11-223344556677"
    assert vm.vc_uuid == "501a8e21-6f4d-c29a-0b7e-135521c4aa90"
    # vm.genid/vm.genidX read as the VMX reader reads them (little-endian halves, GUID order).
    assert vm.genid == "8133d2cd-5566-a9bd-0484-2ef5455e0135"
    assert [(c.bus, c.model) for c in vm.controllers] == [
        (Bus.SCSI, "pvscsi"),
        (Bus.SATA, None),
        (Bus.NVME, None),
    ]
    assert [(d.address.key, d.mode) for d in vm.disks] == [
        ("scsi0:0", "persistent"),
        ("nvme0:0", "independent-persistent"),
    ]
    assert [c.address.key for c in vm.cdroms] == ["sata0:0"]
    assert [(n.model, n.mac, n.source_network) for n in vm.nics] == [
        ("vmxnet3", "00:50:56:9a:3c:01", "Prod-VLAN120"),
        ("e1000e", "00:50:56:9a:3c:02", "Mgmt"),
    ]
    assert vm.usb.xhci and not vm.usb.uhci
    assert vm.video is not None and vm.video.vram_kib == 16384
    text = notes(vm)
    assert "vmw:ExtraConfig: VMX settings not used: svga.autodetect, pciBridge0.present" in text
    assert "vmw:ExtraConfig[nvram]: the EFI variable store (nvram) is not carried over" in text
    assert "uuid.bios" not in text.split("not used:")[1]


def test_workstation_export_by_ovftool() -> None:
    load, _ = fake_disks(20 * GiB)
    vm = read_case("ws-sles11sp1.ovf", load)
    assert vm.display_name == "SLES 11 SP1"
    assert vm.guest_os == "sles11-64"
    assert vm.hw_version == 7
    assert vm.memory.size_mib == 1024 and vm.cpu.vcpus == 1
    assert [d.file_name for d in vm.disks] == ["SLES 11 SP1-disk1.vmdk"]
    assert [c.address.key for c in vm.cdroms] == ["ide1:0"]
    # ovftool writes Workstation's connection types as network names: mapped like a VMX's.
    assert [(n.model, n.connection_type, n.network_name, n.source_network) for n in vm.nics] == [
        ("e1000", "nat", None, "nat"),
        ("vlance", "hostonly", None, "hostonly"),
    ]
    assert vm.sound is not None and vm.sound.model == "es1371"
    assert vm.usb.uhci and vm.usb.ehci and not vm.usb.xhci
    assert "capacity" not in notes(vm)  # 20 GiB, as the file


def test_virtualbox_export() -> None:
    load, _ = fake_disks()
    vm = read_case("vbox-debian11.ovf", load)
    assert vm.display_name == "debian11"
    assert vm.annotation == "CI build host"
    assert vm.guest_os == "debian-64"
    assert vm.hw_version is None
    assert vm.memory.size_mib == 2048  # "MegaBytes"
    assert [d.address.key for d in vm.disks] == ["sata0:0"]  # HostResource without "ovf:"
    assert [n.mac for n in vm.nics] == ["08:00:27:a1:b2:c3"]
    assert vm.sound is not None and vm.sound.model == "es1371"  # ResourceType 35
    assert "guest OS 'debian-64' from the CIM OS type 96 (Debian_64)" in notes(vm)


def test_missing_disks_are_recorded_not_raised() -> None:
    vm = read_case("vsphere-rhel7.ovf")
    assert [d.problem_code for d in vm.disks] == [ErrorCode.DISK_MISSING] * 2
    assert all(d.chain is None and d.problem for d in vm.disks)


@pytest.mark.parametrize("ovf", CASES, ids=[p.stem for p in CASES])
def test_golden(ovf: Path, regenerate: bool, libvirt_conn: Any) -> None:
    vm = load_source(str(ovf))
    opts = PlanOptions(
        target_dir="/var/lib/libvirt/images",
        new_uuid="00000000-0000-4000-8000-000000000001",
        networks=(("VM Network", "default"),),
    )
    xml = render_domain_xml(plan_domain(vm, opts, GuestCaps.unconverted())).replace(str(DATA), GOLDEN_DIR)
    golden = ovf.with_suffix(".xml")
    check_golden(golden, xml, regenerate=regenerate, test_file=__file__)
    define_everywhere(libvirt_conn, xml)


# --- hand-made descriptors ------------------------------------------------------------

NS = (
    'xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" '
    'xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" '
    'xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" '
    'xmlns:vmw="http://www.vmware.com/schema/ovf"'
)
CPU = (
    "<Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType>"
    "<rasd:VirtualQuantity>{vcpus}</rasd:VirtualQuantity>{cores}</Item>"
)
MEM = (
    "<Item><rasd:AllocationUnits>{units}</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID>"
    "<rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>{memory}</rasd:VirtualQuantity></Item>"
)
SCSI = (
    "<Item><rasd:Address>0</rasd:Address><rasd:InstanceID>3</rasd:InstanceID>"
    "<rasd:ResourceSubType>lsilogic</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>"
)
DISK = (
    "<Item><rasd:AddressOnParent>{unit}</rasd:AddressOnParent>"
    "<rasd:ElementName>Hard disk {n}</rasd:ElementName>"
    "<rasd:HostResource>{ref}</rasd:HostResource><rasd:InstanceID>{iid}</rasd:InstanceID>"
    "<rasd:Parent>{parent}</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>"
)
FILE = '<File ovf:href="d{n}.vmdk" ovf:id="file{n}"{attrs}/>'
DISKDEF = (
    '<Disk ovf:capacity="{cap}" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk{n}" {attrs}/>'
)


def disk_item(
    n: int = 1, *, unit: str = "0", parent: str = "3", ref: str | None = None, iid: int | None = None
) -> str:
    return DISK.format(n=n, unit=unit, parent=parent, ref=ref or f"ovf:/disk/vmdisk{n}", iid=iid or 9 + n)


def envelope(
    items: str | None = None,
    *,
    files: str | None = None,
    disks: str | None = None,
    vcpus: str = "2",
    cores: str = "",
    memory: str = "512",
    units: str = "byte * 2^20",
    hardware: str = "",
    system: str = "",
    sections: str = "",
    root: str = f"<Envelope {NS}>",
    os_section: str = '<OperatingSystemSection ovf:id="101" vmw:osType="debian10_64Guest"/>',
) -> bytes:
    items = SCSI + disk_item() if items is None else items
    files = FILE.format(n=1, attrs="") if files is None else files
    disks = DISKDEF.format(n=1, cap=64, attrs='ovf:fileRef="file1"') if disks is None else disks
    cpu = CPU.format(vcpus=vcpus, cores=cores)
    mem = MEM.format(units=units, memory=memory)
    return (
        f'<?xml version="1.0"?>{root}<References>{files}</References>'
        f"<DiskSection><Info>disks</Info>{disks}</DiskSection>{sections}"
        f'<VirtualSystem ovf:id="t"><Info>vm</Info><Name>t</Name>{os_section}{system}'
        f"<VirtualHardwareSection><Info>hw</Info><System><vssd:VirtualSystemType>vmx-14</vssd:VirtualSystemType>"
        f"</System>{cpu}{mem}{items}{hardware}</VirtualHardwareSection></VirtualSystem></Envelope>"
    ).encode()


def build(data: bytes, load: OvfDiskLoader | None = None) -> SourceVM:
    return build_source_vm(
        parse_ovf(data, "/pkg/t.ovf"), load or fake_disks(64 << 20)[0], source_path="/pkg/t.ovf"
    )


def test_minimal_envelope() -> None:
    vm = build(envelope())
    assert vm.display_name == "t" and vm.guest_os == "debian10-64" and vm.hw_version == 14
    assert [d.address.key for d in vm.disks] == ["scsi0:0"]
    assert "capacity" not in notes(vm)


BAD: list[tuple[str, bytes, ErrorCode, tuple[str, ...]]] = [
    ("not XML", b"displayName = 'x'\n", ErrorCode.INVALID_SOURCE, ("not an XML document",)),
    ("truncated XML", envelope()[:300], ErrorCode.INVALID_SOURCE, ("not an XML document",)),
    ("empty", b"", ErrorCode.INVALID_SOURCE, ("XML",)),
    ("other XML", b"<domain type='kvm'/>", ErrorCode.INVALID_SOURCE, ("<domain>", "not an OVF")),
    (
        "OVF 2.0",
        envelope(root=f"<Envelope {NS.replace('envelope/1', 'envelope/2')}>"),
        ErrorCode.INVALID_SOURCE,
        ("envelope/2", "OVF 2.0"),
    ),
    (
        "OVF 0.9",
        b'<Envelope xmlns="http://www.vmware.com/schema/ovf/1/envelope"/>',
        ErrorCode.INVALID_SOURCE,
        ("0.9",),
    ),
    ("no namespace", b"<Envelope><VirtualSystem/></Envelope>", ErrorCode.INVALID_SOURCE, ("(none)",)),
    (
        "DOCTYPE with entities",
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">]><Envelope/>',
        ErrorCode.INVALID_SOURCE,
        ("DOCTYPE",),
    ),
    (
        "no VirtualSystem",
        f"<Envelope {NS}><References/></Envelope>".encode(),
        ErrorCode.INVALID_SOURCE,
        ("no VirtualSystem",),
    ),
    (
        "vApp of two VMs",
        f'<Envelope {NS}><VirtualSystemCollection ovf:id="app"><VirtualSystem ovf:id="web"/>'
        f'<VirtualSystem ovf:id="db"/></VirtualSystemCollection></Envelope>'.encode(),
        ErrorCode.INVALID_SOURCE,
        ("2 virtual machines (web, db)", "one VM at a time"),
    ),
    (
        "HostResource to an unknown disk",
        envelope(SCSI + disk_item(ref="ovf:/disk/vmdisk9")),
        ErrorCode.INVALID_SOURCE,
        ("ovf:/disk/vmdisk9 names no Disk", "Item[rasd:InstanceID='10']/rasd:HostResource"),
    ),
    (
        "fileRef to an unknown file",
        envelope(disks=DISKDEF.format(n=1, cap=64, attrs='ovf:fileRef="file7"')),
        ErrorCode.INVALID_SOURCE,
        ("'file7' names no File", "DiskSection/Disk[@ovf:diskId='vmdisk1']"),
    ),
    (
        "HostResource that is not a reference",
        envelope(SCSI + disk_item(ref="/vmfs/volumes/ds1/x.vmdk")),
        ErrorCode.INVALID_VALUE,
        ("rasd:HostResource", "/vmfs/volumes/ds1/x.vmdk"),
    ),
    (
        "disk without HostResource",
        envelope(SCSI + disk_item().replace("<rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>", "")),
        ErrorCode.INVALID_SOURCE,
        ("no rasd:HostResource", "Item[rasd:InstanceID='10']"),
    ),
    (
        "Parent naming no controller",
        envelope(SCSI + disk_item(parent="42")),
        ErrorCode.INVALID_SOURCE,
        ("rasd:Parent '42'",),
    ),
    (
        "Item without InstanceID",
        envelope(SCSI + "<Item><rasd:ResourceType>10</rasd:ResourceType></Item>"),
        ErrorCode.INVALID_SOURCE,
        ("no rasd:InstanceID",),
    ),
    (
        "two Items with one InstanceID",
        envelope(SCSI + disk_item(iid=3)),
        ErrorCode.INVALID_SOURCE,
        ("InstanceID '3' is used by two Items",),
    ),
    (
        "huge capacity",
        envelope(disks=DISKDEF.format(n=1, cap=10**12, attrs='ovf:fileRef="file1"')),
        ErrorCode.INVALID_VALUE,
        ("DiskSection/Disk[@ovf:diskId='vmdisk1']/@ovf:capacity", "beyond any real disk"),
    ),
    (
        "absurd capacity",
        envelope(disks=DISKDEF.format(n=1, cap="9" * 40, attrs='ovf:fileRef="file1"')),
        ErrorCode.INVALID_VALUE,
        ("ovf:capacity", "far too large"),
    ),
    (
        "negative capacity",
        envelope(disks=DISKDEF.format(n=1, cap="-1", attrs='ovf:fileRef="file1"')),
        ErrorCode.INVALID_VALUE,
        ("ovf:capacity", "not a whole number"),
    ),
    (
        "capacity units",
        envelope(
            disks='<Disk ovf:capacity="1" ovf:capacityAllocationUnits="furlongs" ovf:diskId="vmdisk1" '
            'ovf:fileRef="file1"/>'
        ),
        ErrorCode.INVALID_VALUE,
        ("ovf:capacityAllocationUnits", "furlongs"),
    ),
    (
        "huge memory",
        envelope(memory="99999999"),
        ErrorCode.INVALID_VALUE,
        ("Item[rasd:InstanceID='2']/rasd:VirtualQuantity", "24 TiB"),
    ),
    ("memory in words", envelope(memory="lots"), ErrorCode.INVALID_VALUE, ("rasd:VirtualQuantity", "'lots'")),
    ("memory units", envelope(units="byte * 2^99"), ErrorCode.INVALID_VALUE, ("rasd:AllocationUnits",)),
    ("zero memory", envelope(memory="0"), ErrorCode.INVALID_VALUE, ("at least 1 MiB",)),
    ("no vCPU", envelope(vcpus="0"), ErrorCode.INVALID_VALUE, ("Item[rasd:InstanceID='1']", "at least 1")),
    ("too many vCPUs", envelope(vcpus="4096"), ErrorCode.INVALID_VALUE, ("larger than the 768 allowed",)),
    (
        "firmware",
        envelope(hardware='<vmw:Config vmw:key="firmware" vmw:value="coreboot"/>'),
        ErrorCode.INVALID_VALUE,
        ("vmw:Config[firmware]", "coreboot"),
    ),
    (
        "BIOS UUID",
        envelope(hardware='<vmw:ExtraConfig vmw:key="uuid.bios" vmw:value="56 4d zz"/>'),
        ErrorCode.INVALID_VALUE,
        ("vmw:ExtraConfig[uuid.bios]", "is not a UUID", "OVF descriptor"),
    ),
    (
        "File size",
        envelope(files=FILE.format(n=1, attrs=' ovf:size="many"')),
        ErrorCode.INVALID_VALUE,
        ("References/File[@ovf:id='file1']/@ovf:size",),
    ),
    (
        "duplicate File id",
        envelope(files=FILE.format(n=1, attrs="") * 2),
        ErrorCode.INVALID_SOURCE,
        ("File id 'file1' appears twice",),
    ),
]


@pytest.mark.parametrize(("data", "code", "mentions"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_descriptors(data: bytes, code: ErrorCode, mentions: tuple[str, ...]) -> None:
    with pytest.raises(Vm2kvmError) as caught:
        build(data)
    err = caught.value
    assert err.code is code, err.describe()
    text = err.describe()
    assert "/pkg/t.ovf" in text
    for word in mentions:
        assert word in text, text
    assert "\n" not in text


def test_a_huge_descriptor_is_refused_before_parsing() -> None:
    data = envelope(system="<!--" + "x" * (8 << 20) + "-->")
    with pytest.raises(Vm2kvmError, match="larger than the 8388608 allowed") as caught:
        parse_ovf(data, "/pkg/t.ovf")
    assert caught.value.code is ErrorCode.INVALID_SOURCE


def test_entities_are_never_expanded() -> None:
    data = envelope(system="<Annotation>&xxe;</Annotation>").replace(
        b'<?xml version="1.0"?>',
        b'<?xml version="1.0"?><!DOCTYPE Envelope [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
    )
    with pytest.raises(Vm2kvmError, match="DOCTYPE"):
        parse_ovf(data, "/pkg/t.ovf")


# --- disks whose content cannot be read ----------------------------------------------


@pytest.mark.parametrize(
    ("files", "disks", "mentions"),
    [
        (
            FILE.format(n=1, attrs=' ovf:compression="bzip2"'),
            None,
            ("ovf:compression='bzip2'", "References/File[@ovf:id='file1']", "re-export without compression"),
        ),
        (FILE.format(n=1, attrs=' ovf:chunkSize="1073741824"'), None, ("chunks of 1073741824 bytes",)),
        (None, DISKDEF.format(n=1, cap=64, attrs=""), ("no ovf:fileRef", "blank disk")),
        (
            None,
            DISKDEF.format(
                n=1, cap=64, attrs='ovf:fileRef="file1" ovf:format="http://www.gnome.org/~markmc/qcow"'
            ),
            ("is not VMDK",),
        ),
        (
            None,
            DISKDEF.format(n=1, cap=64, attrs='ovf:fileRef="file1" ovf:parentRef="vmdisk0"'),
            ("delta disks",),
        ),
    ],
    ids=["bzip2 member", "chunked", "blank disk", "qcow2 disk", "delta disk"],
)
def test_unreadable_disks_are_disk_problems(
    files: str | None, disks: str | None, mentions: tuple[str, ...]
) -> None:
    load, asked = fake_disks()
    vm = build(envelope(files=files, disks=disks), load)
    assert asked == []  # refused before any file is opened
    (disk,) = vm.disks
    assert disk.chain is None and disk.problem_code is ErrorCode.UNSUPPORTED_DISK
    for word in mentions:
        assert disk.problem and word in disk.problem, disk.problem


def test_identity_compression_is_no_compression() -> None:
    vm = build(envelope(files=FILE.format(n=1, attrs=' ovf:compression="identity"')))
    assert vm.disks[0].chain is not None


def test_a_loader_error_is_recorded_on_the_disk() -> None:
    vm = build(envelope(), missing)
    assert vm.disks[0].problem_code is ErrorCode.DISK_MISSING
    assert vm.disks[0].problem == "/pkg: key Item[rasd:InstanceID='10']: no d1.vmdk"


# --- storage addressing ----------------------------------------------------------


def test_units_that_collide_or_are_reserved_move_to_free_ones() -> None:
    items = (
        SCSI
        + disk_item(1, unit="7")
        + disk_item(2, unit="0")
        + disk_item(3, unit="0")
        + disk_item(4, unit="")
    )
    files = "".join(FILE.format(n=n, attrs="") for n in range(1, 5))
    disks = "".join(DISKDEF.format(n=n, cap=64, attrs=f'ovf:fileRef="file{n}"') for n in range(1, 5))
    vm = build(envelope(items, files=files, disks=disks))
    assert [(d.file_name, d.address.key) for d in vm.disks] == [
        ("d1.vmdk", "scsi0:0"),
        ("d2.vmdk", "scsi0:1"),
        ("d3.vmdk", "scsi0:2"),
        ("d4.vmdk", "scsi0:3"),
    ]
    text = notes(vm)
    assert "Item[rasd:InstanceID='10'] (Hard disk 1): unit 7 taken or out of range; unit 0 used" in text
    assert "Item[rasd:InstanceID='12'] (Hard disk 3): unit 0 taken or out of range; unit 2 used" in text


def test_disks_are_ordered_like_the_vmx_reader_orders_them() -> None:
    sata = (
        "<Item><rasd:Address>0</rasd:Address><rasd:InstanceID>4</rasd:InstanceID>"
        "<rasd:ResourceSubType>AHCI</rasd:ResourceSubType><rasd:ResourceType>20</rasd:ResourceType></Item>"
    )
    items = SCSI + sata + disk_item(1, parent="4") + disk_item(2, parent="3", unit="1")
    files = "".join(FILE.format(n=n, attrs="") for n in (1, 2))
    disks = "".join(DISKDEF.format(n=n, cap=64, attrs=f'ovf:fileRef="file{n}"') for n in (1, 2))
    vm = build(envelope(items, files=files, disks=disks))
    assert [d.address.key for d in vm.disks] == ["scsi0:1", "sata0:0"]


def test_a_disk_without_parent_goes_on_the_first_controller() -> None:
    item = disk_item().replace("<rasd:Parent>3</rasd:Parent>", "")
    vm = build(envelope(SCSI + item))
    assert vm.disks[0].address.key == "scsi0:0"
    assert "no rasd:Parent; placed on scsi0" in notes(vm)
    vm = build(envelope(item))
    assert vm.disks[0].address.key == "sata0:0"


def test_unknown_controller_kinds_are_kept_with_a_note() -> None:
    odd = SCSI.replace("lsilogic", "megaraid") + disk_item()
    vm = build(envelope(odd))
    assert vm.controllers[0].model == "lsilogic"
    assert "SCSI controller type 'megaraid' unknown; lsilogic assumed" in notes(vm)


# --- other hardware ----------------------------------------------------------------


def test_cores_per_socket_that_do_not_divide_become_one() -> None:
    vm = build(envelope(vcpus="6", cores='<vmw:CoresPerSocket ovf:required="false">4</vmw:CoresPerSocket>'))
    assert (vm.cpu.vcpus, vm.cpu.cores_per_socket) == (6, 1)
    assert "4 cores per socket do not divide 6 vCPUs" in notes(vm)


@pytest.mark.parametrize(
    ("units", "memory", "mib"),
    [
        ("byte * 2^20", "2048", 2048),
        ("byte * 2^30", "4", 4096),
        ("MegaBytes", "768", 768),
        ("byte", "1073741824", 1024),
    ],
)
def test_memory_units(units: str, memory: str, mib: int) -> None:
    assert build(envelope(units=units, memory=memory)).memory.size_mib == mib


def test_memory_that_is_not_whole_mib_is_rounded_up() -> None:
    vm = build(envelope(units="byte * 2^10", memory="1048577"))
    assert vm.memory.size_mib == 1025
    assert "rounded up to 1025 MiB" in notes(vm)


def test_parse_units() -> None:
    assert parse_units("byte * 2^20", "f", "k", default=1) == 1 << 20
    assert parse_units("byte*10^3", "f", "k", default=1) == 1000
    assert parse_units("  bytes ", "f", "k", default=7) == 1
    assert parse_units(None, "f", "k", default=7) == 7
    assert parse_units("GigaBytes", "f", "k", default=1) == 1 << 30


@pytest.mark.parametrize(
    ("vim", "vmx"),
    [
        ("rhel7_64Guest", "rhel7-64"),
        ("windows9_64Guest", "windows9-64"),
        ("windows9Server64Guest", "windows9srv-64"),
        ("winLonghorn64Guest", "longhorn-64"),
        ("winXPProGuest", "winxppro"),
        ("otherLinux64Guest", "otherlinux-64"),
        ("otherGuest64", "other-64"),
        ("otherGuest", "other"),
        ("centos64Guest", "centos-64"),
        ("windows2019srvNext_64Guest", "windows2019srvnext-64"),
        ("not a guest", None),
    ],
)
def test_guest_ids(vim: str, vmx: str | None) -> None:
    assert guest_os_from_vim(vim) == vmx


def test_no_guest_os_at_all() -> None:
    vm = build(envelope(os_section=""))
    assert vm.guest_os == "other"
    assert "guest OS not recognised; 'other' assumed" in notes(vm)


@pytest.mark.parametrize(
    ("address", "mac"),
    [
        ("00:50:56:AB:CD:EF", "00:50:56:ab:cd:ef"),
        ("080027A1B2C3", "08:00:27:a1:b2:c3"),
        ("00-0c-29-01-02-03", "00:0c:29:01:02:03"),
        ("bogus", None),
        ("00:00:00:00:00:00", "00:00:00:00:00:00"),  # NSX: assigned at power-on; planning gives one
    ],
)
def test_nic_macs(address: str, mac: str | None) -> None:
    nic = (
        f"<Item><rasd:Address>{address}</rasd:Address><rasd:Connection>LAN</rasd:Connection>"
        "<rasd:InstanceID>20</rasd:InstanceID><rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>"
        "<rasd:ResourceType>10</rasd:ResourceType></Item>"
    )
    vm = build(envelope(SCSI + disk_item() + nic))
    assert vm.nics[0].mac == mac
    if mac is None:
        assert "'bogus' is not a MAC address" in notes(vm)


def test_deployment_options_choose_the_items() -> None:
    big = MEM.format(units="byte * 2^20", memory="16384").replace(
        "<Item>", '<Item ovf:configuration="large">'
    )
    big = big.replace("<rasd:InstanceID>2</rasd:InstanceID>", "<rasd:InstanceID>22</rasd:InstanceID>")
    small_only = '<Item ovf:configuration="small">'
    options = (
        "<DeploymentOptionSection><Info>sizes</Info>"
        '<Configuration ovf:id="small"><Label>Small</Label></Configuration>'
        '<Configuration ovf:default="true" ovf:id="large"><Label>Large</Label></Configuration>'
        "</DeploymentOptionSection>"
    )
    data = envelope(SCSI + disk_item() + big, sections=options)
    data = data.replace(b"<Item><rasd:AllocationUnits>", small_only.encode() + b"<rasd:AllocationUnits>", 1)
    vm = build(data)
    assert vm.memory.size_mib == 16384
    assert "deployment option 'large' used (the descriptor's default); also offered: small" in notes(vm)


def test_ranges_are_not_hardware() -> None:
    bound = MEM.format(units="byte * 2^20", memory="65536").replace("<Item>", '<Item ovf:bound="max">')
    bound = bound.replace("<rasd:InstanceID>2</rasd:InstanceID>", "<rasd:InstanceID>30</rasd:InstanceID>")
    assert build(envelope(SCSI + disk_item() + bound)).memory.size_mib == 512


def test_a_vapp_with_one_vm_is_that_vm() -> None:
    data = envelope().replace(
        b"<VirtualSystem ", b'<VirtualSystemCollection ovf:id="app"><Info>x</Info><VirtualSystem '
    )
    data = data.replace(
        b"</VirtualSystem></Envelope>", b"</VirtualSystem></VirtualSystemCollection></Envelope>"
    )
    vm = build(data)
    assert vm.display_name == "t"
    assert "a vApp with one virtual machine" in notes(vm)


def test_vapp_properties_and_eula_are_noted() -> None:
    product = (
        '<ProductSection ovf:required="false"><Info>p</Info><Product>Appliance</Product>'
        '<Property ovf:key="guestinfo.ip" ovf:type="string" ovf:userConfigurable="true"/>'
        '<Property ovf:key="guestinfo.dns" ovf:type="string"/></ProductSection>'
        "<EulaSection><Info>licence</Info><License>Be nice.</License></EulaSection>"
    )
    text = notes(build(envelope(system=product)))
    assert "ProductSection: vApp properties are not passed to the guest" in text
    assert "guestinfo.dns, guestinfo.ip" in text
    assert "EulaSection" in text


def test_xenserver_uefi() -> None:
    other = (
        '<xenovf:VirtualSystemOtherConfigurationData xmlns:xenovf="http://schemas.citrix.com/ovf/envelope/1" '
        'Name="HVM_boot_params"><Value>order=dc;firmware=uefi</Value></xenovf:VirtualSystemOtherConfigurationData>'
        '<xenovf:VirtualSystemOtherConfigurationData xmlns:xenovf="http://schemas.citrix.com/ovf/envelope/1" '
        'Name="platform"><Value>nx=true</Value></xenovf:VirtualSystemOtherConfigurationData>'
    )
    vm = build(envelope(hardware=other))
    assert vm.firmware is Firmware.EFI
    assert "XenServer settings not used: platform" in notes(vm)


def test_secure_boot_without_efi_is_ignored() -> None:
    vm = build(envelope(hardware='<vmw:Config vmw:key="uefi.secureBoot.enabled" vmw:value="true"/>'))
    assert vm.firmware is Firmware.BIOS and not vm.secure_boot
    assert "secure boot needs EFI firmware" in notes(vm)


def test_vnc_from_extra_config() -> None:
    vnc = (
        '<vmw:ExtraConfig vmw:key="RemoteDisplay.vnc.enabled" vmw:value="TRUE"/>'
        '<vmw:ExtraConfig vmw:key="RemoteDisplay.vnc.port" vmw:value="5911"/>'
        '<vmw:ExtraConfig vmw:key="RemoteDisplay.vnc.password" vmw:value="secret"/>'
    )
    vm = build(envelope(hardware=vnc))
    assert vm.vnc is not None and vm.vnc.port == 5911 and vm.vnc.has_password
    assert "secret" not in repr(vm)


def test_serial_ports_and_unknown_devices_are_dropped_with_notes() -> None:
    extra = (
        "<Item><rasd:ElementName>serial0</rasd:ElementName><rasd:InstanceID>40</rasd:InstanceID>"
        "<rasd:ResourceType>21</rasd:ResourceType></Item>"
        "<Item><rasd:ElementName>tape</rasd:ElementName><rasd:InstanceID>41</rasd:InstanceID>"
        "<rasd:ResourceType>18</rasd:ResourceType></Item>"
    )
    text = notes(build(envelope(SCSI + disk_item() + extra)))
    assert "Item[rasd:InstanceID='40'] (serial0): serial port dropped" in text
    assert "Item[rasd:InstanceID='41'] (tape): device of ResourceType 18 (no subtype) dropped" in text


def test_memory_limits_and_unlimited() -> None:
    limited = MEM.format(units="byte * 2^20", memory="2048").replace(
        "<rasd:ResourceType>4",
        "<rasd:Limit>1024</rasd:Limit><rasd:Reservation>512</rasd:Reservation><rasd:ResourceType>4",
    )
    items = SCSI + disk_item()
    data = envelope(items, memory="1").replace(
        MEM.format(units="byte * 2^20", memory="1").encode(), limited.encode()
    )
    vm = build(data)
    assert (vm.memory.size_mib, vm.memory.limit_mib, vm.memory.reservation_mib) == (2048, 1024, 512)
    vm = build(data.replace(b"<rasd:Limit>1024<", b"<rasd:Limit>-1<"))
    assert vm.memory.limit_mib is None


def test_more_controllers_than_vmware_has_are_refused() -> None:
    scsi = "".join(SCSI.replace("<rasd:InstanceID>3<", f"<rasd:InstanceID>{30 + n}<") for n in range(5))
    with pytest.raises(Vm2kvmError, match="more than 4 SCSI controllers") as caught:
        build(envelope(scsi + disk_item(parent="30")))
    assert caught.value.code is ErrorCode.INVALID_SOURCE


def test_an_eleventh_nic_is_refused_naming_its_item() -> None:
    def nics(count: int) -> str:
        return "".join(
            f"<Item><rasd:ElementName>Network adapter {n}</rasd:ElementName>"
            f"<rasd:InstanceID>{100 + n}</rasd:InstanceID><rasd:ResourceSubType>E1000</rasd:ResourceSubType>"
            "<rasd:ResourceType>10</rasd:ResourceType></Item>"
            for n in range(1, count + 1)
        )

    assert len(build(envelope(SCSI + disk_item() + nics(10))).nics) == 10
    with pytest.raises(Vm2kvmError) as exc:
        build(envelope(SCSI + disk_item() + nics(11)))
    assert exc.value.code is ErrorCode.HARDWARE_LIMIT
    assert "Network adapter 11" in str(exc.value.key)
    assert "a VMware VM has at most 10 NICs" in exc.value.message
