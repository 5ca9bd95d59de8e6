"""DomainPlan -> domain XML: asserted by xpath, and accepted by real libvirt.

Every XML built here is defined in libvirt's test driver and in the test
libvirtd (``libvirt_conn``), which checks what the test driver does not
(firmware descriptors, floppy on q35, sound models, ISA port limits).  One slow
test also starts a domain under TCG, so QEMU itself takes the device set and
the guest-visible UUID of a clone.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import libvirt
import pytest
from lxml import etree

from testbed.services import remove_domain, unique_name
from tests.core.planning.test_mapping import (
    CAPS,
    NEW_UUID,
    OPTS,
    SRC_UUID,
    full_vm,
    make_disk,
    make_drive,
    make_vm,
    plan,
)
from vm2kvmd.constants import METADATA_NS
from vm2kvmd.core.domainxml import render_domain_xml
from vm2kvmd.core.domainxml.general import LIBOSINFO_NS
from vm2kvmd.core.hardware.model import (
    Bus,
    CharPort,
    MediaKind,
    Memory,
    PortEndpoint,
    PortKind,
    Sound,
    SourceVM,
    Usb,
    Video,
)
from vm2kvmd.core.planning.plan import DomainPlan, PlanOptions

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
NS = {"vm2kvm": METADATA_NS, "qemu": QEMU_NS, "libosinfo": LIBOSINFO_NS}


def parse(xml: str) -> etree._Element:
    return etree.fromstring(xml.encode())


def xp(root: etree._Element, path: str) -> list[Any]:
    result = root.xpath(path, namespaces=NS)
    assert isinstance(result, list)
    return result


def one(root: etree._Element, path: str) -> str:
    values = xp(root, path)
    assert len(values) == 1, (path, values)
    return str(values[0])


@contextlib.contextmanager
def defined(conn: Any, xml: str, *, keep_identity: bool = False) -> Iterator[Any]:
    """Define ``xml`` in ``conn`` and undefine it afterwards.

    Unless ``keep_identity``, name and UUID are replaced by fresh ones so runs
    going on in parallel against the same libvirtd never collide.
    """
    root = parse(xml)
    if not keep_identity:
        one_el = root.find("name")
        assert one_el is not None
        one_el.text = unique_name("xml")
        uuid_el = root.find("uuid")
        assert uuid_el is not None
        uuid_el.text = str(uuid.uuid4())
    dom = conn.defineXML(etree.tostring(root, encoding="unicode"))
    name = dom.name()
    try:
        yield dom
    finally:
        if conn.getURI().startswith("test"):
            dom.undefine()
        else:
            remove_domain(conn, name)


def define_everywhere(libvirt_conn: Any, xml: str) -> etree._Element:
    """Define in the test driver and the real libvirtd; return the real one's XML as libvirt sees it."""
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    test_conn = libvirt.open("test:///default")
    try:
        with defined(test_conn, xml):
            pass
    finally:
        test_conn.close()
    with defined(libvirt_conn, xml) as dom:
        return parse(dom.XMLDesc(0))


def render(
    vm: SourceVM, opts: PlanOptions = OPTS, **caps_changes: Any
) -> tuple[DomainPlan, etree._Element, str]:
    p = plan(vm, opts, replace(CAPS, **caps_changes))
    xml = render_domain_xml(p)
    return p, parse(xml), xml


# --- structure ------------------------------------------------------------------


