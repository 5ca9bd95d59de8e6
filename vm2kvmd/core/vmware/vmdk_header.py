"""The binary side of VMDK files: sparse headers and embedded descriptors.

A VMDK descriptor is either a small text file or text embedded in a hosted
sparse file (magic ``KDMV``: monolithicSparse, streamOptimized).  Sparse
extents carry their own header: ``KDMV`` (hosted sparse), ``COWD`` (ESX
vmfsSparse redo logs) or the seSparse const header.  This module reads those
headers and the descriptor text; it never interprets the descriptor.

Every read is bounded and every failure is a ``Vm2kvmError`` naming the file:
the daemon reads files a caller points it at, so a FIFO, a device or a 2 TiB
flat extent named where a descriptor belongs must fail fast, not hang or fill
memory.
"""

from __future__ import annotations

import codecs
import dataclasses
import os
import re
import stat
import struct
from dataclasses import dataclass

from vm2kvmd.errors import ErrorCode, Vm2kvmError

SECTOR = 512

# qemu reads at most 1 MiB of a descriptor file; real descriptors are a few
# KiB, but a twoGbMaxExtent disk of several TiB lists thousands of extents.
MAX_DESCRIPTOR_BYTES = 1024 * 1024

KDMV_MAGIC = b"KDMV"
COWD_MAGIC = b"COWD"
SESPARSE_MAGIC = struct.pack("<Q", 0xCAFEBABE)

# VMware writes "\n \r\n" into every hosted sparse header so that a copy made
# in FTP ASCII mode (which rewrites line ends) can be detected.
_NL_DETECT_FLAG = 1 << 0
_NL_CHECK_BYTES = b"\n \r\n"
_COMPRESSED_FLAG = 1 << 16

# magic, version, flags, capacity, grainSize, descriptorOffset, descriptorSize,
# numGTEsPerGT, rgdOffset, gdOffset, overHead, uncleanShutdown, 4 check bytes,
# compressAlgorithm -- little-endian and packed, per VMware's VMDK spec.
_KDMV = struct.Struct("<4sIIQQQQIQQQB4sH")
# magic, version, flags, numSectors, grainSize, gdOffset, numGDEntries, freeSector
_COWD = struct.Struct("<4sIIIIIII")
# magic, version, capacity, grainSize, grainTableSize, flags
_SESPARSE = struct.Struct("<QQQQQQ")

_UTF8_BOM = b"\xef\xbb\xbf"
_TEXT_RESIDUE = bytes([0, 9, 10, 13, *range(32, 127)])
_ENCODING_RE = re.compile(rb'^[ \t]*encoding[ \t]*=[ \t]*"(?P<enc>[A-Za-z0-9_.:-]{1,40})"', re.MULTILINE)


@dataclass(frozen=True)
class SparseHeader:
    """What vm2kvm needs from the header of a sparse extent."""

    magic: str  # "KDMV", "COWD" or "SESPARSE"
    capacity: int  # sectors the extent provides
    descriptor_offset: int = 0  # sectors; KDMV only, 0 when nothing is embedded
    descriptor_size: int = 0  # sectors
    overhead: int = 0  # KDMV: sectors of metadata before the first grain
    compressed: bool = False  # KDMV streamOptimized


def _invalid(message: str, path: str, *, hint: str | None = None) -> Vm2kvmError:
    return Vm2kvmError(ErrorCode.INVALID_DISK, message, file=path, hint=hint)


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
        raise _invalid(f"cannot stat disk file: {exc.strerror or exc}", path) from None
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
        raise _invalid(f"cannot read disk file: {exc.strerror or exc}", path) from None


def _file_size(fd: int, path: str) -> int:
    try:
        return os.fstat(fd).st_size
    except OSError as exc:
        raise _invalid(f"cannot stat disk file: {exc.strerror or exc}", path) from None


