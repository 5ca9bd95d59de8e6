"""``.ova`` files: a tar of an OVF package, read in place; compressed ones extracted by the job.

``index_ova`` walks the tar headers (Python's ``tarfile`` seeks from header
to header; it reads no data) and records each regular member's data offset
and size.  Disks stay inside the archive: a ``DiskLayer`` whose ``path`` is
the ``.ova`` and whose ``member_offset``/``member_size`` is the member's byte
range, which QEMU opens through a raw offset node (``core.planning.blockdev``).
Nothing is written anywhere, not even to a work directory.

Compressed with gzip (the whole ``.ova`` a gzip stream of the tar, or disk
members with ``ovf:compression="gzip"``): ``GzipOvaPackage`` reads only the
descriptor, streaming through gzip to it; such disks are
``ExtractedAtMigration`` (their capacity from the DiskSection), and the
migration job extracts them into its work directory (``sources.ovf.extract``)
and continues with an ``ExtractedOvaPackage``.

Refused, with a hint:
- an archive compressed with bzip2, xz or zstd, and members stored with
  ``ovf:chunkSize`` (a disk problem, see ``core.ovf.storage``);
- anything that is not a tar, sparse or duplicate members, a member whose data
  runs past the end of the file (a truncated download).
Tolerated with a note: a descriptor that is not the first member (the OVF
specification wants it first, for streaming), links and directories (never
followed), a missing end-of-archive marker.
"""

from __future__ import annotations

import gzip
import os
import tarfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import BinaryIO

from vm2kvmd.core.hardware.model import DiskChain, Note
from vm2kvmd.core.ovf.envelope import MAX_OVF_BYTES, OvfEnvelope, OvfFile
from vm2kvmd.core.ovf.storage import ExtractedAtMigration
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.sources.ovf.files import Located, open_read_only, stat_source
from vm2kvmd.sources.ovf.package import Package
from vm2kvmd.sources.vmware.vmdk import load_member_layer

BLOCK = 512
GZIP_MAGIC = b"\x1f\x8b"
_COMPRESSION_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)


@dataclass(frozen=True)
class Member:
    name: str
    offset: int  # of its data in the archive
    size: int


@dataclass(frozen=True)
class OvaIndex:
    path: str
    members: tuple[Member, ...]
    by_name: Mapping[str, Member]
    complete: bool  # the archive ends with its end-of-archive marker
    notes: tuple[Note, ...] = ()


def _invalid(path: str, message: str, hint: str) -> Vm2kvmError:
    return Vm2kvmError(ErrorCode.INVALID_SOURCE, message, file=path, hint=hint)


def _check_head(path: str, head: bytes) -> None:
    for magic, kind in _COMPRESSION_MAGIC:
        if head.startswith(magic):
            raise _invalid(
                path,
                f"the archive is compressed with {kind}; an OVA is an uncompressed tar",
                f"decompress it first (e.g. {kind} -dc < file > plain.ova) or unpack it and migrate the .ovf",
            )
    if head.lstrip().startswith(b"<"):
        raise _invalid(path, "this is an XML file, not a tar archive", "an OVF descriptor must be named .ovf")


def _name(info: tarfile.TarInfo) -> str:
    name = info.name
    while name.startswith("./"):
        name = name[2:]
    return name


def _open_tar(handle: BinaryIO, path: str) -> tarfile.TarFile:
    try:
        # "r:" reads an uncompressed tar only: no transparent decompression.
        return tarfile.open(fileobj=handle, mode="r:")
    except tarfile.TarError as err:
        raise _invalid(
            path,
            f"not a tar archive ({err})",
            "an OVA is an uncompressed tar; the file is damaged or not an OVA",
        ) from None


