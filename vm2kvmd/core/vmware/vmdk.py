"""VMDK descriptors to ``DiskLayer`` and ``DiskChain``, without reading a file.

``parse_descriptor``: descriptor text in, ``ParsedDescriptor`` out.  The
``check_*`` functions judge a descriptor, an extent line and what its file
holds; ``follow_chain`` follows ``parentFileNameHint`` from a snapshot to its
base, checking CIDs, through an injected layer loader.
``vm2kvmd.sources.vmware.vmdk`` reads the files (``load_layer``,
``load_chain``, ``load_member_layer``), resolving every extent through the
``PathResolver`` so a VMDK cannot lead the daemon outside the VM directory.

Choices worth knowing:
- A parent that does not exist is ``DISK_CHAIN_BROKEN`` (the snapshot is
  there, its chain is not); a missing extent is ``DISK_MISSING``.
- A layer without ``parentFileNameHint`` is a base, whatever its parentCID
  says: qemu reads it that way too.
- ``virtual_size`` counts every extent, including ZERO and RDONLY ones.
  qemu 7.2 silently skips those extents (and shifts the ones after them);
  ``core.planning.blockdev`` gives such a layer a descriptor view qemu reads
  right, and the pipeline still compares qemu's size with ours.
- A NOACCESS extent is ``UNSUPPORTED_DISK``: the guest cannot read it under
  VMware either, and there is no content to copy for it.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from vm2kvmd.core.hardware.model import DiskChain, DiskLayer, Extent, Note
from vm2kvmd.core.vmware.paths import PathResolver
from vm2kvmd.core.vmware.vmdk_header import SECTOR, SparseHeader
from vm2kvmd.errors import ErrorCode, Vm2kvmError

__all__ = [
    "MAX_CHAIN_LAYERS",
    "NO_PARENT",
    "SUPPORTED_CREATE_TYPES",
    "ExtentLine",
    "ParsedDescriptor",
    "check_create_type",
    "check_extent",
    "check_flat_extent",
    "check_sparse_extent",
    "embedded_extent",
    "follow_chain",
    "layer_of",
    "member_layer",
    "parse_descriptor",
]

NO_PARENT = 0xFFFFFFFF

# ESXi allows 255 snapshots per disk (VMware KB 1025279 recommends far fewer);
# more than that is a loop we failed to see or a hostile input.
MAX_CHAIN_LAYERS = 256

# ESXi's largest virtual disk is 62 TB; 64 TiB leaves room and still rejects
# numbers that can only come from corruption.
MAX_DISK_SECTORS = (64 << 40) // SECTOR

SUPPORTED_CREATE_TYPES = frozenset(
    {
        "monolithicSparse",
        "twoGbMaxExtentSparse",
        "monolithicFlat",
        "twoGbMaxExtentFlat",
        "streamOptimized",
        "vmfs",
        # The VMDK spec names these for thin/thick VMFS disks; ESXi itself
        # writes "vmfs" plus ddb.thinProvisioned.  qemu 7.2 refuses them;
        # QEMU reads them through a descriptor view (core.planning.blockdev).
        "vmfsThin",
        "vmfsPreallocated",
        "vmfsEagerZeroedThick",
        "vmfsSparse",
        "seSparse",
    }
)
_RDM_CREATE_TYPES = frozenset({"vmfsRDM", "vmfsRaw", "vmfsRawDeviceMap", "vmfsPassthroughRawDeviceMap"})
_DEVICE_CREATE_TYPES = frozenset({"fullDevice", "partitionedDevice"})

_ACCESS = frozenset({"RW", "RDONLY", "NOACCESS"})
_SPARSE_KINDS = {"SPARSE": ("KDMV", "COWD"), "VMFSSPARSE": ("COWD", "KDMV"), "SESPARSE": ("SESPARSE",)}
_FLAT_KINDS = frozenset({"FLAT", "VMFS"})
_EXTENT_KINDS = frozenset({"ZERO", *_FLAT_KINDS, *_SPARSE_KINDS})
_RDM_EXTENT_KINDS = frozenset({"VMFSRDM", "VMFSRAW"})

_EXTENT_RE = re.compile(
    r"^(?P<access>\S+)[ \t]+(?P<sectors>\S+)[ \t]+(?P<kind>\S+)"
    r'(?:[ \t]+"(?P<name>[^"]*)"(?:[ \t]+(?P<offset>\S+))?)?$'
)
_KIND_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
_NUMBER_RE = re.compile(r"^[0-9]{1,20}$")
_CID_RE = re.compile(r"^[0-9A-Fa-f]{1,8}$")
_KEY_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# Keys whose repetition makes the descriptor ambiguous.
_SINGLE_KEYS = frozenset({"CID", "parentCID", "createType", "parentFileNameHint"})


@dataclass(frozen=True)
class ExtentLine:
    """An extent line as written: ``RW 2048 FLAT "disk-flat.vmdk" 0``."""

    access: str  # RW, RDONLY, NOACCESS
    sectors: int
    kind: str  # upper case as written; not checked against the known kinds here
    file_name: str | None  # None for ZERO
    offset: int = 0  # sectors into the file (FLAT, VMFS)
    line: int = 0  # 1-based line number in the descriptor


@dataclass(frozen=True)
class ParsedDescriptor:
    """A descriptor's content, syntax-checked but not yet judged."""

    create_type: str
    cid: int
    parent_cid: int  # NO_PARENT when absent
    parent_hint: str | None  # parentFileNameHint as written; None when absent or empty
    extents: tuple[ExtentLine, ...]
    ddb: Mapping[str, str]  # "ddb." stripped: adapterType, geometry.cylinders, uuid, ...
    header: Mapping[str, str]  # every other key: version, encoding, CID, createType, ...

    @property
    def adapter_type(self) -> str | None:
        return self.ddb.get("adapterType") or None

    @property
    def sectors(self) -> int:
        return sum(ext.sectors for ext in self.extents)


