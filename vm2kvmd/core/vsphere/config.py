"""A VM's vSphere configuration as plain values: what ``vm2kvmd.sources.vsphere.vm`` reads
from pyvmomi's ``vim.VirtualMachine`` and ``vm2kvmd.core.vsphere.hardware`` turns into a
``SourceVM``.

No pyvmomi types: tests write these by hand, and the core stays importable without
pyvmomi.  Values are the API's own spellings (``diskMode`` ``independent_persistent``,
``addressType`` ``assigned``, ``firmware`` ``efi``); deciding what they mean is the
hardware module's job.  Device keys (``key``, ``controller_key``) are the API's integer
keys, which tie a device to its controller.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ControllerKind(StrEnum):
    """``vim.vm.device.*Controller`` types that hold disks or drives."""

    IDE = "ide"  # VirtualIDEController
    LSILOGIC = "lsilogic"  # VirtualLsiLogicController
    LSISAS = "lsisas"  # VirtualLsiLogicSASController
    PVSCSI = "pvscsi"  # ParaVirtualSCSIController
    BUSLOGIC = "buslogic"  # VirtualBusLogicController
    SATA = "sata"  # VirtualAHCIController (and VirtualSATAController)
    NVME = "nvme"  # VirtualNVMEController


@dataclass(frozen=True)
class VsController:
    key: int
    kind: ControllerKind
    bus_number: int
    pci_slot: int | None = None  # slotInfo.pciSlotNumber


class BackingKind(StrEnum):
    """What a ``VirtualDisk.backing`` is (``vim.vm.device.VirtualDisk.*BackingInfo``)."""

    FLAT = "flat"  # FlatVer2 (and FlatVer1): a VMFS flat file, thin or thick
    SPARSE = "sparse"  # SparseVer2 / SparseVer1: hosted (Workstation) sparse
    SESPARSE = "sesparse"  # SeSparseBackingInfo: space-efficient sparse (snapshot deltas on VMFS 6)
    RDM = "rdm"  # RawDiskMappingVer1: a LUN mapped through a VMDK
    OTHER = "other"  # anything else (raw disk, vFlash, PMem ...): named in ``type_name``


@dataclass(frozen=True)
class DiskBacking:
    """One file of a disk; ``parent`` is the next older layer (a snapshot chain)."""

    kind: BackingKind
    file_name: str  # "[LocalDS_0] vm/vm.vmdk"; "" when the backing has none
    datastore: str | None = None  # the datastore's name
    datastore_accessible: bool = True  # Datastore.summary.accessible
    disk_mode: str = "persistent"  # persistent, independent_persistent, independent_nonpersistent ...
    thin: bool | None = None  # thinProvisioned (flat only)
    eagerly_scrub: bool | None = None  # eager-zeroed thick (flat only)
    write_through: bool = False
    compatibility_mode: str | None = None  # RDM: physicalMode, virtualMode
    lun: str | None = None  # RDM: deviceName (/vmfs/devices/disks/...) or lunUuid
    type_name: str | None = None  # OTHER: the backing's vSphere type, for the message
    parent: DiskBacking | None = None

    @property
    def layers(self) -> tuple[DiskBacking, ...]:
        """This backing and its parents, newest first."""
        chain: list[DiskBacking] = []
        layer: DiskBacking | None = self
        while layer is not None:
            chain.append(layer)
            layer = layer.parent
        return tuple(chain)


@dataclass(frozen=True)
class VsDisk:
    key: int
    controller_key: int
    unit_number: int | None
    capacity_bytes: int  # capacityInBytes (else capacityInKB x 1024)
    backing: DiskBacking
    label: str = ""  # deviceInfo.label ("Hard disk 1"), for messages


class DriveKind(StrEnum):
    """What backs a CD/DVD or floppy drive."""

    IMAGE = "image"  # an ISO/.flp on a datastore (IsoBackingInfo, ImageBackingInfo)
    HOST = "host"  # the host's device (AtapiBackingInfo, DeviceBackingInfo)
    CLIENT = "client"  # the vSphere client's drive (RemotePassthrough/RemoteAtapi)
    EMPTY = "empty"


@dataclass(frozen=True)
class VsDrive:
    key: int
    controller_key: int | None
    unit_number: int | None
    kind: DriveKind
    file_name: str | None = None  # the image ("[ds] iso/x.iso") or the host device
    start_connected: bool = True
    label: str = ""


class NetworkKind(StrEnum):
    STANDARD = "standard"  # a standard switch port group (NetworkBackingInfo)
    DISTRIBUTED = "distributed"  # a distributed port group (DistributedVirtualPortBackingInfo)
    OPAQUE = "opaque"  # an NSX network (OpaqueNetworkBackingInfo)
    OTHER = "other"  # none, or a backing with no network (SR-IOV, legacy device)


@dataclass(frozen=True)
class NetworkBacking:
    kind: NetworkKind
    name: str | None  # the network's name as vSphere shows it: port group, DVPG, NSX segment
    portgroup_key: str | None = None  # distributed: "dvportgroup-13"
    switch_uuid: str | None = None  # distributed
    opaque_id: str | None = None  # NSX: opaqueNetworkId
    opaque_type: str | None = None  # NSX: opaqueNetworkType ("nsx.LogicalSwitch")


@dataclass(frozen=True)
class VsNic:
    key: int
    kind: str  # e1000, e1000e, vmxnet, vmxnet2, vmxnet3, vlance, sriov, vrdma ...
    mac: str | None  # as the API gives it
    address_type: str  # assigned (vCenter), generated (ESXi), manual
    network: NetworkBacking
    start_connected: bool = True
    pci_slot: int | None = None
    label: str = ""


class SerialKind(StrEnum):
    FILE = "file"  # FileBackingInfo
    DEVICE = "device"  # DeviceBackingInfo
    PIPE = "pipe"  # PipeBackingInfo
    URI = "uri"  # URIBackingInfo (network serial port)


@dataclass(frozen=True)
class VsSerial:
    key: int
    kind: SerialKind
    target: str | None  # file name, device, pipe name or service URI
    server: bool = True  # PIPE: endpoint server; URI: direction server
    start_connected: bool = True
    label: str = ""


@dataclass(frozen=True)
class VsVideo:
    vram_kib: int | None
    num_displays: int = 1
    autodetect: bool = True
    accel_3d: bool = False


@dataclass(frozen=True)
class VsVm:
    """One VM as vSphere describes it (``config``, ``runtime``, ``snapshot``)."""

    name: str
    moid: str  # "vm-42", "1"
    uuid: str | None  # config.uuid: the BIOS UUID (VMX uuid.bios)
    instance_uuid: str | None  # config.instanceUuid (VMX vc.uuid)
    guest_id: str  # config.guestId ("debian10_64Guest")
    guest_full_name: str = ""
    annotation: str = ""
    version: str | None = None  # config.version ("vmx-13")
    firmware: str = "bios"  # config.firmware
    secure_boot: bool = False  # config.bootOptions.efiSecureBootEnabled
    num_cpu: int = 1
    cores_per_socket: int = 1
    memory_mb: int = 32
    memory_reservation_mb: int | None = None  # config.memoryAllocation.reservation
    memory_limit_mb: int | None = None  # config.memoryAllocation.limit (-1 unlimited)
    power_state: str = "poweredOff"  # runtime.powerState
    snapshot_count: int = 0  # snapshots in snapshot.rootSnapshotList, all levels
    current_snapshot: str | None = None  # the name of the snapshot the VM runs on
    controllers: tuple[VsController, ...] = ()
    disks: tuple[VsDisk, ...] = ()
    cdroms: tuple[VsDrive, ...] = ()
    floppies: tuple[VsDrive, ...] = ()
    nics: tuple[VsNic, ...] = ()
    serials: tuple[VsSerial, ...] = ()
    video: VsVideo | None = None
    sound: str | None = None  # es1371, hdaudio, sb16
    usb: tuple[str, ...] = ()  # controllers present: uhci, ehci, xhci
    extra_config: tuple[tuple[str, str], ...] = ()  # config.extraConfig (vm.genid ...)
    other_devices: tuple[str, ...] = ()  # devices with no place in the model, by vSphere type/label


@dataclass(frozen=True)
class VsSnapshotDisk:
    """A disk as a snapshot left it: the snapshot config's ``VirtualDisk``."""

    key: int  # the device key: the same disk in the VM's current config has the same key
    backing: DiskBacking  # the head of the chain that holds the disk's state at the snapshot


@dataclass(frozen=True)
class VsSnapshot:
    """One node of ``snapshot.rootSnapshotList`` with its ``VirtualMachineSnapshot.config`` disks."""

    id: int  # VirtualMachineSnapshotTree.id: unique within the VM
    name: str
    description: str
    created_us: int | None  # createTime, microseconds since the epoch
    parent_id: int | None
    power_state: str  # the VM's power state when it was taken: poweredOn means memory was saved
    disks: tuple[VsSnapshotDisk, ...]
    moid: str = ""  # "snapshot-17", for messages


@dataclass(frozen=True)
class VsSnapshots:
    """A VM's snapshot tree, parents before children."""

    snapshots: tuple[VsSnapshot, ...]
    current_id: int | None