def _member(info: tarfile.TarInfo, path: str, size: int, notes: list[Note]) -> Member | None:
    """A regular member's data range; None for what is skipped (directories, links)."""
    name = _name(info)
    if info.isdir():
        return None
    if not info.isreg():
        notes.append(Note(f"archive member {name!r} is a link or special file; ignored"))
        return None
    if info.issparse():
        raise _invalid(path, f"member {name!r} is a sparse tar member", "re-create the OVA with ovftool")
    if info.offset_data + info.size > size:
        raise _invalid(
            path,
            f"the archive is truncated: member {name!r} needs {info.offset_data + info.size} bytes, "
            f"the file has {size}",
            "the download or copy is incomplete; copy the OVA again",
        )
    return Member(name, info.offset_data, info.size)


def index_ova(path: str) -> OvaIndex:
    """The members of the OVA at ``path`` (blocking).  Raises ``Vm2kvmError`` naming the file."""
    size = stat_source(path, "OVA file").st_size
    fd = open_read_only(path, "OVA file")
    members: list[Member] = []
    notes: list[Note] = []
    with os.fdopen(fd, "rb") as handle:
        _check_head(path, handle.read(BLOCK))
        handle.seek(0)
        with _open_tar(handle, path) as tar:
            try:
                for info in tar:
                    if (member := _member(info, path, size, notes)) is not None:
                        members.append(member)
            except tarfile.TarError as err:
                raise _invalid(path, f"damaged tar archive: {err}", "copy the OVA again") from None
            end = tar.offset
        handle.seek(end)
        trailer = handle.read(2 * BLOCK)
    by_name: dict[str, Member] = {}
    for member in members:
        if member.name in by_name:
            raise _invalid(
                path, f"member {member.name!r} appears twice", "re-create the OVA; it is ambiguous"
            )
        by_name[member.name] = member
    complete = len(trailer) == 2 * BLOCK and not trailer.strip(b"\0")
    if not complete:
        notes.append(Note("the archive has no end-of-archive marker; it may be truncated"))
    return OvaIndex(path, tuple(members), MappingProxyType(by_name), complete, tuple(notes))


class OvaPackage(Package):
    """An OVF package inside an ``.ova``."""

    def __init__(self, path: str) -> None:
        index = index_ova(path)
        descriptors = [m for m in index.members if m.name.lower().endswith(".ovf")]
        if not descriptors:
            raise _invalid(
                path,
                "the archive holds no .ovf descriptor" + ("" if index.complete else " (it looks truncated)"),
                "an OVA is a tar of an .ovf and its disks; the file is damaged or not an OVA",
            )
        if len(descriptors) > 1:
            names = ", ".join(m.name for m in descriptors)
            raise _invalid(path, f"the archive holds several descriptors ({names})", "an OVA holds one VM")
        first = descriptors[0]
        super().__init__(path, self._located(index, first), first.name)
        self.index = index
        self.notes.extend(index.notes)
        if index.members[0] is not first:
            self.notes.append(
                Note(
                    f"the descriptor {first.name} is not the archive's first member, "
                    "as OVF requires; read anyway"
                )
            )

    def _located(self, index: OvaIndex, member: Member) -> Located:
        return Located(index.path, member.offset, member.size, f"{index.path} member {member.name}")

    def locate(self, name: str) -> Located | None:
        member = self.index.by_name.get(name.removeprefix("./"))
        return None if member is None else self._located(self.index, member)

    def load_disk(self, file: OvfFile, key: str) -> DiskChain:
        loc = self.locate(file.href)
        if loc is None:
            truncated = "" if self.index.complete else "; the archive looks truncated"
            raise Vm2kvmError(
                ErrorCode.DISK_MISSING,
                f"the archive has no member {file.href!r} ({file.locator}){truncated}",
                file=self.path,
                key=key,
                value=file.href,
                hint="the OVA is incomplete or damaged; copy it again",
            )
        self.check_size(file, loc, key)
        if file.compression == "gzip":
            raise ExtractedAtMigration(file.href)  # after the size check: the member is what is stored
        return DiskChain((load_member_layer(self.path, loc.offset, loc.size, name=file.href, key=key),))