def parse_sparse_header(data: bytes, path: str) -> SparseHeader | None:
    """Parse the first sector of a file; None when it is not a sparse extent."""
    if data.startswith(KDMV_MAGIC):
        if len(data) < _KDMV.size:
            raise _invalid("sparse VMDK header is truncated", path)
        (_, version, flags, capacity, grain, desc_off, desc_size, _, _, _, overhead, _, check, _) = (
            _KDMV.unpack_from(data)
        )
        if flags & _NL_DETECT_FLAG and check != _NL_CHECK_BYTES:
            raise _invalid(
                "sparse VMDK header is damaged (line-end check bytes changed)",
                path,
                hint="the file was probably copied in FTP ASCII/text mode; copy it again in binary mode",
            )
        if version > 3:
            raise Vm2kvmError(
                ErrorCode.UNSUPPORTED_DISK,
                f"sparse VMDK version {version} is not supported",
                file=path,
                value=str(version),
            )
        if grain == 0:
            raise _invalid("sparse VMDK header has a grain size of 0", path)
        return SparseHeader(
            magic="KDMV",
            capacity=capacity,
            descriptor_offset=desc_off,
            descriptor_size=desc_size,
            overhead=overhead,
            compressed=bool(flags & _COMPRESSED_FLAG),
        )
    if data.startswith(COWD_MAGIC):
        if len(data) < _COWD.size:
            raise _invalid("vmfsSparse (COWD) header is truncated", path)
        _, _, _, sectors, grain, _, _, _ = _COWD.unpack_from(data)
        if grain == 0:
            raise _invalid("vmfsSparse (COWD) header has a grain size of 0", path)
        return SparseHeader(magic="COWD", capacity=sectors)
    if data.startswith(SESPARSE_MAGIC):
        if len(data) < _SESPARSE.size:
            raise _invalid("seSparse header is truncated", path)
        _, _, capacity, _, _, _ = _SESPARSE.unpack_from(data)
        return SparseHeader(magic="SESPARSE", capacity=capacity)
    return None


def read_sparse_header(path: str) -> tuple[SparseHeader | None, int]:
    """The sparse header of an extent file (None if it has none) and the file size."""
    fd = open_regular(path)
    try:
        size = _file_size(fd, path)
        header = parse_sparse_header(_pread(fd, SECTOR, 0, path), path)
    finally:
        os.close(fd)
    if header is not None:
        _check_overhead(header, size, path)
    return header, size


def _check_overhead(header: SparseHeader, size: int, path: str) -> None:
    # The metadata (grain directories and tables) must be there; qemu checks the same.
    if header.overhead * SECTOR > size:
        raise _invalid(
            f"sparse file is truncated: {size} bytes, its header needs at least {header.overhead * SECTOR}",
            path,
            hint="the copy of this file is incomplete; copy it again from the datastore",
        )


def decode_descriptor(data: bytes, path: str) -> str:
    """Descriptor bytes to text: UTF-8, or the codec an ``encoding=`` line declares.

    Workstation on Windows writes ``encoding="windows-1252"`` (or GBK,
    Shift_JIS...) and file names in that code page; everything else is UTF-8.
    """
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        first_error = exc
    match = _ENCODING_RE.search(data)
    if match:
        declared = match["enc"].decode("ascii")
        try:
            codec = codecs.lookup(declared)
            if codec.name != "utf-8":
                return data.decode(codec.name)
        except (LookupError, UnicodeDecodeError):
            pass
    bad = data[first_error.start : first_error.start + 1]
    raise _invalid(
        f"descriptor text is not valid UTF-8 (byte {bad!r} at offset {first_error.start})",
        path,
        hint="VMDK descriptors are text; the file is damaged or not a VMDK descriptor",
    )


def _no_embedded(path: str) -> Vm2kvmError:
    return _invalid(
        "sparse file has no embedded descriptor",
        path,
        hint="this is one extent of a split (twoGbMaxExtentSparse) disk; "
        "name the small descriptor .vmdk that lists it instead",
    )