def invalid_descriptor(
    message: str, path: str, *, key: str | None = None, value: str | None = None
) -> Vm2kvmError:
    return Vm2kvmError(
        ErrorCode.INVALID_DISK,
        message,
        file=path,
        key=key,
        value=value,
        hint="the descriptor is damaged or truncated; copy the disk again from its datastore",
    )


def _number(text: str | None, what: str, line: int, path: str, raw: str) -> int:
    if text is None or not _NUMBER_RE.match(text):
        raise invalid_descriptor(
            f"extent line {line}: {what} {text!r} is not a whole number", path, value=raw
        )
    number = int(text)
    if number > MAX_DISK_SECTORS:
        raise invalid_descriptor(
            f"extent line {line}: {what} {number} is beyond any real disk", path, value=raw
        )
    return number


def _parse_extent(raw: str, line: int, path: str) -> ExtentLine:
    match = _EXTENT_RE.match(raw)
    if not match or not _KIND_RE.match(match["kind"]):
        raise invalid_descriptor(f"extent line {line} is malformed", path, value=raw)
    kind = match["kind"]
    sectors = _number(match["sectors"], "size", line, path, raw)
    if sectors == 0:
        raise invalid_descriptor(f"extent line {line} has a size of 0 sectors", path, value=raw)
    name = match["name"]
    if kind == "ZERO":
        if name is not None:
            raise invalid_descriptor(f"extent line {line}: a ZERO extent names no file", path, value=raw)
        return ExtentLine(match["access"], sectors, kind, None, 0, line)
    if not name:
        raise invalid_descriptor(f"extent line {line} names no file", path, value=raw)
    offset_text = match["offset"]
    if offset_text is not None and (kind in _SPARSE_KINDS or kind in _RDM_EXTENT_KINDS):
        raise invalid_descriptor(f"extent line {line}: a {kind} extent takes no offset", path, value=raw)
    offset = 0 if offset_text is None else _number(offset_text, "offset", line, path, raw)
    return ExtentLine(match["access"], sectors, kind, name, offset, line)


