"""A pyvmomi ``vim.VirtualMachine`` to plain values (``VsVm``) and to a ``SourceVM``.

Blocking (every attribute of a managed object may be a round trip): call it through
``asyncio.to_thread`` from async code.  This is the only module that reads pyvmomi
objects for hardware; it takes an object of an already connected session.

The VM's properties come in one PropertyCollector call: reading ``vm.snapshot`` on a
VM without snapshots makes govmomi's simulator drop the connection, and one call is
also what a real vCenter prefers to a dozen.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pyVmomi import vim, vmodl

from vm2kvmd.core.hardware.model import SourceVM
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
    VsSnapshot,
    VsSnapshotDisk,
    VsSnapshots,
    VsVideo,
    VsVm,
)
from vm2kvmd.core.vsphere.hardware import build_source_vm
from vm2kvmd.errors import ErrorCode, Vm2kvmError

__all__ = ["load_source_vm", "read_snapshots", "read_vm"]

# pyVmomi types these constructors without annotations; through Any they stay callable in strict mypy.
_COLLECTOR: Any = vmodl.query.PropertyCollector
_PROPERTIES = ("name", "config", "runtime.powerState", "snapshot", "network")

_dev = vim.vm.device
# Most specific first: VirtualAHCIController is a VirtualSATAController, VirtualVmxnet3 a VirtualVmxnet.
_CONTROLLERS: tuple[tuple[type, ControllerKind], ...] = (
    (_dev.VirtualIDEController, ControllerKind.IDE),
    (_dev.VirtualLsiLogicSASController, ControllerKind.LSISAS),
    (_dev.VirtualLsiLogicController, ControllerKind.LSILOGIC),
    (_dev.ParaVirtualSCSIController, ControllerKind.PVSCSI),
    (_dev.VirtualBusLogicController, ControllerKind.BUSLOGIC),
    (_dev.VirtualSATAController, ControllerKind.SATA),
    (_dev.VirtualNVMEController, ControllerKind.NVME),
)
_NICS: tuple[tuple[type, str], ...] = (
    (_dev.VirtualVmxnet3Vrdma, "vrdma"),
    (_dev.VirtualVmxnet3, "vmxnet3"),
    (_dev.VirtualVmxnet2, "vmxnet2"),
    (_dev.VirtualVmxnet, "vmxnet"),
    (_dev.VirtualE1000e, "e1000e"),
    (_dev.VirtualE1000, "e1000"),
    (_dev.VirtualPCNet32, "vlance"),
    (_dev.VirtualSriovEthernetCard, "sriov"),
)
_SOUND: tuple[tuple[type, str], ...] = (
    (_dev.VirtualEnsoniq1371, "es1371"),
    (_dev.VirtualHdAudioCard, "hdaudio"),
    (_dev.VirtualSoundBlaster16, "sb16"),
)
_DISK_BACKINGS: tuple[tuple[type, BackingKind], ...] = (
    (_dev.VirtualDisk.FlatVer2BackingInfo, BackingKind.FLAT),
    (_dev.VirtualDisk.FlatVer1BackingInfo, BackingKind.FLAT),
    (_dev.VirtualDisk.SeSparseBackingInfo, BackingKind.SESPARSE),
    (_dev.VirtualDisk.SparseVer2BackingInfo, BackingKind.SPARSE),
    (_dev.VirtualDisk.SparseVer1BackingInfo, BackingKind.SPARSE),
    (_dev.VirtualDisk.RawDiskMappingVer1BackingInfo, BackingKind.RDM),
)
# Devices every VM has that need no word in the report.
_SILENT = (
    _dev.VirtualPCIController,
    _dev.VirtualPS2Controller,
    _dev.VirtualSIOController,
    _dev.VirtualKeyboard,
    _dev.VirtualPointingDevice,
)


def _first(obj: object, table: Iterable[tuple[type, Any]]) -> Any:
    return next((value for cls, value in table if isinstance(obj, cls)), None)


def _label(device: Any) -> str:
    info = device.deviceInfo
    return str(info.label) if info is not None and info.label else ""


def _connected(device: Any) -> bool:
    conn = device.connectable
    return bool(conn.startConnected) if conn is not None else True


def _slot(device: Any) -> int | None:
    info = device.slotInfo
    number = getattr(info, "pciSlotNumber", None) if info is not None else None
    return int(number) if number is not None and number >= 0 else None


class _Reader:
    """Names of the VM's networks and datastores, each asked of the server once."""

    def __init__(self, networks: list[Any]) -> None:
        self.datastores: dict[str, tuple[str, bool]] = {}  # moid -> (name, accessible)
        self.portgroups: dict[str, str] = {}  # DVPG key -> name
        self.opaque: dict[str, str] = {}  # NSX network id -> name
        for net in networks:
            if isinstance(net, vim.dvs.DistributedVirtualPortgroup):
                self.portgroups[str(net.key)] = str(net.name)
            elif isinstance(net, vim.OpaqueNetwork):
                summary: Any = net.summary  # an OpaqueNetwork.Summary
                self.opaque[str(summary.opaqueNetworkId)] = str(net.name)

    def datastore(self, ds: Any) -> tuple[str | None, bool]:
        if ds is None:
            return None, True
        moid = str(ds._moId)
        if moid not in self.datastores:
            summary = ds.summary
            self.datastores[moid] = (str(summary.name), bool(summary.accessible))
        return self.datastores[moid]

    def backing(self, backing: Any) -> DiskBacking:
        kind = _first(backing, _DISK_BACKINGS) or BackingKind.OTHER
        name, accessible = self.datastore(getattr(backing, "datastore", None))
        parent = getattr(backing, "parent", None)
        return DiskBacking(
            kind=kind,
            file_name=str(getattr(backing, "fileName", "") or ""),
            datastore=name,
            datastore_accessible=accessible,
            disk_mode=str(getattr(backing, "diskMode", "") or "persistent"),
            thin=getattr(backing, "thinProvisioned", None),
            eagerly_scrub=getattr(backing, "eagerlyScrub", None),
            write_through=bool(getattr(backing, "writeThrough", False)),
            compatibility_mode=getattr(backing, "compatibilityMode", None),
            lun=getattr(backing, "deviceName", None) or getattr(backing, "lunUuid", None),
            type_name=type(backing).__name__ if kind is BackingKind.OTHER else None,
            parent=self.backing(parent) if parent is not None else None,
        )

    def network(self, backing: Any) -> NetworkBacking:
        if isinstance(backing, _dev.VirtualEthernetCard.NetworkBackingInfo):
            name = backing.deviceName or (backing.network.name if backing.network else None)
            return NetworkBacking(NetworkKind.STANDARD, name)
        if isinstance(backing, _dev.VirtualEthernetCard.DistributedVirtualPortBackingInfo):
            port = backing.port
            key = str(port.portgroupKey) if port and port.portgroupKey else None
            return NetworkBacking(
                NetworkKind.DISTRIBUTED,
                self.portgroups.get(key) if key else None,
                portgroup_key=key,
                switch_uuid=str(port.switchUuid) if port and port.switchUuid else None,
            )
        if isinstance(backing, _dev.VirtualEthernetCard.OpaqueNetworkBackingInfo):
            ident = str(backing.opaqueNetworkId)
            return NetworkBacking(
                NetworkKind.OPAQUE,
                self.opaque.get(ident),
                opaque_id=ident,
                opaque_type=str(backing.opaqueNetworkType),
            )
        return NetworkBacking(NetworkKind.OTHER, None)


