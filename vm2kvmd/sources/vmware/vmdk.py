"""VMDK files on the host to ``DiskLayer`` and ``DiskChain``.

``core.vmware.vmdk`` parses and judges; this module reads: the descriptor
(``vmdk_files``), each extent's file (resolved through the ``PathResolver``, so
a VMDK cannot lead the daemon outside the VM directory) and, for a chain, every
parent ``parentFileNameHint`` names (the choices made: ``core.vmware.vmdk``).
"""

from __future__ import annotations

import os
import stat

from vm2kvmd.core.hardware.model import DiskChain, DiskLayer, Extent, Note
from vm2kvmd.core.vmware.paths import PathResolver
from vm2kvmd.core.vmware.vmdk import (
    ExtentLine,
    check_create_type,
    check_extent,
    check_flat_extent,
    check_sparse_extent,
    embedded_extent,
    follow_chain,
    invalid_descriptor,
    is_sparse,
    layer_of,
    member_layer,
    parse_descriptor,
)
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.sources.vmware.vmdk_files import (
    read_descriptor_and_header,
    read_member_descriptor,
    read_sparse_header,
)

__all__ = ["load_chain", "load_layer", "load_member_layer"]


def _stat_extent(ext_path: str, ext: ExtentLine, descriptor: str, key: str | None) -> os.stat_result:
    try:
        st = os.stat(ext_path)
    except FileNotFoundError:
        raise Vm2kvmError(
            ErrorCode.DISK_MISSING,
            f"extent file {ext_path} (extent line {ext.line}) does not exist",
            file=descriptor,
            key=key,
            value=ext.file_name,
            hint="copy every file of the disk (-flat, -sNNN, -delta...) next to its descriptor",
        ) from None
    except OSError as exc:
        raise Vm2kvmError(
            ErrorCode.INVALID_DISK,
            f"cannot read extent file {ext_path}: {exc.strerror or exc}",
            file=descriptor,
            key=key,
            value=ext.file_name,
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise Vm2kvmError(
            ErrorCode.INVALID_DISK,
            f"extent file {ext_path} is not a regular file",
            file=descriptor,
            key=key,
            value=ext.file_name,
            hint="devices and raw device mappings are not converted",
        )
    return st


def _load_extent(
    ext: ExtentLine, descriptor: str, resolver: PathResolver, key: str | None, notes: list[Note]
) -> Extent:
    check_extent(ext, descriptor, key)
    if ext.file_name is None:
        return Extent(ext.access, ext.sectors, ext.kind, None, None, 0)
    resolved = resolver.resolve(
        ext.file_name, relative_to=os.path.dirname(descriptor), key=key, file=descriptor
    )
    if resolved.note is not None:
        notes.append(resolved.note)
    ext_path = resolved.path
    if ext_path == descriptor:
        raise invalid_descriptor(
            f"extent line {ext.line} names the descriptor itself as its data", descriptor
        )
    if is_sparse(ext):
        _stat_extent(ext_path, ext, descriptor, key)
        header, _ = read_sparse_header(ext_path)
        check_sparse_extent(ext, ext_path, header, descriptor, key)
    else:
        check_flat_extent(
            ext, ext_path, _stat_extent(ext_path, ext, descriptor, key).st_size, descriptor, key
        )
    return Extent(ext.access, ext.sectors, ext.kind, ext.file_name, ext_path, ext.offset)


def load_layer(path: str, resolver: PathResolver, *, key: str | None = None) -> DiskLayer:
    """Read one VMDK (descriptor and extents) without following its parent.

    ``key`` is the VMX key that named the disk; it goes into errors and notes.
    Raises ``Vm2kvmError``: DISK_MISSING (the file or an extent is absent),
    INVALID_DISK, UNSUPPORTED_DISK, PATH_OUTSIDE_SOURCE, INVALID_VALUE.
    """
    real = os.path.realpath(path)
    text, own_header = read_descriptor_and_header(real, key=key)
    parsed = parse_descriptor(text, real)
    check_create_type(parsed.create_type, real)
    if own_header is not None:
        return layer_of(real, parsed, (embedded_extent(parsed, own_header, real),), embedded=True)
    notes: list[Note] = []
    extents = tuple(_load_extent(ext, real, resolver, key, notes) for ext in parsed.extents)
    return layer_of(real, parsed, extents, embedded=False, notes=tuple(notes))


def load_chain(path: str, resolver: PathResolver, *, key: str | None = None) -> DiskChain:
    """Read a VMDK and every parent named by ``parentFileNameHint``, top first.

    Raises what ``load_layer`` raises, and DISK_CHAIN_BROKEN for a missing
    parent, a CID mismatch, a cycle, or more than ``MAX_CHAIN_LAYERS`` layers.
    """
    top = load_layer(path, resolver, key=key)
    return follow_chain(top, resolver, lambda parent: load_layer(parent, resolver, key=key), key=key)


def load_member_layer(path: str, offset: int, size: int, *, name: str, key: str | None = None) -> DiskLayer:
    """A single-file VMDK stored as bytes ``[offset, offset+size)`` of ``path`` (a member of an OVA tar).

    The layer's ``path`` is the archive, its ``member_offset``/``member_size``
    the byte range; QEMU opens it through a raw offset node
    (``core.planning.blockdev``).  ``name`` is the member's name, for messages.
    Raises what ``load_layer`` raises; a parent (``parentFileNameHint``) is
    UNSUPPORTED_DISK: an OVF package holds whole disks, not snapshot chains.
    """
    real = os.path.realpath(path)
    label = f"{real} member {name}"
    text, header = read_member_descriptor(real, offset, size, label=label, key=key)
    return member_layer(real, offset, size, text, header, label=label, key=key)