def _unquote(value: str, key: str, line: int, path: str) -> str:
    if not value.startswith('"'):
        return value
    if len(value) < 2 or not value.endswith('"'):
        raise invalid_descriptor(
            f"line {line}: the value of {key} has no closing quote", path, key=key, value=value
        )
    return value[1:-1]


def _cid(text: str, key: str, path: str) -> int:
    if not _CID_RE.match(text):
        raise invalid_descriptor(
            f"{key} {text!r} is not a 32-bit hexadecimal number", path, key=key, value=text
        )
    return int(text, 16)


def parse_descriptor(text: str, path: str) -> ParsedDescriptor:
    """Parse descriptor text; ``path`` only names the file in errors (INVALID_DISK)."""
    header: dict[str, str] = {}
    ddb: dict[str, str] = {}
    extents: list[ExtentLine] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.split(None, 1)[0] in _ACCESS:
            extents.append(_parse_extent(line, number, path))
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _KEY_RE.match(key):
            raise invalid_descriptor(f"line {number} is not part of a VMDK descriptor", path, value=line[:80])
        value = _unquote(value.strip(), key, number, path)
        if key.startswith("ddb."):
            ddb[key[4:]] = value
            continue
        if key in _SINGLE_KEYS and key in header:
            raise invalid_descriptor(f"line {number}: {key} appears twice", path, key=key, value=value)
        header[key] = value
    create_type = header.get("createType")
    if not create_type:
        raise invalid_descriptor(
            "no createType: not a VMDK descriptor, or a truncated one", path, key="createType"
        )
    if "CID" not in header:
        raise invalid_descriptor("no CID: not a VMDK descriptor, or a truncated one", path, key="CID")
    cid = _cid(header["CID"], "CID", path)
    parent_cid = _cid(header["parentCID"], "parentCID", path) if "parentCID" in header else NO_PARENT
    if not extents:
        raise invalid_descriptor("the descriptor lists no extents (truncated?)", path)
    total = sum(ext.sectors for ext in extents)
    if total > MAX_DISK_SECTORS:
        raise invalid_descriptor(
            f"extents add up to {total} sectors, beyond any real disk", path, value=str(total)
        )
    return ParsedDescriptor(
        create_type=create_type,
        cid=cid,
        parent_cid=parent_cid,
        parent_hint=header.get("parentFileNameHint") or None,
        extents=tuple(extents),
        ddb=ddb,
        header=header,
    )


def check_create_type(create_type: str, path: str) -> None:
    if create_type in SUPPORTED_CREATE_TYPES:
        return
    if create_type in _RDM_CREATE_TYPES:
        message = f"createType {create_type!r} is a raw device mapping (RDM) to a SAN LUN"
        hint = (
            "present the LUN to the KVM host directly, or migrate the RDM to a virtual disk in vSphere first"
        )
    elif create_type in _DEVICE_CREATE_TYPES:
        message = f"createType {create_type!r} maps a physical host disk"
        hint = "clone it to a virtual disk with vmware-vdiskmanager or vmkfstools first"
    else:
        message = f"createType {create_type!r} is not a VMDK type vm2kvm converts"
        hint = "supported: " + ", ".join(sorted(SUPPORTED_CREATE_TYPES))
    raise Vm2kvmError(
        ErrorCode.UNSUPPORTED_DISK, message, file=path, key="createType", value=create_type, hint=hint
    )


def check_extent(ext: ExtentLine, descriptor: str, key: str | None) -> None:
    """What an extent line alone can be refused for, before its file is looked at."""
    if ext.kind not in _EXTENT_KINDS:
        raise _unsupported_extent(ext, descriptor, key)
    if ext.access == "NOACCESS":
        raise Vm2kvmError(
            ErrorCode.UNSUPPORTED_DISK,
            f"extent line {ext.line} is NOACCESS: VMware gives the guest no access to its "
            f"{ext.sectors} sectors, so there is nothing to copy for them",
            file=descriptor,
            key=key,
            value=ext.file_name or ext.kind,
            hint="make the extent RW or RDONLY in the descriptor if its data is valid, "
            "or clone the disk with vmware-vdiskmanager or vmkfstools first",
        )
    if ext.file_name is not None and _URL_RE.match(ext.file_name):
        raise Vm2kvmError(
            ErrorCode.UNSUPPORTED_DISK,
            f"extent line {ext.line} names an object, not a file: {ext.file_name}",
            file=descriptor,
            key=key,
            value=ext.file_name,
            hint="vSAN/vVol disks cannot be read as files; export the VM (OVF) or copy the disk "
            "to a VMFS or NFS datastore first",
        )