def _drive_kind(backing: Any) -> tuple[DriveKind, str | None]:
    if backing is None:
        return DriveKind.EMPTY, None
    if isinstance(backing, (_dev.VirtualCdrom.IsoBackingInfo, _dev.VirtualFloppy.ImageBackingInfo)):
        return (DriveKind.IMAGE if backing.fileName else DriveKind.EMPTY), backing.fileName or None
    if isinstance(backing, (_dev.VirtualDevice.RemoteDeviceBackingInfo,)):
        return DriveKind.CLIENT, None
    if isinstance(backing, _dev.VirtualDevice.DeviceBackingInfo):
        return DriveKind.HOST, backing.deviceName or None
    return DriveKind.EMPTY, None


def _serial(device: Any) -> VsSerial | None:
    backing = device.backing
    server = True
    if isinstance(backing, _dev.VirtualSerialPort.URIBackingInfo):
        kind, target, server = SerialKind.URI, backing.serviceURI, backing.direction != "client"
    elif isinstance(backing, _dev.VirtualSerialPort.PipeBackingInfo):
        kind, target, server = SerialKind.PIPE, backing.pipeName, backing.endpoint != "client"
    elif isinstance(backing, _dev.VirtualSerialPort.FileBackingInfo):
        kind, target = SerialKind.FILE, backing.fileName
    elif isinstance(backing, _dev.VirtualSerialPort.DeviceBackingInfo):
        kind, target = SerialKind.DEVICE, backing.deviceName
    else:
        return None
    return VsSerial(
        key=int(device.key),
        kind=kind,
        target=str(target) if target else None,
        server=server,
        start_connected=_connected(device),
        label=_label(device),
    )