def is_gzip(path: str) -> bool:
    """Whether the file at ``path`` is a gzip stream (blocking)."""
    stat_source(path, "OVA file")  # a directory or a missing file is named as such
    fd = open_read_only(path, "OVA file")
    try:
        return os.pread(fd, len(GZIP_MAGIC), 0) == GZIP_MAGIC
    finally:
        os.close(fd)


def _gzip_descriptor(path: str) -> tuple[str, bytes, bool]:
    """The first ``.ovf`` member of the gzip'd tar at ``path``: (name, bytes, was it the first member).

    Streams through gzip: only what precedes the descriptor is decompressed.
    """
    fd = open_read_only(path, "OVA file")
    first = True
    try:
        with (
            os.fdopen(fd, "rb") as raw,
            gzip.GzipFile(fileobj=raw, mode="rb") as stream,
            tarfile.open(fileobj=stream, mode="r|") as tar,
        ):
            for info in tar:
                name = _name(info)
                if info.isreg() and name.lower().endswith(".ovf"):
                    if info.size > MAX_OVF_BYTES:
                        raise _invalid(
                            path,
                            f"the descriptor {name} of {info.size} bytes is larger than the "
                            f"{MAX_OVF_BYTES} allowed",
                            "this is not an OVF descriptor a VMware tool wrote",
                        )
                    member = tar.extractfile(info)
                    assert member is not None
                    return name, member.read(), first
                first = False
    except (OSError, EOFError, zlib.error, tarfile.TarError) as err:
        raise _invalid(
            path,
            f"damaged gzip data in the compressed archive: {err}",
            "the download or copy is damaged; copy the OVA again",
        ) from None
    raise _invalid(
        path,
        "the compressed archive holds no .ovf descriptor",
        "an OVA is a tar of an .ovf and its disks; the file is damaged or not an OVA",
    )


class GzipOvaPackage(Package):
    """An ``.ova`` compressed as a whole with gzip, for ``inspect``: the descriptor only.

    Every disk is ``ExtractedAtMigration``; nothing is located (the manifest
    and the disks are read by the job, after extracting: ``sources.ovf.extract``).
    """

    def __init__(self, path: str) -> None:
        stat_source(path, "OVA file")
        name, data, first = _gzip_descriptor(path)
        super().__init__(path, Located(path, 0, len(data), f"{path} member {name}"), name)
        self._descriptor = data
        self.notes.append(
            Note(
                "the archive is compressed with gzip; it is decompressed into the work directory at migration"
            )
        )
        if not first:
            self.notes.append(
                Note(f"the descriptor {name} is not the archive's first member, as OVF requires; read anyway")
            )

    def descriptor_bytes(self) -> bytes:
        return self._descriptor

    def manifest_notes(self, env: OvfEnvelope) -> list[Note]:
        return [Note(f"a compressed archive's manifest ({self.stem}.mf), if any, is checked at migration")]

    def locate(self, name: str) -> Located | None:
        return None

    def load_disk(self, file: OvfFile, key: str) -> DiskChain:
        raise ExtractedAtMigration(file.href)


class ExtractedOvaPackage(OvaPackage):
    """A (decompressed) ``.ova`` whose gzip'd disk members were extracted to plain files.

    ``path`` is the plain tar (the user's ``.ova``, or its decompressed copy
    in the job's work directory); ``source`` the ``.ova`` the user named;
    ``extracted`` maps a member's name to its decompressed file.
    """

    def __init__(self, path: str, source: str, extracted: Mapping[str, str]) -> None:
        super().__init__(path)
        self._source = source
        self.extracted = dict(extracted)

    @property
    def source_path(self) -> str:
        return self._source

    def load_disk(self, file: OvfFile, key: str) -> DiskChain:
        target = self.extracted.get(file.href)
        if file.compression != "gzip" or target is None:
            return super().load_disk(file, key)
        loc = self.locate(file.href)
        assert loc is not None  # it was extracted from there
        self.check_size(file, loc, key)
        size = stat_source(target, "extracted disk").st_size
        return DiskChain((load_member_layer(target, 0, size, name=file.href, key=key),))
