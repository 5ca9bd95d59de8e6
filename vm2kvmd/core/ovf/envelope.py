"""OVF descriptors (``.ovf``, the first member of an ``.ova``) to an ``OvfEnvelope``.

Pure: descriptor bytes in, frozen dataclasses out; ``ovf_hardware`` turns the
envelope into a ``SourceVM``.  Only OVF 1.x (namespace
``http://schemas.dmtf.org/ovf/envelope/1``) is read: it is what vSphere,
ovftool (Workstation, Fusion) and VirtualBox write by default.  OVF 2.0
describes disks and NICs with other item types and the pre-standard 0.9
drafts with other element names; both are refused with a hint, not guessed.

What a real descriptor may contain and how it is read:

- ``References/File``: ``ovf:href`` (a file next to the descriptor or a tar
  member), ``ovf:size``, ``ovf:compression`` and ``ovf:chunkSize`` (kept;
  the package loader refuses compressed and chunked files).
- ``DiskSection/Disk``: ``ovf:capacity`` in ``ovf:capacityAllocationUnits``
  (``byte * 2^30``; a ``${property}`` capacity is left unknown), ``ovf:fileRef``,
  ``ovf:format``.
- ``DeploymentOptionSection``: items carrying ``ovf:configuration`` apply only
  to the configurations they name; the default configuration (else the first)
  is used, with a note.  Items with ``ovf:bound="min"``/``"max"`` are ranges,
  not hardware, and are skipped.
- A ``VirtualSystemCollection`` (a vApp) with one VM is read as that VM; with
  more it is refused: a job migrates one VM.
- Several ``VirtualHardwareSection`` elements (one per platform): the first
  whose ``vssd:VirtualSystemType`` names a ``vmx-NN`` family, else the first.
- The XML parser resolves no entities, loads no DTD and never touches the
  network; a descriptor with a DOCTYPE is refused.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from lxml import etree

from vm2kvmd.core.hardware.model import Note
from vm2kvmd.errors import ErrorCode, Vm2kvmError

NS_OVF = "http://schemas.dmtf.org/ovf/envelope/1"
NS_OVF2 = "http://schemas.dmtf.org/ovf/envelope/2"
NS_OVF09 = "http://www.vmware.com/schema/ovf/1/envelope"
NS_RASD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
NS_VSSD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
NS_VMW = "http://www.vmware.com/schema/ovf"

# Real descriptors are a few KiB, appliances with long EULAs a few hundred.
MAX_OVF_BYTES = 8 * 1024 * 1024
# ESXi's largest virtual disk is 62 TB (the VMDK reader's limit too).
MAX_CAPACITY = 64 << 40
_MAX_NUMBER_CHARS = 24

_UNITS_RE = re.compile(
    r"^(?:(?:byte|bytes|b)\s*)?(?:\*\s*(?P<radix>2|10)\s*\^\s*(?P<exp>\d{1,2}))?$", re.IGNORECASE
)
_NAMED_UNITS = {
    **dict.fromkeys(("kb", "kib", "kilobyte", "kilobytes"), 1 << 10),
    **dict.fromkeys(("mb", "mib", "megabyte", "megabytes"), 1 << 20),
    **dict.fromkeys(("gb", "gib", "gigabyte", "gigabytes"), 1 << 30),
    **dict.fromkeys(("tb", "tib", "terabyte", "terabytes"), 1 << 40),
}
_VMX_FAMILY_RE = re.compile(r"^vmx-(\d{1,3})$", re.IGNORECASE)


@dataclass(frozen=True)
class OvfFile:
    """``References/File``: one file of the package."""

    id: str
    href: str
    size: int | None = None
    compression: str | None = None  # "gzip", "identity" (= none), ...
    chunk_size: int | None = None

    @property
    def locator(self) -> str:
        return file_locator(self.id)


@dataclass(frozen=True)
class OvfDisk:
    """``DiskSection/Disk``: a virtual disk and the file holding its content."""

    disk_id: str
    file_ref: str | None  # None: a blank disk the deployer creates
    capacity: int | None  # bytes; None when given by a property
    format: str | None
    parent_ref: str | None = None

    @property
    def locator(self) -> str:
        return disk_locator(self.disk_id)


@dataclass(frozen=True)
class OvfItem:
    """One ``VirtualHardwareSection/Item``: the ``rasd:`` values as written, stripped."""

    instance_id: str
    resource_type: int | None
    subtype: str | None = None
    element_name: str | None = None
    address: str | None = None
    address_on_parent: str | None = None
    parent: str | None = None
    host_resources: tuple[str, ...] = ()
    connections: tuple[str, ...] = ()
    quantity: str | None = None  # rasd:VirtualQuantity
    units: str | None = None  # rasd:AllocationUnits
    reservation: str | None = None
    limit: str | None = None
    automatic_allocation: bool | None = None
    config: Mapping[str, str] = field(default_factory=dict)  # vmw:Config key -> value
    cores_per_socket: str | None = None  # vmw:CoresPerSocket

    @property
    def locator(self) -> str:
        return item_locator(self.instance_id)

    @property
    def label(self) -> str:
        """How a user finds it in vSphere: its element name, else its locator."""
        return f"{self.locator} ({self.element_name})" if self.element_name else self.locator


@dataclass(frozen=True)
class OvfEnvelope:
    """The parts of an OVF descriptor vm2kvm reads, for one virtual system."""

    path: str  # the descriptor, for messages (an .ova's member is named inside it)
    files: Mapping[str, OvfFile]  # by ovf:id
    disks: Mapping[str, OvfDisk]  # by ovf:diskId
    system_id: str | None  # VirtualSystem ovf:id
    name: str | None  # VirtualSystem/Name
    annotation: str
    os_id: int | None  # OperatingSystemSection ovf:id (CIM operating system type)
    os_type: str | None  # vmw:osType ("rhel7_64Guest")
    os_description: str | None
    system_types: tuple[str, ...]  # vssd:VirtualSystemType words ("vmx-13")
    items: tuple[OvfItem, ...]
    config: Mapping[str, str]  # section-level vmw:Config
    extra_config: Mapping[str, str]  # vmw:ExtraConfig (VMX keys), key as written -> value
    other_config: Mapping[str, str]  # VirtualSystemOtherConfigurationData (XenServer)
    vmw_uuid: str | None = None  # VirtualSystem vmw:uuid, when a producer wrote one
    notes: tuple[Note, ...] = ()

    @property
    def hw_version(self) -> int | None:
        versions = [int(m[1]) for word in self.system_types if (m := _VMX_FAMILY_RE.match(word))]
        return max(versions) if versions else None


# --- locators, errors and small parsers ----------------------------------------------
# A locator names an element the way notes and errors show it, XPath-like.


def file_locator(file_id: str) -> str:
    return f"References/File[@ovf:id={file_id!r}]"


def disk_locator(disk_id: str) -> str:
    return f"DiskSection/Disk[@ovf:diskId={disk_id!r}]"


def item_locator(instance_id: str) -> str:
    return f"Item[rasd:InstanceID={instance_id!r}]"


def invalid_source(
    path: str, message: str, *, key: str | None = None, hint: str | None = None
) -> Vm2kvmError:
    return Vm2kvmError(
        ErrorCode.INVALID_SOURCE,
        message,
        file=path,
        key=key,
        hint=hint
        or "the OVF descriptor is damaged or was not written by an OVF 1.x exporter; export it again",
    )


def invalid_value(path: str, key: str, value: str, why: str, *, hint: str | None = None) -> Vm2kvmError:
    shown = value if len(value) <= 80 else value[:77] + "..."
    return Vm2kvmError(
        ErrorCode.INVALID_VALUE,
        f"{key} = {shown!r} {why}",
        file=path,
        key=key,
        value=shown,
        hint=hint or f"correct {key} in the OVF descriptor (and its digest in the .mf manifest)",
    )


def parse_number(text: str, path: str, key: str, *, maximum: int) -> int:
    """A non-negative decimal integer of at most ``maximum``; INVALID_VALUE naming ``key`` otherwise."""
    s = text.strip()
    if not s.isascii() or not s.isdigit() or len(s) > _MAX_NUMBER_CHARS:
        raise invalid_value(
            path, key, text, "is not a whole number" if len(s) <= _MAX_NUMBER_CHARS else "is far too large"
        )
    value = int(s)
    if value > maximum:
        raise invalid_value(path, key, text, f"is larger than the {maximum} allowed")
    return value


def parse_units(text: str | None, path: str, key: str, *, default: int) -> int:
    """``byte * 2^20``, ``byte``, ``MegaBytes``... -> bytes per unit; ``default`` when absent."""
    if text is None or not text.strip():
        return default
    s = " ".join(text.split())
    if named := _NAMED_UNITS.get(s.lower()):
        return named
    match = _UNITS_RE.match(s)
    if not match:
        raise invalid_value(path, key, text, "is not an allocation unit", hint='expected e.g. "byte * 2^20"')
    if match["radix"] is None:
        return 1
    factor: int = int(match["radix"]) ** int(match["exp"])
    if factor > 1 << 60:
        raise invalid_value(path, key, text, "is not a plausible allocation unit")
    return factor


# --- XML access -------------------------------------------------------------------------


def _q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def _attr(el: etree._Element, name: str, *namespaces: str) -> str | None:
    """An attribute in the first of ``namespaces`` that has it (OVF qualifies its attributes)."""
    for ns in namespaces or (NS_OVF,):
        value = el.get(_q(ns, name))
        if value is not None:
            return value
    return el.get(name)


def _text(el: etree._Element | None) -> str | None:
    if el is None or el.text is None:
        return None
    text = el.text.strip()
    return text or None


def _child_text(el: etree._Element, ns: str, name: str) -> str | None:
    return _text(el.find(_q(ns, name)))


def _key_values(parent: etree._Element, tag: str) -> dict[str, str]:
    """``<vmw:Config vmw:key= vmw:value=/>`` children (``ovf:key`` tolerated), in order."""
    found: dict[str, str] = {}
    for el in parent.findall(_q(NS_VMW, tag)):
        key = _attr(el, "key", NS_VMW, NS_OVF)
        if key:
            found[key] = _attr(el, "value", NS_VMW, NS_OVF) or ""
    return found


def _parse_xml(data: bytes, path: str) -> etree._Element:
    if len(data) > MAX_OVF_BYTES:
        raise invalid_source(
            path, f"descriptor of {len(data)} bytes is larger than the {MAX_OVF_BYTES} allowed"
        )
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as err:
        raise invalid_source(
            path,
            f"not an XML document: {err.msg}",
            hint="an OVF descriptor is XML; the file is damaged, truncated or not an .ovf",
        ) from None
    if root is None:
        raise invalid_source(path, "empty XML document")
    if root.getroottree().docinfo.doctype:
        raise invalid_source(path, "descriptor has a DOCTYPE; OVF descriptors have none and it is not read")
    return root


def _check_root(root: etree._Element, path: str) -> None:
    qname = etree.QName(root)
    if qname.localname != "Envelope":
        raise invalid_source(
            path,
            f"root element is <{qname.localname}>, not an OVF <Envelope>",
            key=qname.localname,
            hint="pass the .ovf descriptor (or the .ova), not another XML file",
        )
    if qname.namespace == NS_OVF:
        return
    if qname.namespace == NS_OVF2:
        hint = "OVF 2.0 is not read yet; export the VM as OVF 1.x (ovftool and vSphere do by default)"
    elif qname.namespace == NS_OVF09:
        hint = "this is a pre-standard OVF 0.9 draft; convert it with ovftool to OVF 1.x"
    else:
        hint = f"an OVF 1.x Envelope is in the namespace {NS_OVF}"
    raise invalid_source(
        path, f"Envelope has the namespace {qname.namespace or '(none)'!r}", key="Envelope", hint=hint
    )


# --- sections ---------------------------------------------------------------------------


def _files(root: etree._Element, path: str) -> dict[str, OvfFile]:
    files: dict[str, OvfFile] = {}
    refs = root.find(_q(NS_OVF, "References"))
    for el in refs.findall(_q(NS_OVF, "File")) if refs is not None else ():
        file_id, href = _attr(el, "id"), _attr(el, "href")
        if not file_id or not href:
            raise invalid_source(path, "a File has no ovf:id or no ovf:href", key="References/File")
        locator = file_locator(file_id)
        if file_id in files:
            raise invalid_source(path, f"File id {file_id!r} appears twice", key=locator)
        size = _attr(el, "size")
        chunk = _attr(el, "chunkSize")
        files[file_id] = OvfFile(
            id=file_id,
            href=href,
            size=parse_number(size, path, f"{locator}/@ovf:size", maximum=MAX_CAPACITY) if size else None,
            compression=(_attr(el, "compression") or "").strip().lower() or None,
            chunk_size=parse_number(chunk, path, f"{locator}/@ovf:chunkSize", maximum=MAX_CAPACITY)
            if chunk
            else None,
        )
    return files


def _disks(root: etree._Element, path: str, notes: list[Note]) -> dict[str, OvfDisk]:
    disks: dict[str, OvfDisk] = {}
    section = root.find(_q(NS_OVF, "DiskSection"))
    for el in section.findall(_q(NS_OVF, "Disk")) if section is not None else ():
        disk_id = _attr(el, "diskId")
        if not disk_id:
            raise invalid_source(path, "a Disk has no ovf:diskId", key="DiskSection/Disk")
        locator = disk_locator(disk_id)
        if disk_id in disks:
            raise invalid_source(path, f"Disk id {disk_id!r} appears twice", key=locator)
        raw = (_attr(el, "capacity") or "").strip()
        capacity: int | None = None
        if raw.startswith("${"):
            notes.append(Note(f"capacity is the property {raw}; the disk file's own size is used", locator))
        elif raw:
            count = parse_number(raw, path, f"{locator}/@ovf:capacity", maximum=MAX_CAPACITY)
            unit = parse_units(
                _attr(el, "capacityAllocationUnits"),
                path,
                f"{locator}/@ovf:capacityAllocationUnits",
                default=1,
            )
            capacity = count * unit
            if capacity > MAX_CAPACITY:
                raise invalid_value(
                    path, f"{locator}/@ovf:capacity", raw, f"(x {unit} bytes) is beyond any real disk"
                )
        disks[disk_id] = OvfDisk(
            disk_id=disk_id,
            file_ref=_attr(el, "fileRef") or None,
            capacity=capacity,
            format=_attr(el, "format"),
            parent_ref=_attr(el, "parentRef") or None,
        )
    return disks


def _configuration(root: etree._Element, notes: list[Note]) -> str | None:
    """The deployment option used: the default, else the first; None when there are none."""
    section = root.find(_q(NS_OVF, "DeploymentOptionSection"))
    if section is None:
        return None
    ids = [(c, i) for c in section.findall(_q(NS_OVF, "Configuration")) if (i := _attr(c, "id"))]
    if not ids:
        return None
    chosen = next((i for c, i in ids if (_attr(c, "default") or "").lower() in ("true", "1")), ids[0][1])
    if len(ids) > 1:
        others = ", ".join(i for _, i in ids if i != chosen)
        notes.append(
            Note(
                f"deployment option {chosen!r} used (the descriptor's default); also offered: {others}",
                "DeploymentOptionSection",
            )
        )
    return chosen


def _virtual_system(root: etree._Element, path: str, notes: list[Note]) -> etree._Element:
    system = root.find(_q(NS_OVF, "VirtualSystem"))
    if system is not None:
        return system
    collection = root.find(_q(NS_OVF, "VirtualSystemCollection"))
    if collection is None:
        raise invalid_source(path, "the Envelope holds no VirtualSystem", key="VirtualSystem")
    systems = collection.findall(f".//{_q(NS_OVF, 'VirtualSystem')}")
    if len(systems) != 1:
        names = ", ".join(_attr(s, "id") or "?" for s in systems) or "none"
        raise invalid_source(
            path,
            f"the VirtualSystemCollection (vApp) holds {len(systems)} virtual machines ({names})",
            key="VirtualSystemCollection",
            hint="vm2kvm migrates one VM at a time; export each VM of the vApp on its own",
        )
    notes.append(
        Note(
            "a vApp with one virtual machine; the vApp's own settings are dropped", "VirtualSystemCollection"
        )
    )
    return systems[0]


def _system_types(hardware: etree._Element) -> str:
    """``System/vssd:VirtualSystemType``: ``vmx-13``, ``virtualbox-2.2``, several separated by spaces."""
    system = hardware.find(_q(NS_OVF, "System"))
    return (_child_text(system, NS_VSSD, "VirtualSystemType") if system is not None else None) or ""


def _hardware_section(system: etree._Element, path: str, notes: list[Note]) -> etree._Element:
    sections = system.findall(_q(NS_OVF, "VirtualHardwareSection"))
    if not sections:
        raise invalid_source(
            path, "the VirtualSystem has no VirtualHardwareSection", key="VirtualHardwareSection"
        )
    if len(sections) == 1:
        return sections[0]
    for section in sections:
        types = _system_types(section)
        if any(_VMX_FAMILY_RE.match(word) for word in types.split()):
            notes.append(
                Note(
                    f"{len(sections)} hardware sections; the one for VMware ({types}) used",
                    "VirtualHardwareSection",
                )
            )
            return section
    notes.append(Note(f"{len(sections)} hardware sections; the first used", "VirtualHardwareSection"))
    return sections[0]


def _applies(el: etree._Element, configuration: str | None) -> bool:
    if (_attr(el, "bound") or "normal").lower() != "normal":
        return False  # a min/max range, not hardware
    wanted = _attr(el, "configuration")
    return wanted is None or configuration is None or configuration in wanted.split()


def _item(el: etree._Element, path: str) -> OvfItem:
    def rasd(name: str) -> str | None:
        return _child_text(el, NS_RASD, name)

    instance_id = rasd("InstanceID")
    if instance_id is None:
        line = f" (line {el.sourceline})" if el.sourceline else ""
        raise invalid_source(path, f"an Item has no rasd:InstanceID{line}", key="VirtualHardwareSection/Item")
    locator = item_locator(instance_id)
    raw_type = rasd("ResourceType")
    resource_type = (
        parse_number(raw_type, path, f"{locator}/rasd:ResourceType", maximum=65535) if raw_type else None
    )
    auto = rasd("AutomaticAllocation")
    return OvfItem(
        instance_id=instance_id,
        resource_type=resource_type,
        subtype=rasd("ResourceSubType"),
        element_name=rasd("ElementName"),
        address=rasd("Address"),
        address_on_parent=rasd("AddressOnParent"),
        parent=rasd("Parent"),
        host_resources=tuple(t for h in el.findall(_q(NS_RASD, "HostResource")) if (t := _text(h))),
        connections=tuple(t for c in el.findall(_q(NS_RASD, "Connection")) if (t := _text(c))),
        quantity=rasd("VirtualQuantity"),
        units=rasd("AllocationUnits"),
        reservation=rasd("Reservation"),
        limit=rasd("Limit"),
        automatic_allocation=None if auto is None else auto.lower() in ("true", "1"),
        config=MappingProxyType(_key_values(el, "Config")),
        cores_per_socket=_child_text(el, NS_VMW, "CoresPerSocket"),
    )


def _other_config(section: etree._Element) -> dict[str, str]:
    """XenServer's ``VirtualSystemOtherConfigurationData Name=..><Value>``, in any namespace."""
    found: dict[str, str] = {}
    for el in section:
        if isinstance(el.tag, str) and etree.QName(el).localname == "VirtualSystemOtherConfigurationData":
            name = el.get("Name") or _attr(el, "Name")
            value = next(
                (_text(v) for v in el if isinstance(v.tag, str) and etree.QName(v).localname == "Value"), None
            )
            if name:
                found[name] = value or _text(el) or ""
    return found


