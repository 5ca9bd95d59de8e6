"""Reading VMDK files from the host: sparse headers and descriptor text, bounded.

``core.vmware.vmdk_header`` parses what this module reads.  Every read is
bounded and every failure is a ``Vm2kvmError`` naming the file: the daemon
reads files a caller points it at, so a FIFO, a device or a 2 TiB flat extent
named where a descriptor belongs must fail fast, not hang or fill memory.
"""

from __future__ import annotations

import dataclasses
import os
import stat

from vm2kvmd.core.vmware.vmdk_header import (
    SECTOR,
    SparseHeader,
    check_descriptor_header,
    check_descriptor_size,
    check_member,
    check_overhead,
    descriptor_file_text,
    embedded_range,
    embedded_text,
    invalid_disk,
    member_header,
    parse_sparse_header,
)
from vm2kvmd.errors import ErrorCode, Vm2kvmError

__all__ = [
    "open_regular",
    "read_descriptor",
    "read_descriptor_and_header",
    "read_member_descriptor",
    "read_sparse_header",
]


def open_regular(path: str, *, key: str | None = None, missing: ErrorCode = ErrorCode.DISK_MISSING) -> int:
    """Open ``path`` read-only; only regular files (a FIFO would block, a device is an RDM)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise Vm2kvmError(
            missing, "disk file does not exist", file=path, key=key, hint="copy it next to the VMX"
        ) from None
    except OSError as exc:
        raise Vm2kvmError(
            ErrorCode.INVALID_DISK,
            f"cannot open disk file {path}: {exc.strerror or exc}",
            file=path,
            key=key,
            hint="check that the file is readable by the vm2kvm daemon",
        ) from None
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        os.close(fd)
        raise invalid_disk(f"cannot stat disk file: {exc.strerror or exc}", path) from None
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise Vm2kvmError(
            ErrorCode.INVALID_DISK,
            f"{path} is not a regular file",
            file=path,
            key=key,
            hint="raw device mappings and devices are not converted; point the VM at a VMDK file",
        )
    return fd


def _pread(fd: int, length: int, offset: int, path: str) -> bytes:
    try:
        return os.pread(fd, length, offset)
    except OSError as exc:
        raise invalid_disk(f"cannot read disk file: {exc.strerror or exc}", path) from None


def _file_size(fd: int, path: str) -> int:
    try:
        return os.fstat(fd).st_size
    except OSError as exc:
        raise invalid_disk(f"cannot stat disk file: {exc.strerror or exc}", path) from None


def read_sparse_header(path: str) -> tuple[SparseHeader | None, int]:
    """The sparse header of an extent file (None if it has none) and the file size."""
    fd = open_regular(path)
    try:
        size = _file_size(fd, path)
        header = parse_sparse_header(_pread(fd, SECTOR, 0, path), path)
    finally:
        os.close(fd)
    if header is not None:
        check_overhead(header, size, path)
    return header, size


def _read_embedded(fd: int, header: SparseHeader, size: int, path: str) -> str:
    start, length = embedded_range(header, size, path)
    return embedded_text(_pread(fd, length, start, path), path)


def read_descriptor_and_header(path: str, *, key: str | None = None) -> tuple[str, SparseHeader | None]:
    """Descriptor text of ``path`` and, for a hosted sparse file, its header."""
    fd = open_regular(path, key=key)
    try:
        size = _file_size(fd, path)
        if size == 0:
            check_descriptor_size(size, path)
        header = parse_sparse_header(_pread(fd, SECTOR, 0, path), path)
        if header is not None:
            check_descriptor_header(header, path)
            text = _read_embedded(fd, header, size, path)
            check_overhead(header, size, path)
            return text, header
        check_descriptor_size(size, path)
        data = _pread(fd, size, 0, path)
    finally:
        os.close(fd)
    return descriptor_file_text(data, path), None


def read_descriptor(path: str) -> tuple[str, bool]:
    """Descriptor text of a VMDK and whether it was embedded in a sparse file."""
    text, header = read_descriptor_and_header(path)
    return text, header is not None


def read_member_descriptor(
    path: str, offset: int, size: int, *, label: str, key: str | None = None
) -> tuple[str, SparseHeader]:
    """Embedded descriptor and header of a hosted sparse VMDK stored at ``[offset, offset+size)`` of ``path``.

    For a disk inside an uncompressed OVA tar: every offset in the header is
    relative to the member's start, and every bound is the member's end, not
    the file's.  ``label`` names the member in errors.  Only a hosted sparse
    file (streamOptimized, monolithicSparse) carries its descriptor inside; a
    text descriptor or any other file is an error.
    """
    fd = open_regular(path, key=key)
    try:
        check_member(offset, size, _file_size(fd, path), label)
        header = member_header(_pread(fd, SECTOR, offset, label), size, label, key)
        # The header counts from the member's start; _read_embedded from the file's.
        in_file = header
        if header.descriptor_offset:
            shifted = header.descriptor_offset + offset // SECTOR
            in_file = dataclasses.replace(header, descriptor_offset=shifted)
        text = _read_embedded(fd, in_file, offset + size, label)
    finally:
        os.close(fd)
    check_overhead(header, size, label)
    return text, header