def test_full_vm_xml(libvirt_conn: Any) -> None:
    opts = replace(OPTS, networks=(("VM Network", "default"),), bridges=(("DMZ", "br-dmz"),))
    p, root, xml = render(full_vm(), opts)

    assert one(root, "/domain/@type") == "kvm"
    assert one(root, "/domain/name/text()") == 'Web "Front" <01> & more'
    assert one(root, "/domain/uuid/text()") == SRC_UUID
    assert one(root, "/domain/genid/text()") == "2c4f8e1a-9b7d-4c3e-a5f6-0d1e2f3a4b5c"
    assert one(root, "/domain/title/text()") == 'Web "Front" <01> & more'
    assert one(root, "/domain/description/text()") == (
        "Migrated by vm2kvm from VMware VMX /srv/vmware/web01/web01.vmx.\n\nLine one\nLine <two> & 'three'"
    )
    assert (
        one(root, "/domain/metadata/libosinfo:libosinfo/libosinfo:os/@id") == "http://microsoft.com/win/2k16"
    )
    source = xp(root, "/domain/metadata/vm2kvm:source")[0]
    assert source.get("path") == "/srv/vmware/web01/web01.vmx"
    assert source.get("uuid") == SRC_UUID
    assert source.get("vc-uuid") == "5012a1b2-c3d4-e5f6-0718-293a4b5c6d7e"
    assert source.get("guest-os") == "windows9srv-64"
    assert one(root, "/domain/memory/text()") == "8192"
    assert one(root, "/domain/memory/@unit") == "MiB"
    assert xp(root, "/domain/memoryBacking/locked")
    assert one(root, "/domain/vcpu/text()") == "8"
    topo = xp(root, "/domain/cpu/topology")[0]
    assert (topo.get("sockets"), topo.get("cores"), topo.get("threads")) == ("2", "4", "1")
    assert one(root, "/domain/cpu/@mode") == "host-model"
    assert one(root, "/domain/clock/@offset") == "localtime"

    disks = xp(root, "/domain/devices/disk[@device='disk']")
    assert [d.find("target").get("dev") for d in disks] == ["sda", "sdb", "sdc"]
    assert [d.find("source").get("file") for d in disks] == [d.target_path for d in p.disks]
    assert [d.find("driver").get("type") for d in disks] == ["qcow2"] * 3
    assert xp(root, "/domain/devices/disk[target/@dev='sda']/boot/@order") == ["1"]
    assert len(xp(root, "/domain/devices/disk/boot")) == 1
    cdroms = xp(root, "/domain/devices/disk[@device='cdrom']")
    assert [c.find("target").get("dev") for c in cdroms] == ["sdd", "sde", "sdf", "sdg"]
    assert xp(root, "/domain/devices/disk[@device='cdrom']/source/@file") == ["/srv/iso/debian-12.iso"]
    assert all(c.find("readonly") is not None for c in cdroms)
    floppy = xp(root, "/domain/devices/disk[@device='floppy']")[0]
    assert (floppy.find("target").get("dev"), floppy.find("target").get("bus")) == ("fda", "fdc")
    assert floppy.find("source").get("file") == "/srv/iso/drivers.flp"
    targets = xp(root, "/domain/devices/disk/target/@dev")
    assert len(targets) == len(set(targets)) == 8

    nics = xp(root, "/domain/devices/interface")
    assert [(n.get("type"), n.find("mac").get("address")) for n in nics] == [
        ("network", "00:50:56:aa:bb:01"),
        ("bridge", "00:0c:29:12:34:56"),
        ("network", "00:50:56:aa:bb:03"),
        ("network", "02:00:00:00:00:04"),
    ]
    assert [n.find("source").get("network") or n.find("source").get("bridge") for n in nics] == [
        "default",
        "br-dmz",
        "default",
        "default",
    ]
    assert xp(root, "/domain/devices/interface[mac/@address='00:50:56:aa:bb:03']/link/@state") == ["down"]
    assert xp(root, "/domain/devices/interface/model/@type") == ["e1000", "e1000e", "e1000", "e1000"]

    assert xp(root, "/domain/devices/serial/@type") == ["file", "unix", "tcp"]
    assert xp(root, "/domain/devices/serial/target/@port") == ["0", "1", "2"]
    assert one(root, "/domain/devices/serial[@type='tcp']/source/@service") == "2345"
    assert one(root, "/domain/devices/serial[@type='tcp']/protocol/@type") == "telnet"
    assert one(root, "/domain/devices/console/@type") == "file"
    assert one(root, "/domain/devices/console/source/@path") == p.serials[0].path
    assert (
        one(root, "/domain/devices/parallel/source/@path")
        == "/var/log/libvirt/qemu/Web_Front_01_more-parallel0.log"
    )

    assert xp(root, "/domain/devices/controller[@type='usb']/@model") == [
        "ich9-ehci1",
        "ich9-uhci1",
        "ich9-uhci2",
        "ich9-uhci3",
    ]
    assert xp(root, "/domain/devices/input[@type='tablet']/@bus") == ["usb"]
    graphics = xp(root, "/domain/devices/graphics")[0]
    assert (graphics.get("type"), graphics.get("port"), graphics.get("autoport"), graphics.get("keymap")) == (
        "vnc",
        "5911",
        "no",
        "de",
    )
    assert one(root, "/domain/devices/sound/@model") == "ich9"
    assert one(root, "/domain/devices/video/model/@type") == "vga"
    assert one(root, "/domain/devices/video/model/@vram") == "16384"
    assert one(root, "/domain/devices/memballoon/@model") == "none"
    assert not xp(root, "/domain/devices/rng")
    assert not xp(root, "//qemu:commandline")

    # libvirt keeps every identity-bearing value as we wrote it.
    seen = define_everywhere(libvirt_conn, xml)
    assert xp(seen, "/domain/devices/interface/mac/@address") == xp(
        root, "/domain/devices/interface/mac/@address"
    )
    assert xp(seen, "/domain/devices/disk/target/@dev") == targets
    assert one(seen, "/domain/genid/text()") == "2c4f8e1a-9b7d-4c3e-a5f6-0d1e2f3a4b5c"
    assert one(seen, "/domain/description/text()") == one(root, "/domain/description/text()")
    # virt-manager and cockpit-machines read the OS from what libvirt kept.
    assert (
        one(seen, "/domain/metadata/libosinfo:libosinfo/libosinfo:os/@id") == "http://microsoft.com/win/2k16"
    )


