"""OVF descriptors and OVA archives for tests, built the way vSphere and ovftool lay them out.

Typical use::

    disk = make_vmdk(staging, "web-disk1", "streamOptimized", 16 * MiB)
    ovf = ovf_text("web", [OvfDisk(disk)], [OvfNic("00:50:56:aa:bb:01")])
    ova = build_ova(tmp_path / "web.ova", "web", ovf, [disk])   # .ovf first, then disks, then .mf
    before = sha256_tree(ova.parent)
    ...  # migrate
    assert sha256_tree(ova.parent) == before

``ovf_text`` writes a vSphere-style descriptor (``vmw:`` keys, ``byte * 2^20``
units, streamOptimized disks); ``build_ova`` a ustar archive with Python's
``tarfile``, as ovftool does (ustar, the descriptor first, the manifest last).
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

STREAM_OPTIMIZED = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"
NAMESPACES = " ".join(
    (
        'xmlns="http://schemas.dmtf.org/ovf/envelope/1"',
        'xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common"',
        'xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"',
        'xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"',
        'xmlns:vmw="http://www.vmware.com/schema/ovf"',
        'xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"',
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"',
    )
)
_CONTROLLERS = {
    "scsi": ("6", "lsilogic", "SCSI controller"),
    "sata": ("20", "vmware.sata.ahci", "SATA controller"),
    "ide": ("5", None, "IDE controller"),
    "nvme": ("20", "vmware.nvme.controller", "NVME controller"),
}


@dataclass(frozen=True)
class OvfDisk:
    path: Path  # the VMDK whose bytes the package holds
    bus: str = "scsi"  # scsi, sata, ide, nvme (controller 0)
    unit: int | None = None  # default: the next one on the bus
    href: str | None = None  # default: the file's name

    @property
    def name(self) -> str:
        return self.href or self.path.name


@dataclass(frozen=True)
class OvfNic:
    mac: str | None
    network: str = "VM Network"
    model: str = "VmxNet3"
    connected: bool = True


def _virtual_size(path: Path) -> int:
    out = subprocess.run(
        ["qemu-img", "info", "--output=json", "-U", str(path)], capture_output=True, check=True, text=True
    ).stdout
    return int(json.loads(out)["virtual-size"])


def ovf_text(
    name: str,
    disks: Sequence[OvfDisk],
    nics: Sequence[OvfNic] = (),
    *,
    vcpus: int = 2,
    cores_per_socket: int = 1,
    memory_mib: int = 512,
    firmware: str = "bios",
    secure_boot: bool = False,
    bios_uuid: str | None = None,
    os_type: str = "debian11_64Guest",
    annotation: str = "",
) -> str:
    """A vSphere-style OVF 1.x descriptor for ``disks`` and ``nics``."""
    files, disk_rows, items = [], [], []
    iid = 3
    controllers: dict[str, int] = {}
    for bus in dict.fromkeys(d.bus for d in disks):
        rtype, sub, label = _CONTROLLERS[bus]
        controllers[bus] = iid
        sub_el = f"<rasd:ResourceSubType>{sub}</rasd:ResourceSubType>" if sub else ""
        items.append(
            f"""      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:ElementName>{label} 0</rasd:ElementName>
        <rasd:InstanceID>{iid}</rasd:InstanceID>
        {sub_el}
        <rasd:ResourceType>{rtype}</rasd:ResourceType>
      </Item>"""
        )
        iid += 1
    next_unit: dict[str, int] = {}
    for n, disk in enumerate(disks, start=1):
        size = disk.path.stat().st_size
        files.append(f'    <File ovf:href={quoteattr(disk.name)} ovf:id="file{n}" ovf:size="{size}"/>')
        capacity = _virtual_size(disk.path) >> 20
        disk_rows.append(
            f'    <Disk ovf:capacity="{capacity}" ovf:capacityAllocationUnits="byte * 2^20" '
            f'ovf:diskId="vmdisk{n}" ovf:fileRef="file{n}" ovf:format="{STREAM_OPTIMIZED}"/>'
        )
        unit = disk.unit if disk.unit is not None else next_unit.get(disk.bus, 0)
        next_unit[disk.bus] = unit + 1
        items.append(
            f"""      <Item>
        <rasd:AddressOnParent>{unit}</rasd:AddressOnParent>
        <rasd:ElementName>Hard disk {n}</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk{n}</rasd:HostResource>
        <rasd:InstanceID>{iid}</rasd:InstanceID>
        <rasd:Parent>{controllers[disk.bus]}</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>"""
        )
        iid += 1
    networks = []
    for n, nic in enumerate(nics, start=1):
        if nic.network not in networks:
            networks.append(nic.network)
        mac = f"<rasd:Address>{nic.mac}</rasd:Address>" if nic.mac else ""
        items.append(
            f"""      <Item>
        {mac}
        <rasd:AddressOnParent>{6 + n}</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>{str(nic.connected).lower()}</rasd:AutomaticAllocation>
        <rasd:Connection>{escape(nic.network)}</rasd:Connection>
        <rasd:ElementName>Network adapter {n}</rasd:ElementName>
        <rasd:InstanceID>{iid}</rasd:InstanceID>
        <rasd:ResourceSubType>{nic.model}</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
        <vmw:Config ovf:required="false" vmw:key="wakeOnLanEnabled" vmw:value="true"/>
      </Item>"""
        )
        iid += 1
    network_rows = "\n".join(
        f"    <Network ovf:name={quoteattr(net)}>"
        f"<Description>The {escape(net)} network</Description></Network>"
        for net in networks
    )
    configs = [f'      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="{firmware}"/>']
    if secure_boot:
        configs.append(
            '      <vmw:Config ovf:required="false" '
            'vmw:key="bootOptions.efiSecureBootEnabled" vmw:value="true"/>'
        )
    if bios_uuid:
        configs.append(
            f'      <vmw:ExtraConfig ovf:required="false" vmw:key="uuid.bios" vmw:value="{bios_uuid}"/>'
        )
    nl = "\n"
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!--Generated by VMware ovftool 4.4.3 (build-18663434), for vm2kvm tests-->
<Envelope vmw:buildId="build-18663434" {NAMESPACES}>
  <References>
{nl.join(files)}
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
{nl.join(disk_rows)}
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
{network_rows}
  </NetworkSection>
  <VirtualSystem ovf:id={quoteattr(name)}>
    <Info>A virtual machine</Info>
    <Name>{escape(name)}</Name>
    <OperatingSystemSection ovf:id="96" vmw:osType="{os_type}">
      <Info>The kind of installed guest operating system</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{escape(name)}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-19</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:ElementName>{vcpus} virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>{vcpus}</rasd:VirtualQuantity>
        <vmw:CoresPerSocket ovf:required="false">{cores_per_socket}</vmw:CoresPerSocket>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:ElementName>{memory_mib}MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>{memory_mib}</rasd:VirtualQuantity>
      </Item>
{nl.join(items)}
{nl.join(configs)}
    </VirtualHardwareSection>
    <AnnotationSection ovf:required="false">
      <Info>A human-readable annotation</Info>
      <Annotation>{escape(annotation)}</Annotation>
    </AnnotationSection>
  </VirtualSystem>
</Envelope>
"""


