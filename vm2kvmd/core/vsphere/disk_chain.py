"""A vSphere disk's layers, read from their descriptors on the datastore, and how QEMU reads them.

Pure: the datastore files' first bytes in, frozen values and QEMU options out.  The API names a
disk's layers (``RemoteDisk.layers``, newest first); each is a descriptor file on the datastore
(ESXi writes ``vmfs`` descriptors over a ``-flat.vmdk`` and ``vmfsSparse``/``seSparse``
descriptors over a ``-delta.vmdk``/``-sesparse.vmdk``), or a hosted sparse file that holds its own
descriptor.  ``remote_layer`` parses one with the same descriptor parser as local disks,
``remote_chain`` checks the layers belong together (content IDs, sizes).

How QEMU reads them: every *data file* is a read-only NBD export of its own
(``adapters.remote_disk``, one nbdkit curl reader per file).  A chain whose top is flat is one
raw node over its export (offset and size from the extent).  A chain with sparse layers needs
QEMU's vmdk driver, which opens extents only by local file name from a descriptor; its layers are
read through descriptor *views* whose extents name local files that show the exports
(``remote_view``); the pipeline provides those files.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vm2kvmd.core.vmware.vmdk import NO_PARENT, check_create_type, parse_descriptor
from vm2kvmd.core.vmware.vmdk_header import (
    SECTOR,
    descriptor_file_text,
    embedded_text,
    parse_sparse_header,
)
from vm2kvmd.errors import ErrorCode, Vm2kvmError

__all__ = [
    "HEAD_BYTES",
    "RemoteChain",
    "RemoteLayer",
    "flat_node",
    "remote_chain",
    "remote_layer",
    "remote_view",
    "split_datastore_path",
]

# What is fetched of each layer: a descriptor is a few KiB; a hosted sparse file's embedded
# descriptor sits in its first sectors (VMware: sector 1, 20 sectors).
HEAD_BYTES = 64 * 1024

_DATASTORE_PATH_RE = re.compile(r"^\[(?P<ds>[^\]]+)\] ?(?P<path>.*)$")
_FLAT = frozenset({"FLAT", "VMFS"})
_SPARSE = frozenset({"SPARSE", "VMFSSPARSE"})


@dataclass(frozen=True)
class RemoteLayer:
    """One layer of a vSphere disk: its descriptor and the one data file it describes."""

    descriptor: str  # "[LocalDS_0] vm/vm-000001.vmdk"
    data: str  # "[LocalDS_0] vm/vm-000001-delta.vmdk"; the descriptor itself for a hosted sparse file
    kind: str  # "flat" or "sparse"
    size: int  # bytes of virtual disk
    offset: int = 0  # bytes into the data file where a flat extent starts
    cid: int = NO_PARENT
    parent_cid: int = NO_PARENT
    embedded: bool = False  # a hosted sparse file: the descriptor is inside the data file


@dataclass(frozen=True)
class RemoteChain:
    """A disk's layers, top (the running state) first."""

    layers: tuple[RemoteLayer, ...]

    @property
    def top(self) -> RemoteLayer:
        return self.layers[0]

    @property
    def size(self) -> int:
        return self.top.size

    @property
    def files(self) -> tuple[str, ...]:
        """Every data file, top first: one NBD export each."""
        return tuple(layer.data for layer in self.layers)


def split_datastore_path(path: str) -> tuple[str, str]:
    """``"[DS] dir/f.vmdk"`` -> ``("DS", "dir/f.vmdk")``; INVALID_VALUE for anything else."""
    match = _DATASTORE_PATH_RE.match(path)
    if not match or not match["path"] or match["path"].startswith("/"):
        raise Vm2kvmError(
            ErrorCode.INVALID_VALUE,
            "not a datastore path of the form '[DATASTORE] folder/file.vmdk'",
            value=path,
        )
    return match["ds"], match["path"]


def _beside(descriptor: str, name: str) -> str:
    """An extent's datastore path: its name relative to the descriptor's folder."""
    datastore, path = split_datastore_path(descriptor)
    if name.startswith("/") or "\\" in name or ".." in name.split("/"):
        raise Vm2kvmError(
            ErrorCode.UNSUPPORTED_DISK,
            "the descriptor names an extent outside its own folder",
            file=descriptor,
            value=name,
            hint="consolidate or clone the disk in vSphere so its files sit together",
        )
    folder = path.rpartition("/")[0]
    return f"[{datastore}] {folder + '/' if folder else ''}{name}"


def _unsupported(message: str, path: str, value: str | None = None) -> Vm2kvmError:
    return Vm2kvmError(
        ErrorCode.UNSUPPORTED_DISK,
        message,
        file=path,
        value=value,
        hint="clone the disk in vSphere to a thin or thick (flat) disk, or consolidate its snapshots",
    )