def test_uuid_taken_keeps_old_uuid_guest_visible(libvirt_conn: Any) -> None:
    _, root, xml = render(make_vm(), replace(OPTS, uuid_taken=True))
    assert one(root, "/domain/uuid/text()") == NEW_UUID
    assert xp(root, "/domain/qemu:commandline/qemu:arg/@value") == ["-smbios", f"type=1,uuid={SRC_UUID}"]
    assert not xp(root, "/domain/sysinfo")  # libvirt: "UUID mismatch between <uuid> and <sysinfo>"
    assert one(root, "/domain/metadata/vm2kvm:source/@uuid") == SRC_UUID
    seen = define_everywhere(libvirt_conn, xml)
    assert xp(seen, "/domain/qemu:commandline/qemu:arg/@value") == ["-smbios", f"type=1,uuid={SRC_UUID}"]


def test_efi_secure_boot(libvirt_conn: Any) -> None:
    _, root, xml = render(full_vm())
    assert one(root, "/domain/os/@firmware") == "efi"
    assert xp(root, "/domain/os/firmware/feature[@enabled='yes']/@name") == ["enrolled-keys", "secure-boot"]
    assert one(root, "/domain/features/smm/@state") == "on"
    assert not xp(root, "/domain/os/loader")  # libvirt picks the OVMF build from its descriptors
    define_everywhere(libvirt_conn, xml)


def test_efi_without_secure_boot_says_so(libvirt_conn: Any) -> None:
    _, root, xml = render(full_vm(secure_boot=False))
    assert one(root, "/domain/os/@firmware") == "efi"
    assert xp(root, "/domain/os/firmware/feature/@enabled") == ["no"]
    assert not xp(root, "/domain/features/smm")
    define_everywhere(libvirt_conn, xml)


def test_bios_has_no_firmware_attribute(libvirt_conn: Any) -> None:
    _, root, xml = render(make_vm())
    assert not xp(root, "/domain/os/@firmware")
    assert not xp(root, "/domain/os/firmware")
    assert one(root, "/domain/os/type/@machine") == "q35"
    define_everywhere(libvirt_conn, xml)