def manifest_text(members: Sequence[tuple[str, bytes | Path]], algorithm: str = "SHA256") -> str:
    """``SHA256(name)= hex`` lines, as ovftool writes them."""
    lines = []
    for name, content in members:
        digest = hashlib.new(algorithm.lower())
        if isinstance(content, Path):
            digest.update(content.read_bytes())
        else:
            digest.update(content)
        lines.append(f"{algorithm}({name})= {digest.hexdigest()}")
    return "\n".join(lines) + "\n"


def write_tar(
    path: Path, members: Sequence[tuple[str, bytes | Path]], *, fmt: int = tarfile.USTAR_FORMAT
) -> Path:
    """A tar of ``members`` in the order given (bytes, or a file's content)."""
    with tarfile.open(path, "w", format=fmt) as tar:
        for name, content in members:
            if isinstance(content, Path):
                tar.add(content, arcname=name, recursive=False)
            else:
                info = tarfile.TarInfo(name)
                info.size = len(content)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(content))
    return path


def build_ova(
    path: Path,
    stem: str,
    ovf: str,
    disks: Sequence[OvfDisk | Path],
    *,
    manifest: bool = True,
    algorithm: str = "SHA256",
) -> Path:
    """An OVA as ovftool writes it: ``<stem>.ovf``, the disks, ``<stem>.mf``."""
    members: list[tuple[str, bytes | Path]] = [(f"{stem}.ovf", ovf.encode())]
    for disk in disks:
        if isinstance(disk, OvfDisk):
            members.append((disk.name, disk.path))
        else:
            members.append((disk.name, disk))
    if manifest:
        members.append((f"{stem}.mf", manifest_text(members, algorithm).encode()))
    return write_tar(path, members)
