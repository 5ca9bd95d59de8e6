"""The hardware model of a VMware source VM: frozen dataclasses, no behaviour.

``SourceVM`` is what every source reader (VMX, OVF, vSphere)
produces and what the device mapping consumes.  Values are already validated
and normalised (canonical UUIDs, lower-case enum-like strings); the raw VMX key
each item came from is kept in ``key`` so messages can name it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from vm2kvmd.errors import ErrorCode


@dataclass(frozen=True)
class Note:
    """A warning about the source: something tolerated, dropped or guessed."""

    message: str
    key: str | None = None  # the VMX key (or other source locator) it concerns

    def __str__(self) -> str:
        return f"{self.key}: {self.message}" if self.key else self.message


class Firmware(StrEnum):
    BIOS = "bios"
    EFI = "efi"


class Bus(StrEnum):
    SCSI = "scsi"
    SATA = "sata"
    IDE = "ide"
    NVME = "nvme"
    FLOPPY = "floppy"


class MediaKind(StrEnum):
    """What backs a removable drive."""

    IMAGE = "image"  # an ISO / floppy image file
    HOST = "host"  # the host's physical drive ("auto detect", /dev/cdrom)
    EMPTY = "empty"  # no medium


# --- disks -----------------------------------------------------------------


@dataclass(frozen=True)
class Extent:
    """One extent line of a VMDK descriptor."""

    access: str  # RW, RDONLY, NOACCESS
    sectors: int  # size in 512-byte sectors
    kind: str  # SPARSE, FLAT, ZERO, VMFS, VMFSSPARSE, SESPARSE, VMFSRDM, VMFSRAW
    file_name: str | None  # as written in the descriptor (None for ZERO)
    path: str | None  # resolved absolute path (None for ZERO)
    offset: int = 0  # sector offset into the file (FLAT/VMFS)


@dataclass(frozen=True)
class DiskLayer:
    """One VMDK file (descriptor + extents) of a chain."""

    path: str  # absolute path of the descriptor (or the sparse file holding it)
    create_type: str  # monolithicSparse, twoGbMaxExtentSparse, vmfs, ...
    cid: int
    parent_cid: int  # 0xffffffff when there is no parent
    parent_hint: str | None  # parentFileNameHint as written
    extents: tuple[Extent, ...]
    embedded: bool  # descriptor embedded in a sparse/streamOptimized file
    adapter_type: str | None = None  # ddb.adapterType
    virtual_size: int = 0  # bytes
    notes: tuple[Note, ...] = ()  # paths followed outside the VM directory, Windows paths guessed
    # The layer's bytes are [member_offset, member_offset + member_size) of ``path``
    # (a disk inside an uncompressed OVA tar); None: the whole file.
    member_offset: int | None = None
    member_size: int | None = None


@dataclass(frozen=True)
class DiskChain:
    """A VMDK and its parents; ``layers[0]`` is the one the VMX names."""

    layers: tuple[DiskLayer, ...]

    @property
    def top(self) -> DiskLayer:
        return self.layers[0]

    @property
    def virtual_size(self) -> int:
        return self.layers[0].virtual_size

    @property
    def files(self) -> tuple[str, ...]:
        """Every file the chain reads: descriptors and extents, top first."""
        seen: dict[str, None] = {}
        for layer in self.layers:
            seen[layer.path] = None
            for ext in layer.extents:
                if ext.path:
                    seen[ext.path] = None
        return tuple(seen)

    @property
    def notes(self) -> tuple[Note, ...]:
        return tuple(note for layer in self.layers for note in layer.notes)


@dataclass(frozen=True)
class DeviceAddress:
    """Where a VMware device sits: ``scsi0:1`` is Bus.SCSI, controller 0, unit 1."""

    bus: Bus
    controller: int
    unit: int

    @property
    def key(self) -> str:
        if self.bus is Bus.FLOPPY:
            return f"floppy{self.controller}"
        return f"{self.bus.value}{self.controller}:{self.unit}"


@dataclass(frozen=True)
class Controller:
    """A storage controller (``scsi0``, ``sata0``, ``nvme0``, ``ide0``)."""

    bus: Bus
    index: int
    model: str | None  # scsi: buslogic, lsilogic, lsisas1068, pvscsi; others None
    pci_slot: int | None = None


EXTRACTED_AT_MIGRATION = "compressed: extracted at migration"
READ_AT_MIGRATION = "on a vSphere datastore: read over HTTPS at migration"


@dataclass(frozen=True)
class RemoteDisk:
    """A disk on a vSphere datastore: no local chain; the migration reads it over HTTPS.

    ``layers`` are the datastore paths the API names, newest first: the running
    state (the newest snapshot delta) down to the base disk.
    """

    datastore: str  # LocalDS_0
    layers: tuple[str, ...]  # "[LocalDS_0] vm/vm-000001.vmdk", ..., "[LocalDS_0] vm/vm.vmdk"
    capacity: int  # bytes, as the API gives it
    thin: bool | None = None  # None: not a flat disk (sparse/SE sparse layers)


@dataclass(frozen=True)
class SourceDisk:
    address: DeviceAddress
    file_name: str  # as written in the VMX
    path: str | None  # resolved absolute path of the VMDK descriptor; None if unresolvable
    mode: str  # persistent, independent-persistent, independent-nonpersistent, nonpersistent
    chain: DiskChain | None  # None when the disk (or a parent/extent) is missing
    problem: str | None = None  # why ``chain`` is None, one line naming the file
    problem_code: ErrorCode | None = None  # the code migrate fails with for this disk
    write_through: bool = False
    # Stored compressed in its package: no chain until the migration job extracts it.  The
    # capacity (bytes) the descriptor gives, 0 when it gives none; ``problem`` says so.
    extracted_capacity: int | None = None
    # On a vSphere datastore: no chain until the migration reads it (``problem`` says so).
    remote: RemoteDisk | None = None

    @property
    def missing(self) -> bool:
        return self.chain is None and self.extracted_capacity is None and self.remote is None

    @property
    def capacity(self) -> int:
        """The virtual size in bytes as far as known (0 for a missing disk)."""
        if self.chain is not None:
            return self.chain.virtual_size
        if self.remote is not None:
            return self.remote.capacity
        return self.extracted_capacity or 0

    @property
    def extracted_at_migration(self) -> bool:
        return self.extracted_capacity is not None


@dataclass(frozen=True)
class RemovableDrive:
    """A CD-ROM or floppy drive."""

    address: DeviceAddress
    kind: MediaKind
    file_name: str | None  # ISO/image/host device as written
    path: str | None  # resolved image path (IMAGE only)
    start_connected: bool = True
    missing: bool = False  # IMAGE whose file does not exist


# --- network ---------------------------------------------------------------


# A static MAC of all zeros: the NIC has no MAC of its own yet; NSX assigns one at power-on.
# Kept in the model as the source says it (the report shows it); planning gives a fresh one.
ZERO_MAC = "00:00:00:00:00:00"


@dataclass(frozen=True)
class Nic:
    index: int  # N of ethernetN
    model: str  # vlance, vmxnet, vmxnet2, vmxnet3, e1000, e1000e
    mac: str | None  # lower-case aa:bb:cc:dd:ee:ff; None only if the VMX has none; ZERO_MAC: see there
    address_type: str  # generated, vpx, static
    connection_type: str  # bridged, nat, hostonly, custom
    network_name: str | None  # ethernetN.networkName (port group / network label)
    vnet: str | None  # ethernetN.vnet (custom: vmnet8, /dev/vmnet8)
    dvs_port_group: str | None = None  # ethernetN.dvs.portgroupId
    dvs_switch: str | None = None  # ethernetN.dvs.switchId
    pci_slot: int | None = None
    start_connected: bool = True
    opaque_network_id: str | None = None  # NSX: ethernetN.opaqueNetwork.id / opaqueNetworkId
    opaque_network_type: str | None = None  # NSX: "nsx.LogicalSwitch"

    @property
    def source_network(self) -> str:
        """The name a user uses in ``--network A=B``: networkName, else the NSX network's id
        (a VMX file does not carry the segment's name), else vnet, else the type."""
        if self.network_name:
            return self.network_name
        if self.opaque_network_id:
            return self.opaque_network_id
        if self.connection_type == "custom" and self.vnet:
            return self.vnet.rsplit("/", 1)[-1]
        return self.connection_type


# --- other devices ---------------------------------------------------------


class PortKind(StrEnum):
    FILE = "file"
    DEVICE = "device"
    PIPE = "pipe"
    NETWORK = "network"
    THINPRINT = "thinprint"


@dataclass(frozen=True)
class PortEndpoint:
    """A parsed network URI of a serial port (``telnet://:1234``, ``tcp://host:port``)."""

    protocol: str  # telnet, tcp, tcp4, tcp6, ssl, ...
    host: str | None
    port: int
    server: bool  # True when VMware listens (serialN.network.endPoint = server)


@dataclass(frozen=True)
class CharPort:
    """A serial or parallel port."""

    index: int
    kind: PortKind
    target: str | None  # file path / device / pipe name / URI as written
    endpoint: PortEndpoint | None = None  # NETWORK only, when the URI parsed
    pipe_server: bool = True  # PIPE: serialN.pipe.endPoint (server/client)
    start_connected: bool = True


@dataclass(frozen=True)
class Video:
    vram_kib: int | None  # svga.vramSize in KiB
    num_displays: int = 1
    autodetect: bool = True
    accel_3d: bool = False  # mks.enable3d


@dataclass(frozen=True)
class Sound:
    model: str  # es1371, hdaudio, sb16 (virtualDev, default es1371)
    auto_detect: bool = True


@dataclass(frozen=True)
class Usb:
    uhci: bool = False  # usb.present (USB 1.1)
    ehci: bool = False  # ehci.present (USB 2.0)
    xhci: bool = False  # usb_xhci.present (USB 3.x)

    @property
    def present(self) -> bool:
        return self.uhci or self.ehci or self.xhci


@dataclass(frozen=True)
class Vnc:
    enabled: bool
    port: int | None = None
    keymap: str | None = None
    has_password: bool = False  # the password itself is never kept


@dataclass(frozen=True)
class Memory:
    size_mib: int
    reservation_mib: int | None = None  # sched.mem.min
    limit_mib: int | None = None  # sched.mem.max
    pinned: bool = False  # sched.mem.pin
    shares: str | None = None  # sched.mem.shares (low/normal/high/number)


@dataclass(frozen=True)
class Cpu:
    vcpus: int
    cores_per_socket: int = 1


# --- the VM ----------------------------------------------------------------


def is_64bit_guest(guest_os: str) -> bool:
    """Whether a VMX ``guestOS`` value (``ubuntu-64``, ``windows9srv-64``) names a 64-bit guest; the
    readers need it before the ``SourceVM`` exists (it picks the default NIC model)."""
    return guest_os.endswith("-64") or "64" in guest_os.split("-")[-1]


@dataclass(frozen=True)
class SourceVM:
    source_path: str  # absolute path of the .vmx
    display_name: str
    annotation: str
    guest_os: str  # raw guestOS value, lower-case ("debian12-64", "windows9-64")
    hw_version: int | None  # virtualHW.version
    firmware: Firmware
    secure_boot: bool
    cpu: Cpu
    memory: Memory
    uuid_bios: str | None  # canonical 8-4-4-4-12 lower-case
    vc_uuid: str | None  # canonical
    genid: str | None  # canonical UUID form of vm.genid/vm.genidX
    controllers: tuple[Controller, ...] = ()
    disks: tuple[SourceDisk, ...] = ()
    cdroms: tuple[RemovableDrive, ...] = ()
    floppies: tuple[RemovableDrive, ...] = ()
    nics: tuple[Nic, ...] = ()
    serials: tuple[CharPort, ...] = ()
    parallels: tuple[CharPort, ...] = ()
    video: Video | None = None
    sound: Sound | None = None
    usb: Usb = field(default_factory=Usb)
    vnc: Vnc | None = None
    notes: tuple[Note, ...] = ()

    @property
    def is_64bit(self) -> bool:
        return is_64bit_guest(self.guest_os)