def test_minimal_vm_gets_console_and_explicit_none_devices(libvirt_conn: Any) -> None:
    _, root, xml = render(make_vm(disks=(), nics=()))
    assert xp(root, "/domain/devices/serial/@type") == ["pty"]
    assert one(root, "/domain/devices/console/@type") == "pty"
    assert one(root, "/domain/devices/console/target/@type") == "serial"
    assert xp(root, "/domain/devices/controller[@type='usb']/@model") == ["none"]
    assert not xp(root, "/domain/devices/input")
    assert one(root, "/domain/devices/graphics/@autoport") == "yes"
    assert one(root, "/domain/devices/memballoon/@model") == "none"
    assert one(root, "/domain/cpu/@mode") == "host-model"
    define_everywhere(libvirt_conn, xml)


def test_guest_caps_extras(libvirt_conn: Any) -> None:
    _, root, xml = render(
        make_vm(usb=Usb(xhci=True)), virtio_rng=True, balloon=True, guest_agent=True, nic_model="virtio"
    )
    assert one(root, "/domain/devices/memballoon/@model") == "virtio"
    assert one(root, "/domain/devices/rng/backend/text()") == "/dev/urandom"
    assert one(root, "/domain/devices/channel/target/@name") == "org.qemu.guest_agent.0"
    assert one(root, "/domain/devices/interface/model/@type") == "virtio"
    assert xp(root, "/domain/devices/controller[@type='usb']/@model") == ["qemu-xhci"]
    define_everywhere(libvirt_conn, xml)


def test_many_scsi_disks_get_enough_virtio_scsi_controllers(libvirt_conn: Any) -> None:
    disks = tuple(make_disk(Bus.SCSI, 0, unit, f"d{unit}.vmdk") for unit in range(9))
    _, root, xml = render(make_vm(disks=disks), disk_bus="scsi")
    assert xp(root, "/domain/devices/controller[@type='scsi']/@model") == ["virtio-scsi", "virtio-scsi"]
    seen = define_everywhere(libvirt_conn, xml)
    # Without the second controller libvirt would add an lsilogic one for sdh/sdi.
    assert set(xp(seen, "/domain/devices/controller[@type='scsi']/@model")) == {"virtio-scsi"}


@pytest.mark.parametrize(
    ("caps", "expected"),
    [
        (
            {"disk_bus": "virtio", "cdrom_bus": "sata"},
            ["vda", "vdb", "vdc", "sda", "sdb", "sdc", "sdd", "fda"],
        ),
        ({"disk_bus": "scsi", "cdrom_bus": "sata"}, ["sda", "sdb", "sdc", "sdd", "sde", "sdf", "sdg", "fda"]),
        (
            {"disk_bus": "ide", "cdrom_bus": "ide", "machine": "pc"},
            ["hda", "hdb", "hdc", "hdd", "sda", "sdb", "sdc", "fda"],
        ),
    ],
)
def test_buses_accepted_by_libvirt(libvirt_conn: Any, caps: dict[str, str], expected: list[str]) -> None:
    _, root, xml = render(full_vm(secure_boot=False), OPTS, **caps)
    assert xp(root, "/domain/devices/disk/target/@dev") == expected
    define_everywhere(libvirt_conn, xml)


@pytest.mark.parametrize(
    "changes",
    [
        {"sound": Sound(model="sb16"), "usb": Usb(uhci=True)},
        {"sound": Sound(model="es1371"), "video": Video(vram_kib=128 * 1024)},
        {"video": Video(vram_kib=4096, num_displays=2)},
    ],
)
def test_device_variants_accepted_by_libvirt(libvirt_conn: Any, changes: dict[str, Any]) -> None:
    _, _, xml = render(make_vm(**changes))
    define_everywhere(libvirt_conn, xml)