def _count_snapshots(nodes: Iterable[Any], current: Any) -> tuple[int, str | None]:
    count, name = 0, None
    for node in nodes:
        count += 1
        if current is not None and node.snapshot == current:
            name = str(node.name)
        below, found = _count_snapshots(node.childSnapshotList or (), current)
        count += below
        name = name or found
    return count, name


def _properties(vm: vim.VirtualMachine, collector: vmodl.query.PropertyCollector) -> dict[str, Any]:
    spec = _COLLECTOR.FilterSpec(
        objectSet=[_COLLECTOR.ObjectSpec(obj=vm)],
        propSet=[_COLLECTOR.PropertySpec(type=vim.VirtualMachine, pathSet=list(_PROPERTIES))],
    )
    try:
        (found,) = collector.RetrieveContents([spec])
    except vmodl.fault.ManagedObjectNotFound:
        # Deleted (or unregistered) between finding it and reading it.
        raise Vm2kvmError(
            ErrorCode.SOURCE_NOT_FOUND,
            f"VM {vm._moId} no longer exists on the host",
            hint="list the VMs again; it was removed or unregistered meanwhile",
        ) from None
    props = {prop.name: prop.val for prop in found.propSet}
    if props.get("config") is None:
        # vSphere leaves config unset for an orphaned VM or one whose files are unreachable.
        raise Vm2kvmError(
            ErrorCode.INVALID_SOURCE,
            f"vSphere gives no configuration for VM {props.get('name') or vm._moId} ({vm._moId})",
            hint="the VM is orphaned or its datastore is inaccessible; fix it in vSphere first",
        )
    return props


def read_vm(vm: vim.VirtualMachine, collector: vmodl.query.PropertyCollector) -> VsVm:
    """The configuration of ``vm`` as plain values (blocking).

    ``collector`` is the session's ``content.propertyCollector``.  A VM gone meanwhile is
    SOURCE_NOT_FOUND, one without a configuration (orphaned) INVALID_SOURCE.
    """
    props = _properties(vm, collector)
    config = props["config"]
    reader = _Reader(list(props.get("network") or ()))
    hardware = config.hardware
    controllers: list[VsController] = []
    disks: list[VsDisk] = []
    cdroms: list[VsDrive] = []
    floppies: list[VsDrive] = []
    nics: list[VsNic] = []
    serials: list[VsSerial] = []
    usb: list[str] = []
    video: VsVideo | None = None
    sound: str | None = None
    other: list[str] = []
    for device in hardware.device:
        label = _label(device)
        if (kind := _first(device, _CONTROLLERS)) is not None:
            controllers.append(VsController(int(device.key), kind, int(device.busNumber), _slot(device)))
        elif isinstance(device, _dev.VirtualDisk):
            capacity = device.capacityInBytes or (device.capacityInKB or 0) * 1024
            disks.append(
                VsDisk(
                    key=int(device.key),
                    controller_key=int(device.controllerKey or -1),
                    unit_number=device.unitNumber,
                    capacity_bytes=int(capacity),
                    backing=reader.backing(device.backing),
                    label=label,
                )
            )
        elif isinstance(device, (_dev.VirtualCdrom, _dev.VirtualFloppy)):
            drive_kind, file_name = _drive_kind(device.backing)
            drive = VsDrive(
                key=int(device.key),
                controller_key=device.controllerKey,
                unit_number=device.unitNumber,
                kind=drive_kind,
                file_name=file_name,
                start_connected=_connected(device),
                label=label,
            )
            (cdroms if isinstance(device, _dev.VirtualCdrom) else floppies).append(drive)
        elif isinstance(device, _dev.VirtualEthernetCard):
            nics.append(
                VsNic(
                    key=int(device.key),
                    kind=_first(device, _NICS) or type(device).__name__,
                    mac=device.macAddress,
                    address_type=str(device.addressType or "generated"),
                    network=reader.network(device.backing),
                    start_connected=_connected(device),
                    pci_slot=_slot(device),
                    label=label,
                )
            )
        elif isinstance(device, _dev.VirtualSerialPort) and (port := _serial(device)) is not None:
            serials.append(port)
        elif isinstance(device, _dev.VirtualVideoCard):
            video = VsVideo(
                vram_kib=device.videoRamSizeInKB or None,
                num_displays=device.numDisplays or 1,
                autodetect=device.useAutoDetect is not False,
                accel_3d=bool(device.enable3DSupport),
            )
        elif (model := _first(device, _SOUND)) is not None:
            sound = model
        elif isinstance(device, _dev.VirtualUSBXHCIController):
            usb.append("xhci")
        elif isinstance(device, _dev.VirtualUSBController):
            usb.extend(("uhci", "ehci") if device.ehciEnabled else ("uhci",))
        elif not isinstance(device, _SILENT):
            other.append(label or type(device).__name__)
    snapshot = props.get("snapshot")
    count, current = (
        _count_snapshots(snapshot.rootSnapshotList or (), snapshot.currentSnapshot) if snapshot else (0, None)
    )
    boot = config.bootOptions
    memory = config.memoryAllocation
    return VsVm(
        name=str(props.get("name") or config.name or ""),
        moid=str(vm._moId),
        uuid=config.uuid,
        instance_uuid=config.instanceUuid,
        guest_id=str(config.guestId or ""),
        guest_full_name=str(config.guestFullName or ""),
        annotation=str(config.annotation or ""),
        version=config.version,
        firmware=str(config.firmware or "bios"),
        secure_boot=bool(boot is not None and boot.efiSecureBootEnabled),
        num_cpu=int(hardware.numCPU or 1),
        cores_per_socket=int(hardware.numCoresPerSocket or 1),
        memory_mb=int(hardware.memoryMB or 0),
        memory_reservation_mb=int(memory.reservation) if memory and memory.reservation else None,
        memory_limit_mb=int(memory.limit) if memory and memory.limit is not None else None,
        power_state=str(props.get("runtime.powerState") or "poweredOff"),
        snapshot_count=count,
        current_snapshot=current,
        controllers=tuple(controllers),
        disks=tuple(disks),
        cdroms=tuple(cdroms),
        floppies=tuple(floppies),
        nics=tuple(nics),
        serials=tuple(serials),
        video=video,
        sound=sound,
        usb=tuple(usb),
        extra_config=tuple(
            (str(o.key), str(o.value)) for o in config.extraConfig or () if o.value is not None
        ),
        other_devices=tuple(other),
    )