def _section_notes(system: etree._Element, notes: list[Note]) -> None:
    """Sections with meaning on VMware and none on libvirt."""
    for product in system.findall(_q(NS_OVF, "ProductSection")):
        props = [p for p in product.iter(_q(NS_OVF, "Property")) if _attr(p, "key")]
        if props:
            keys = ", ".join(sorted({_attr(p, "key") or "" for p in props}))
            notes.append(
                Note(
                    f"vApp properties are not passed to the guest on libvirt (no OVF environment): {keys}",
                    "ProductSection",
                )
            )
    if system.find(_q(NS_OVF, "EulaSection")) is not None:
        notes.append(
            Note("the package carries a licence agreement (EulaSection); read it before use", "EulaSection")
        )


def parse_ovf(data: bytes, path: str) -> OvfEnvelope:
    """Parse an OVF 1.x descriptor; ``path`` names it in errors.

    Raises ``Vm2kvmError``: INVALID_SOURCE (not XML, not OVF 1.x, a vApp of
    several VMs, a broken structure), INVALID_VALUE (a number or unit that
    makes no sense, naming the element).
    """
    root = _parse_xml(data, path)
    _check_root(root, path)
    notes: list[Note] = []
    files = _files(root, path)
    disks = _disks(root, path, notes)
    configuration = _configuration(root, notes)
    system = _virtual_system(root, path, notes)
    hardware = _hardware_section(system, path, notes)
    os_section = system.find(_q(NS_OVF, "OperatingSystemSection"))
    os_id: int | None = None
    if os_section is not None and (raw_os := _attr(os_section, "id")):
        os_id = parse_number(raw_os, path, "OperatingSystemSection/@ovf:id", maximum=65535)
    annotation_section = system.find(_q(NS_OVF, "AnnotationSection"))
    annotation = (
        _child_text(annotation_section, NS_OVF, "Annotation") if annotation_section is not None else None
    )
    items = tuple(
        _item(el, path) for el in hardware.findall(_q(NS_OVF, "Item")) if _applies(el, configuration)
    )
    seen: set[str] = set()
    for item in items:
        if item.instance_id in seen:
            raise invalid_source(
                path, f"InstanceID {item.instance_id!r} is used by two Items", key=item.locator
            )
        seen.add(item.instance_id)
    _section_notes(system, notes)
    return OvfEnvelope(
        path=path,
        files=MappingProxyType(files),
        disks=MappingProxyType(disks),
        system_id=_attr(system, "id"),
        name=_child_text(system, NS_OVF, "Name"),
        annotation=annotation or "",
        os_id=os_id,
        os_type=_attr(os_section, "osType", NS_VMW) if os_section is not None else None,
        os_description=_child_text(os_section, NS_OVF, "Description") if os_section is not None else None,
        system_types=tuple(_system_types(hardware).split()),
        items=items,
        config=MappingProxyType(_key_values(hardware, "Config")),
        extra_config=MappingProxyType(_key_values(hardware, "ExtraConfig")),
        other_config=MappingProxyType(_other_config(hardware)),
        vmw_uuid=_attr(system, "uuid", NS_VMW),
        notes=tuple(notes),
    )


def descriptor_stem(path: str) -> str:
    """The name of a descriptor without directory and extension (a VM name of last resort)."""
    return os.path.splitext(os.path.basename(path))[0]