def is_sparse(ext: ExtentLine) -> bool:
    """Whether the extent's file starts with a sparse header (checked by ``check_sparse_extent``)."""
    return ext.kind in _SPARSE_KINDS


def check_flat_extent(ext: ExtentLine, ext_path: str, size: int, descriptor: str, key: str | None) -> None:
    """A FLAT or VMFS extent's file of ``size`` bytes holds every sector the line names."""
    needed = (ext.offset + ext.sectors) * SECTOR
    if size < needed:
        raise Vm2kvmError(
            ErrorCode.INVALID_DISK,
            f"extent file {ext_path} has {size} bytes, extent line {ext.line} needs {needed}",
            file=descriptor,
            key=key,
            value=ext.file_name,
            hint="the flat file is truncated (an incomplete copy?); copy it again from the datastore",
        )


def _unsupported_extent(ext: ExtentLine, path: str, key: str | None) -> Vm2kvmError:
    if ext.kind in _RDM_EXTENT_KINDS:
        message = f"extent line {ext.line} is a raw device mapping ({ext.kind})"
        hint = "present the LUN to the KVM host directly, or migrate the RDM to a virtual disk first"
    else:
        message = f"extent line {ext.line} has the unknown kind {ext.kind}"
        hint = "known kinds: " + ", ".join(sorted(_EXTENT_KINDS))
    return Vm2kvmError(ErrorCode.UNSUPPORTED_DISK, message, file=path, key=key, value=ext.kind, hint=hint)


def check_sparse_extent(
    ext: ExtentLine, ext_path: str, header: SparseHeader | None, descriptor: str, key: str | None
) -> None:
    accepted = _SPARSE_KINDS[ext.kind]
    if header is None or header.magic not in accepted:
        found = header.magic if header else "no sparse header"
        raise Vm2kvmError(
            ErrorCode.INVALID_DISK,
            f"extent file {ext_path} is not a {ext.kind} extent ({found})",
            file=descriptor,
            key=key,
            value=ext.file_name,
            hint="the extent file is damaged or belongs to another disk",
        )
    if header.capacity != ext.sectors:
        raise Vm2kvmError(
            ErrorCode.INVALID_DISK,
            f"extent line {ext.line} gives {ext.sectors} sectors, but {ext_path} holds {header.capacity}",
            file=descriptor,
            key=key,
            value=ext.file_name,
            hint="the descriptor does not match its extent; it was edited or belongs to another disk",
        )


def embedded_extent(parsed: ParsedDescriptor, header: SparseHeader, path: str) -> Extent:
    # The data of a hosted sparse file is the file itself.  Its extent line
    # still carries the name the file was created with, which is stale after
    # a rename; VMware and qemu ignore it, and so do we.
    if len(parsed.extents) != 1 or parsed.extents[0].kind != "SPARSE":
        raise invalid_descriptor(
            "an embedded descriptor must list exactly one SPARSE extent (the file itself)", path
        )
    ext = parsed.extents[0]
    if header.capacity != ext.sectors:
        raise invalid_descriptor(
            f"embedded descriptor gives {ext.sectors} sectors, the sparse header {header.capacity}",
            path,
            value=str(ext.sectors),
        )
    return Extent(ext.access, ext.sectors, ext.kind, ext.file_name, path, 0)