def test_multi_head_on_virtio_video(libvirt_conn: Any) -> None:
    _, root, xml = render(make_vm(video=Video(vram_kib=4096, num_displays=2)), video="virtio")
    model = xp(root, "/domain/devices/video/model")[0]
    assert (model.get("type"), model.get("heads"), model.get("vram")) == ("virtio", "2", None)
    define_everywhere(libvirt_conn, xml)


def test_title_and_description_round_trip(libvirt_conn: Any) -> None:
    title = "<b>&amp; \"quoted\" 'x' ✓"
    description = "a & b\n<c>\t]]> d"
    _, _, xml = render(make_vm(display_name=title, annotation=description))
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    test_conn = libvirt.open("test:///default")
    try:
        for conn in (test_conn, libvirt_conn):
            with defined(conn, xml) as dom:
                assert dom.metadata(libvirt.VIR_DOMAIN_METADATA_TITLE, None) == title
                kept = dom.metadata(libvirt.VIR_DOMAIN_METADATA_DESCRIPTION, None)
                assert kept.endswith(f"\n\n{description}") and kept.startswith("Migrated by vm2kvm from ")
    finally:
        test_conn.close()


def test_unusual_name_kept_by_libvirt(libvirt_conn: Any) -> None:
    name = unique_name("n") + " \"Café\" <&> 'x' \t"
    _, root, _ = render(make_vm(display_name=name))
    assert one(root, "/domain/name/text()") == name
    uuid_el = root.find("uuid")
    assert uuid_el is not None
    uuid_el.text = str(uuid.uuid4())  # the fixed test UUID may be in use by a parallel run
    with defined(libvirt_conn, etree.tostring(root, encoding="unicode"), keep_identity=True) as dom:
        assert dom.name() == name


def test_render_is_deterministic() -> None:
    p = plan(full_vm())
    assert render_domain_xml(p) == render_domain_xml(p)
    assert render_domain_xml(p).endswith("</domain>\n")


# --- QEMU itself ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
@pytest.mark.libvirt
def test_qemu_starts_the_device_set_and_shows_the_old_uuid(libvirt_conn: Any) -> None:
    """Floppy on q35, SB16, EHCI companions, serial/parallel kinds, EFI secure boot, clone UUID."""
    import libvirt_qemu  # type: ignore[import-untyped]

    port = _free_port()
    vm = full_vm(
        disks=(),
        nics=(),  # the host's networks are not ours to start
        cdroms=(make_drive(Bus.SATA, 0, 0, MediaKind.EMPTY),),
        floppies=(make_drive(Bus.FLOPPY, 0, 0, MediaKind.EMPTY),),
        serials=(
            CharPort(0, PortKind.FILE, "serial0.log"),
            CharPort(1, PortKind.PIPE, "com2", pipe_server=True),
            CharPort(
                2, PortKind.NETWORK, f"telnet://:{port}", PortEndpoint("telnet", "127.0.0.1", port, True)
            ),
        ),
        sound=Sound(model="sb16"),
        # Not pinned: a locked domain without a memtune hard_limit makes libvirt
        # lift RLIMIT_MEMLOCK, which a container refuses ("cannot limit locked memory").
        memory=Memory(size_mib=256),
    )
    name = unique_name("start")
    fresh = str(uuid.uuid4())
    p = plan(
        vm,
        PlanOptions(
            target_dir="/nonexistent", name=name, domain_type="qemu", uuid_taken=True, new_uuid=fresh
        ),
    )
    xml = render_domain_xml(p)
    files = [s.path for s in p.serials + p.parallels if s.kind in ("file", "unix") and s.path]
    dom = libvirt_conn.defineXML(xml)
    try:
        dom.create()
        reply = json.loads(libvirt_qemu.qemuMonitorCommand(dom, '{"execute":"query-uuid"}', 0))
        assert reply["return"]["UUID"] == SRC_UUID
        assert dom.UUIDString() == fresh
    finally:
        remove_domain(libvirt_conn, name)
        for path in files:
            with contextlib.suppress(OSError):
                os.unlink(path)
