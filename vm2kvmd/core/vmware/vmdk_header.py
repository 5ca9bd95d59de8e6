"""The binary side of VMDK files: sparse headers and embedded descriptors.

A VMDK descriptor is either a small text file or text embedded in a hosted
sparse file (magic ``KDMV``: monolithicSparse, streamOptimized).  Sparse
extents carry their own header: ``KDMV`` (hosted sparse), ``COWD`` (ESX
vmfsSparse redo logs) or the seSparse const header.  This module parses those
headers and decodes the descriptor text from bytes; it never interprets the
descriptor, and reads nothing itself: ``vm2kvmd.sources.vmware.vmdk_files``
reads the bytes (bounded: a FIFO, a device or a 2 TiB flat extent named where
a descriptor belongs must fail fast, not hang or fill memory).
"""

from __future__ import annotations

import codecs
import re
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


def invalid_disk(message: str, path: str, *, hint: str | None = None) -> Vm2kvmError:
    return Vm2kvmError(ErrorCode.INVALID_DISK, message, file=path, hint=hint)


def parse_sparse_header(data: bytes, path: str) -> SparseHeader | None:
    """Parse the first sector of a file; None when it is not a sparse extent."""
    if data.startswith(KDMV_MAGIC):
        if len(data) < _KDMV.size:
            raise invalid_disk("sparse VMDK header is truncated", path)
        (_, version, flags, capacity, grain, desc_off, desc_size, _, _, _, overhead, _, check, _) = (
            _KDMV.unpack_from(data)
        )
        if flags & _NL_DETECT_FLAG and check != _NL_CHECK_BYTES:
            raise invalid_disk(
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
            raise invalid_disk("sparse VMDK header has a grain size of 0", path)
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
            raise invalid_disk("vmfsSparse (COWD) header is truncated", path)
        _, _, _, sectors, grain, _, _, _ = _COWD.unpack_from(data)
        if grain == 0:
            raise invalid_disk("vmfsSparse (COWD) header has a grain size of 0", path)
        return SparseHeader(magic="COWD", capacity=sectors)
    if data.startswith(SESPARSE_MAGIC):
        if len(data) < _SESPARSE.size:
            raise invalid_disk("seSparse header is truncated", path)
        _, _, capacity, _, _, _ = _SESPARSE.unpack_from(data)
        return SparseHeader(magic="SESPARSE", capacity=capacity)
    return None


def check_overhead(header: SparseHeader, size: int, path: str) -> None:
    # The metadata (grain directories and tables) must be there; qemu checks the same.
    if header.overhead * SECTOR > size:
        raise invalid_disk(
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
    raise invalid_disk(
        f"descriptor text is not valid UTF-8 (byte {bad!r} at offset {first_error.start})",
        path,
        hint="VMDK descriptors are text; the file is damaged or not a VMDK descriptor",
    )


def no_embedded(path: str) -> Vm2kvmError:
    return invalid_disk(
        "sparse file has no embedded descriptor",
        path,
        hint="this is one extent of a split (twoGbMaxExtentSparse) disk; "
        "name the small descriptor .vmdk that lists it instead",
    )


def embedded_range(header: SparseHeader, size: int, path: str) -> tuple[int, int]:
    """Byte offset and length of the descriptor embedded in a sparse file of ``size`` bytes."""
    if header.descriptor_offset == 0 or header.descriptor_size == 0:
        raise no_embedded(path)
    length = header.descriptor_size * SECTOR
    start = header.descriptor_offset * SECTOR
    if length > MAX_DESCRIPTOR_BYTES:
        raise invalid_disk(
            f"embedded descriptor of {length} bytes is larger than the {MAX_DESCRIPTOR_BYTES} allowed",
            path,
        )
    if start + length > size:
        raise invalid_disk(
            f"sparse file is truncated: {size} bytes, the embedded descriptor ends at {start + length}",
            path,
            hint="the copy of this file is incomplete; copy it again from the datastore",
        )
    return start, length


def embedded_text(raw: bytes, path: str) -> str:
    """The descriptor area of a sparse file (``embedded_range``) to text."""
    # The descriptor area is NUL-padded to whole sectors.
    raw = raw.split(b"\x00", 1)[0]
    if not raw.strip():
        raise no_embedded(path)
    return decode_descriptor(raw, path)


def check_descriptor_header(header: SparseHeader, path: str) -> None:
    """A VMDK named as a disk may be a hosted sparse file, never a snapshot extent."""
    if header.magic != "KDMV":
        kind = "vmfsSparse (COWD)" if header.magic == "COWD" else "seSparse"
        raise invalid_disk(
            f"this is a {kind} snapshot extent, not a descriptor",
            path,
            hint="name the small descriptor .vmdk that lists it (the file without -delta/-sesparse)",
        )


def check_descriptor_size(size: int, path: str) -> None:
    """A text descriptor file of ``size`` bytes: not empty, not a flat extent."""
    if size == 0:
        raise invalid_disk("file is empty", path, hint="the disk file is damaged or was not copied")
    if size > MAX_DESCRIPTOR_BYTES:
        raise invalid_disk(
            f"file of {size} bytes is too large for a VMDK descriptor and has no sparse header",
            path,
            hint="this looks like a raw -flat extent; name the small descriptor .vmdk that lists it",
        )


def descriptor_file_text(data: bytes, path: str) -> str:
    """The whole content of a text descriptor file to text."""
    # qemu rewrites a descriptor file in place when it updates the CID: the
    # text ends at a NUL, followed by NUL padding and, when the new CID is
    # shorter, the last few characters of the old text.  Anything else
    # after a NUL is binary.
    text_part, _, residue = data.partition(b"\x00")
    if residue.translate(None, _TEXT_RESIDUE):
        raise invalid_disk(
            "file is binary but not a VMDK (no sparse header, not a text descriptor)",
            path,
            hint="the disk file is damaged, or the VM names a file that is not a VMDK",
        )
    if not text_part.strip():
        raise invalid_disk(
            "file holds no descriptor text", path, hint="the disk file is damaged or was not copied"
        )
    return decode_descriptor(text_part, path)


def check_member(offset: int, size: int, end: int, label: str) -> None:
    """A package member ``[offset, offset+size)`` of a file of ``end`` bytes."""
    # Tar members start on 512-byte blocks, so the header's sector offsets shift exactly.
    if offset < 0 or offset % SECTOR or size <= 0 or offset + size > end:
        raise invalid_disk(
            f"member of {size} bytes at offset {offset} is not a sector-aligned range of the file "
            f"({end} bytes)",
            label,
            hint="the package is truncated (an incomplete download?); copy it again",
        )


def member_header(first: bytes, size: int, label: str, key: str | None) -> SparseHeader:
    """The header of a VMDK stored as a package member of ``size`` bytes; ``first`` is its first sector."""
    header = parse_sparse_header(first, label)
    if header is None or header.magic != "KDMV":
        found = "a text descriptor" if first.lstrip().startswith(b"#") else "not a sparse VMDK"
        raise Vm2kvmError(
            ErrorCode.UNSUPPORTED_DISK,
            f"a disk inside a package must be a single-file sparse VMDK (streamOptimized); this is {found}",
            file=label,
            key=key,
            hint="unpack the package and migrate its .ovf, or re-export it with ovftool",
        )
    desc_end = (header.descriptor_offset + header.descriptor_size) * SECTOR
    if desc_end > size:
        raise invalid_disk(
            f"member is truncated: {size} bytes, the embedded descriptor ends at {desc_end}",
            label,
            hint="the package is damaged or incomplete; copy it again",
        )
    return header