def load_source_vm(
    vm: vim.VirtualMachine, collector: vmodl.query.PropertyCollector, *, source_path: str
) -> SourceVM:
    """``read_vm`` then ``build_source_vm`` (blocking)."""
    return build_source_vm(read_vm(vm, collector), source_path=source_path)


def _tree_nodes(nodes: Iterable[Any], parent: int | None) -> Iterable[tuple[Any, int | None]]:
    for node in nodes:
        yield node, parent
        yield from _tree_nodes(node.childSnapshotList or (), int(node.id))


def _microseconds(when: Any) -> int | None:
    return int(when.timestamp() * 1_000_000) if when is not None else None


def read_snapshots(vm: vim.VirtualMachine, collector: vmodl.query.PropertyCollector) -> VsSnapshots:
    """The VM's snapshot tree with each snapshot's disks (blocking; two PropertyCollector calls).

    The disks come from each snapshot's ``config``: vSphere documents its disk backings as the
    head of the chain holding the disk's state at that snapshot.
    """
    props = _properties(vm, collector)
    info = props.get("snapshot")
    if info is None:
        return VsSnapshots((), None)
    nodes = list(_tree_nodes(info.rootSnapshotList or (), None))
    spec = _COLLECTOR.FilterSpec(
        objectSet=[_COLLECTOR.ObjectSpec(obj=node.snapshot) for node, _ in nodes],
        propSet=[_COLLECTOR.PropertySpec(type=vim.vm.Snapshot, pathSet=["config.hardware.device"])],
    )
    devices: dict[str, list[Any]] = {}
    for found in collector.RetrieveContents([spec]) if nodes else ():
        values: list[Any] = [p.val for p in found.propSet or ()]
        devices[str(found.obj._moId)] = list(values[0]) if values else []
    reader = _Reader([])
    snapshots = []
    current = None
    for node, parent in nodes:
        moid = str(node.snapshot._moId)
        if info.currentSnapshot is not None and str(info.currentSnapshot._moId) == moid:
            current = int(node.id)
        disks = tuple(
            VsSnapshotDisk(int(d.key), reader.backing(d.backing))
            for d in devices.get(moid, ())
            if isinstance(d, _dev.VirtualDisk)
        )
        snapshots.append(
            VsSnapshot(
                id=int(node.id),
                name=str(node.name or ""),
                description=str(node.description or ""),
                created_us=_microseconds(node.createTime),
                parent_id=parent,
                power_state=str(node.state or "poweredOff"),
                disks=disks,
                moid=moid,
            )
        )
    return VsSnapshots(tuple(snapshots), current)
