"""``DomainPlan``: the target domain, decided but not yet written.

Produced by ``vm2kvmd.core.planning.mapping.plan_domain`` (pure), rendered to libvirt XML
by ``vm2kvmd.core.domainxml.render_domain_xml`` (pure), executed by the
migration pipeline (copies ``disks``, then defines the XML).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from vm2kvmd.core.hardware.model import CharPort, Firmware, Nic, Note, RemovableDrive, SourceDisk


@dataclass(frozen=True)
class PlanOptions:
    """Inputs of the mapping that come from the caller and the host, not the source."""

    target_dir: str  # directory the disk volumes will live in (pool path or output dir)
    disk_format: str = "qcow2"
    block_volumes: bool = False  # target_dir holds block devices (an LVM pool): raw, no file name extension
    name: str | None = None  # override of the domain name
    domain_type: str = "kvm"
    networks: tuple[tuple[str, str], ...] = ()  # VMware network -> libvirt network
    bridges: tuple[tuple[str, str], ...] = ()  # VMware network -> host bridge
    other_networks: tuple[str, str] | None = None  # ("network"|"bridge", name) for networks not mapped
    default_network: str = "default"
    uuid_taken: bool = False  # the source UUID is already used by a domain on the host
    new_uuid: str | None = None  # the UUID to use when uuid_taken (tests pass a fixed one)
    started: datetime | None = None  # when the migration started, for the description; None: left out


@dataclass(frozen=True)
class PlannedDisk:
    source: SourceDisk
    target_dev: str  # sda, vda, ...
    bus: str  # sata, virtio, scsi, ide
    volume_name: str  # file name inside target_dir
    target_path: str  # target_dir/volume_name
    format: str  # qcow2 or raw
    capacity: int  # bytes (the source's virtual size)
    boot_order: int | None = None
    block: bool = False  # target_path is a block device (a logical volume), not a file


@dataclass(frozen=True)
class PlannedRemovable:
    source: RemovableDrive
    device: str  # cdrom or floppy
    target_dev: str  # sdb, hdc, fda
    bus: str  # sata, ide, fdc
    path: str | None  # image to insert; None = empty drive


@dataclass(frozen=True)
class PlannedNic:
    source: Nic
    mac: str | None
    model: str  # virtio, e1000, e1000e, rtl8139
    kind: str  # network or bridge
    target: str  # libvirt network name or bridge name
    link_up: bool = True


@dataclass(frozen=True)
class PlannedCharPort:
    source: CharPort
    device: str  # serial or parallel
    kind: str  # libvirt type: file, dev, unix, tcp, pty
    path: str | None = None  # file/dev/unix
    host: str | None = None  # tcp
    port: int | None = None  # tcp
    mode: str | None = None  # bind/connect
    protocol: str | None = None  # raw or telnet (tcp)


@dataclass(frozen=True)
class DomainPlan:
    name: str
    uuid: str
    smbios_uuid: str | None  # guest-visible UUID when it differs from ``uuid`` (cloned VMs)
    title: str | None
    description: str | None
    domain_type: str
    machine: str  # q35 / pc
    firmware: Firmware
    secure_boot: bool
    vcpus: int
    sockets: int
    cores: int
    threads: int
    memory_mib: int
    memory_locked: bool
    genid: str | None
    disks: tuple[PlannedDisk, ...]
    cdroms: tuple[PlannedRemovable, ...]
    floppies: tuple[PlannedRemovable, ...]
    nics: tuple[PlannedNic, ...]
    serials: tuple[PlannedCharPort, ...]
    parallels: tuple[PlannedCharPort, ...]
    video_model: str | None  # None: no video device
    video_vram_kib: int | None
    video_heads: int
    sound_model: str | None
    usb_model: str | None  # libvirt controller model; None: model='none'
    tablet: bool
    graphics: str | None  # "vnc", "spice" or None
    vnc_port: int | None
    rng: bool
    balloon: bool
    guest_agent: bool
    source_path: str  # for <metadata>
    source_uuid: str | None  # uuid.bios as in the source
    vc_uuid: str | None
    guest_os: str
    hw_version: int | None
    notes: tuple[Note, ...]  # source notes + mapping notes
    # Added by the mapping (defaulted so older constructors keep working):
    vnc_keymap: str | None = None  # QEMU keymap name (en-us, de, ...); None: libvirt's default
    clock_offset: str = "utc"  # utc, or localtime for Windows (its RTC runs in local time)
    cpu_mode: str | None = None  # host-model on kvm; None: the hypervisor's default model (TCG)
    os_id: str | None = None  # libosinfo id (http://debian.org/debian/12); None: not known
    hyperv: str = ""  # Hyper-V enlightenments for Windows: "" none, "basic", "full" (GuestCaps.hyperv)