def _read_embedded(fd: int, header: SparseHeader, size: int, path: str) -> str:
    if header.descriptor_offset == 0 or header.descriptor_size == 0:
        raise _no_embedded(path)
    length = header.descriptor_size * SECTOR
    start = header.descriptor_offset * SECTOR
    if length > MAX_DESCRIPTOR_BYTES:
        raise _invalid(
            f"embedded descriptor of {length} bytes is larger than the {MAX_DESCRIPTOR_BYTES} allowed",
            path,
        )
    if start + length > size:
        raise _invalid(
            f"sparse file is truncated: {size} bytes, the embedded descriptor ends at {start + length}",
            path,
            hint="the copy of this file is incomplete; copy it again from the datastore",
        )
    raw = _pread(fd, length, start, path)
    # The descriptor area is NUL-padded to whole sectors.
    raw = raw.split(b"\x00", 1)[0]
    if not raw.strip():
        raise _no_embedded(path)
    return decode_descriptor(raw, path)


def read_descriptor_and_header(path: str, *, key: str | None = None) -> tuple[str, SparseHeader | None]:
    """Descriptor text of ``path`` and, for a hosted sparse file, its header."""
    fd = open_regular(path, key=key)
    try:
        size = _file_size(fd, path)
        if size == 0:
            raise _invalid("file is empty", path, hint="the disk file is damaged or was not copied")
        first = _pread(fd, SECTOR, 0, path)
        header = parse_sparse_header(first, path)
        if header is not None:
            if header.magic != "KDMV":
                kind = "vmfsSparse (COWD)" if header.magic == "COWD" else "seSparse"
                raise _invalid(
                    f"this is a {kind} snapshot extent, not a descriptor",
                    path,
                    hint="name the small descriptor .vmdk that lists it (the file without -delta/-sesparse)",
                )
            text = _read_embedded(fd, header, size, path)
            _check_overhead(header, size, path)
            return text, header
        if size > MAX_DESCRIPTOR_BYTES:
            raise _invalid(
                f"file of {size} bytes is too large for a VMDK descriptor and has no sparse header",
                path,
                hint="this looks like a raw -flat extent; name the small descriptor .vmdk that lists it",
            )
        data = _pread(fd, size, 0, path)
    finally:
        os.close(fd)
    # qemu rewrites a descriptor file in place when it updates the CID: the
    # text ends at a NUL, followed by NUL padding and, when the new CID is
    # shorter, the last few characters of the old text.  Anything else
    # after a NUL is binary.
    text_part, _, residue = data.partition(b"\x00")
    if residue.translate(None, _TEXT_RESIDUE):
        raise _invalid(
            "file is binary but not a VMDK (no sparse header, not a text descriptor)",
            path,
            hint="the disk file is damaged, or the VM names a file that is not a VMDK",
        )
    if not text_part.strip():
        raise _invalid(
            "file holds no descriptor text", path, hint="the disk file is damaged or was not copied"
        )
    return decode_descriptor(text_part, path), None


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
        end = _file_size(fd, path)
        # Tar members start on 512-byte blocks, so the header's sector offsets shift exactly.
        if offset < 0 or offset % SECTOR or size <= 0 or offset + size > end:
            raise _invalid(
                f"member of {size} bytes at offset {offset} is not a sector-aligned range of the file "
                f"({end} bytes)",
                label,
                hint="the package is truncated (an incomplete download?); copy it again",
            )
        first = _pread(fd, SECTOR, offset, label)
        header = parse_sparse_header(first, label)
        if header is None or header.magic != "KDMV":
            found = "a text descriptor" if first.lstrip().startswith(b"#") else "not a sparse VMDK"
            raise Vm2kvmError(
                ErrorCode.UNSUPPORTED_DISK,
                "a disk inside a package must be a single-file sparse VMDK (streamOptimized); "
                f"this is {found}",
                file=label,
                key=key,
                hint="unpack the package and migrate its .ovf, or re-export it with ovftool",
            )
        desc_end = (header.descriptor_offset + header.descriptor_size) * SECTOR
        if desc_end > size:
            raise _invalid(
                f"member is truncated: {size} bytes, the embedded descriptor ends at {desc_end}",
                label,
                hint="the package is damaged or incomplete; copy it again",
            )
        # The header counts from the member's start; _read_embedded from the file's.
        in_file = header
        if header.descriptor_offset:
            shifted = header.descriptor_offset + offset // SECTOR
            in_file = dataclasses.replace(header, descriptor_offset=shifted)
        text = _read_embedded(fd, in_file, offset + size, label)
    finally:
        os.close(fd)
    _check_overhead(header, size, label)
    return text, header