def remote_layer(path: str, head: bytes) -> RemoteLayer:
    """Layer ``path`` (a datastore path) from the first ``HEAD_BYTES`` of its file.

    Raises ``Vm2kvmError``: INVALID_DISK (not a VMDK, damaged), UNSUPPORTED_DISK (RDM, seSparse,
    several data extents, an extent elsewhere).
    """
    header = parse_sparse_header(head[:SECTOR], path)
    if header is not None:
        if header.magic != "KDMV" or not header.descriptor_offset:
            raise _unsupported(f"a bare {header.magic} sparse file is not a disk's descriptor", path)
        start, end = (
            header.descriptor_offset * SECTOR,
            (header.descriptor_offset + header.descriptor_size) * SECTOR,
        )
        if end > len(head):
            raise _unsupported("its embedded descriptor is larger than vm2kvm reads", path)
        parsed = parse_descriptor(embedded_text(head[start:end], path), path)
        return RemoteLayer(
            path, path, "sparse", header.capacity * SECTOR, 0, parsed.cid, parsed.parent_cid, embedded=True
        )
    if len(head) >= HEAD_BYTES:
        raise Vm2kvmError(
            ErrorCode.INVALID_DISK,
            "the file is larger than any descriptor and has no sparse header",
            file=path,
            hint="the VM names a data file (-flat.vmdk) where its descriptor belongs",
        )
    parsed = parse_descriptor(descriptor_file_text(head, path), path)
    check_create_type(parsed.create_type, path)
    extents = [ext for ext in parsed.extents if ext.kind != "ZERO"]
    if len(extents) != 1 or len(parsed.extents) != 1:
        raise _unsupported(
            f"{len(parsed.extents)} extents: vm2kvm reads vSphere disks with one data file each",
            path,
            parsed.create_type,
        )
    (ext,) = extents
    if ext.access == "NOACCESS" or ext.file_name is None:
        raise _unsupported(f"its extent is {ext.access}", path)
    if ext.kind in _FLAT:
        kind = "flat"
    elif ext.kind in _SPARSE:
        kind = "sparse"
    else:
        raise _unsupported(
            f"{ext.kind} extents ({parsed.create_type}) are not read from vSphere yet", path, ext.kind
        )
    return RemoteLayer(
        path,
        _beside(path, ext.file_name),
        kind,
        ext.sectors * SECTOR,
        ext.offset * SECTOR,
        parsed.cid,
        parsed.parent_cid,
    )


def remote_chain(layers: Sequence[RemoteLayer], *, key: str | None = None) -> RemoteChain:
    """The layers (top first) as one chain: each parent's CID is its child's parentCID, one size.

    Raises DISK_CHAIN_BROKEN naming the layer that does not fit.
    """
    if not layers:
        raise ValueError("a disk has at least one layer")
    for child, parent in itertools.pairwise(layers):
        if child.kind == "flat":
            raise Vm2kvmError(
                ErrorCode.DISK_CHAIN_BROKEN,
                f"vSphere names a parent ({parent.descriptor}) for a flat disk",
                file=child.descriptor,
                key=key,
            )
        if child.parent_cid != parent.cid:
            raise Vm2kvmError(
                ErrorCode.DISK_CHAIN_BROKEN,
                f"its parentCID {child.parent_cid:08x} is not the CID {parent.cid:08x} "
                f"of {parent.descriptor}",
                file=child.descriptor,
                key=key,
                hint="the parent changed after the snapshot was taken; consolidate the snapshots in vSphere",
            )
        if child.size != parent.size:
            raise Vm2kvmError(
                ErrorCode.DISK_CHAIN_BROKEN,
                f"it has {child.size} bytes, its parent {parent.descriptor} {parent.size}",
                file=child.descriptor,
                key=key,
            )
    if layers[-1].parent_cid != NO_PARENT:
        raise Vm2kvmError(
            ErrorCode.DISK_CHAIN_BROKEN,
            "the last layer vSphere names still has a parent",
            file=layers[-1].descriptor,
            key=key,
        )
    return RemoteChain(tuple(layers))


def flat_node(layer: RemoteLayer, file: Mapping[str, Any]) -> dict[str, Any]:
    """A flat layer as a raw node over ``file`` (its data file's read-only NBD node)."""
    return {
        "driver": "raw",
        "read-only": True,
        "offset": layer.offset,
        "size": layer.size,
        "file": dict(file),
    }


def remote_view(layer: RemoteLayer, local: str) -> str:
    """A descriptor for QEMU's vmdk driver: ``layer`` with its one extent at the local file ``local``.

    ``local`` shows the layer's data file (its NBD export) as a file; it must be an absolute path
    QEMU can parse (no quote, no line end).
    """
    if not local.startswith("/") or any(c in local for c in '"\n\r'):
        raise ValueError(f"not a usable extent path for a descriptor view: {local!r}")
    sectors = layer.size // SECTOR
    if layer.kind == "flat":
        extent = f'RW {sectors} FLAT "{local}" {layer.offset // SECTOR}'
        create_type = "monolithicFlat"
    else:
        extent = f'RW {sectors} SPARSE "{local}"' if layer.embedded else f'RW {sectors} VMFSSPARSE "{local}"'
        create_type = "twoGbMaxExtentSparse" if layer.embedded else "vmfsSparse"
    return "\n".join(
        [
            "# Disk DescriptorFile",
            "# vm2kvm: how QEMU reads a vSphere layer; the data comes from the datastore",
            "version=1",
            f"CID={layer.cid:08x}",
            f"parentCID={layer.parent_cid:08x}",
            f'createType="{create_type}"',
            # No blank line before the extent: qemu 7.2 would read it twice.
            "# Extent description",
            extent,
            "",
        ]
    )