def layer_of(
    path: str,
    parsed: ParsedDescriptor,
    extents: tuple[Extent, ...],
    *,
    embedded: bool,
    notes: tuple[Note, ...] = (),
) -> DiskLayer:
    """The ``DiskLayer`` of the descriptor at ``path`` whose extents were checked against their files."""
    return DiskLayer(
        path=path,
        create_type=parsed.create_type,
        cid=parsed.cid,
        parent_cid=parsed.parent_cid,
        parent_hint=parsed.parent_hint,
        extents=extents,
        embedded=embedded,
        adapter_type=parsed.adapter_type,
        virtual_size=parsed.sectors * SECTOR,
        notes=notes,
    )


def _broken(message: str, path: str, key: str | None, value: str | None, hint: str) -> Vm2kvmError:
    return Vm2kvmError(ErrorCode.DISK_CHAIN_BROKEN, message, file=path, key=key, value=value, hint=hint)


def follow_chain(
    top: DiskLayer, resolver: PathResolver, load_layer: Callable[[str], DiskLayer], *, key: str | None = None
) -> DiskChain:
    """``top`` and every parent named by ``parentFileNameHint``, top first.

    ``load_layer`` reads the layer at a resolved path.  Raises what it
    raises, and DISK_CHAIN_BROKEN for a missing parent, a CID mismatch, a
    cycle, or more than ``MAX_CHAIN_LAYERS`` layers.
    """
    layers = [top]
    seen = {top.path}
    while (child := layers[-1]).parent_hint is not None:
        hint = child.parent_hint
        if len(layers) >= MAX_CHAIN_LAYERS:
            raise _broken(
                f"snapshot chain is longer than {MAX_CHAIN_LAYERS} layers",
                child.path,
                key,
                hint,
                "consolidate the VM's snapshots in VMware first",
            )
        resolved = resolver.resolve(hint, relative_to=os.path.dirname(child.path), key=key, file=child.path)
        if resolved.note is not None:
            layers[-1] = dataclasses.replace(child, notes=(*child.notes, resolved.note))
        parent_path = resolved.path
        if parent_path in seen:
            raise _broken(
                f"snapshot chain loops: {child.path} names {parent_path} as parent, "
                "which is already part of the chain",
                child.path,
                key,
                hint,
                "the descriptors' parentFileNameHint lines are damaged; restore them from a backup",
            )
        if not resolver.host.lexists(parent_path):
            raise _broken(
                f"parent disk {parent_path} of snapshot {child.path} does not exist",
                child.path,
                key,
                hint,
                "copy the base disk and every snapshot file of the VM, or consolidate snapshots in "
                "VMware first",
            )
        parent = load_layer(parent_path)
        if parent.cid != child.parent_cid:
            raise _broken(
                f"snapshot {child.path} expects parent CID {child.parent_cid:08x}, "
                f"but its parent {parent.path} has CID {parent.cid:08x}",
                child.path,
                key,
                hint,
                "the parent was changed after the snapshot was taken; consolidate snapshots in VMware, "
                "or restore the files from the same point in time",
            )
        layers.append(parent)
        seen.add(parent.path)
    return DiskChain(tuple(layers))


def member_layer(
    path: str, offset: int, size: int, text: str, header: SparseHeader, *, label: str, key: str | None = None
) -> DiskLayer:
    """The layer of a single-file VMDK stored as bytes ``[offset, offset+size)`` of ``path``.

    ``text`` and ``header`` are its embedded descriptor and sparse header;
    ``label`` names the member in messages.  A parent (``parentFileNameHint``)
    is UNSUPPORTED_DISK: an OVF package holds whole disks, not snapshot chains.
    """
    parsed = parse_descriptor(text, label)
    check_create_type(parsed.create_type, label)
    if parsed.parent_hint is not None:
        raise Vm2kvmError(
            ErrorCode.UNSUPPORTED_DISK,
            f"the disk is a snapshot of {parsed.parent_hint!r}; a package holds whole disks",
            file=label,
            key=key,
            value=parsed.parent_hint,
            hint="consolidate the VM's snapshots in VMware and export it again",
        )
    extent = embedded_extent(parsed, header, label)
    return dataclasses.replace(
        layer_of(path, parsed, (dataclasses.replace(extent, path=path),), embedded=True),
        parent_hint=None,
        member_offset=offset,
        member_size=size,
    )
