"""Compressed OVAs: a gzip'd whole archive, and disk members stored with ``ovf:compression="gzip"``.

``Inspect`` reads only the descriptor (streaming through gzip) and shows such
disks with the DiskSection's capacity; the migration job extracts them into
its work directory, checks the manifest against the members as stored, and
removes everything it extracted afterwards.  Packages are built with
``tarfile`` and ``gzip``; every package directory is checksummed before and
after, also when the test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import os
import re
import subprocess
import tarfile
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from testbed.services import DirPool, remove_domain
from tests.helpers.ova_factory import OvfDisk, OvfNic, build_ova, manifest_text, ovf_text, write_tar
from tests.helpers.small_fs import ext4_with_reserve
from tests.helpers.vmdk_factory import MiB, make_vmdk, sha256_tree
from tests.pipeline.support import RecordingEvents
from vm2kvmd.core.hardware.model import EXTRACTED_AT_MIGRATION
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.pipeline import run_migration
from vm2kvmd.pipeline.planning import inspect_source
from vm2kvmd.sources import load_source
from vm2kvmd.sources.ovf.extract import extract_blocking, gunzip, gunzipped_size
from vm2kvmd.sources.ovf.files import Located

MAC = "00:50:56:9a:01:10"


@pytest.fixture
def untouched() -> Iterator[Callable[[Path], Path]]:
    watched: dict[Path, dict[str, str]] = {}

    def watch(directory: Path) -> Path:
        watched[directory] = sha256_tree(directory)
        return directory

    yield watch
    for directory, before in watched.items():
        assert sha256_tree(directory) == before, f"{directory} was modified"


def _disks(tmp_path: Path, sizes: tuple[int, ...]) -> list[OvfDisk]:
    staging = tmp_path / "staging"
    return [
        OvfDisk(make_vmdk(staging, f"web-disk{n}", "streamOptimized", size), bus=bus)
        for n, (size, bus) in enumerate(zip(sizes, ("scsi", "sata"), strict=False), start=1)
    ]


def gzip_whole_ova(
    tmp_path: Path, sizes: tuple[int, ...] = (24 * MiB,), *, extra: bytes = b""
) -> tuple[Path, list[OvfDisk]]:
    """``web.ova``: a plain OVA (descriptor, disks, manifest, ``extra.bin`` if any), gzip'd as a whole."""
    disks = _disks(tmp_path, sizes)
    out = tmp_path / "pkg"
    out.mkdir()
    plain = build_ova(tmp_path / "plain.ova", "web", ovf_text("web", disks, [OvfNic(MAC)]), disks)
    if extra:
        with tarfile.open(plain, "a", format=tarfile.USTAR_FORMAT) as tar:
            info = tarfile.TarInfo("extra.bin")
            info.size = len(extra)
            tar.addfile(info, io.BytesIO(extra))
    ova = out / "web.ova"
    ova.write_bytes(gzip.compress(plain.read_bytes()))
    plain.unlink()
    return ova, disks


def gzip_member_ova(
    tmp_path: Path, sizes: tuple[int, ...] = (24 * MiB,), *, manifest_of_decompressed: bool = False
) -> tuple[Path, list[OvfDisk]]:
    """``web.ova``: a plain tar whose disk members are gzip'd (``ovf:compression="gzip"``), as
    ``ovftool --compress`` writes them; ``ovf:size`` and the manifest are of the stored bytes."""
    disks = _disks(tmp_path, sizes)
    ovf = ovf_text("web", disks, [OvfNic(MAC)])
    members: list[tuple[str, bytes | Path]] = []
    for disk in disks:
        data = gzip.compress(disk.path.read_bytes(), compresslevel=1)
        members.append((disk.name, data))
        ovf = re.sub(
            rf'(<File ovf:href="{re.escape(disk.name)}" ovf:id="file\d+") ovf:size="\d+"',
            rf'\1 ovf:compression="gzip" ovf:size="{len(data)}"',
            ovf,
        )
    assert ovf.count('ovf:compression="gzip"') == len(disks)
    members.insert(0, ("web.ovf", ovf.encode()))
    listed = [(d.name, d.path) for d in disks] if manifest_of_decompressed else members[1:]
    members.append(("web.mf", manifest_text([members[0], *listed]).encode()))
    out = tmp_path / "pkg"
    out.mkdir()
    return write_tar(out / "web.ova", members), disks


OvaBuilder = Callable[[Path, tuple[int, ...]], tuple[Path, list[OvfDisk]]]
BUILDERS: dict[str, OvaBuilder] = {"whole archive gzip'd": gzip_whole_ova, "gzip'd members": gzip_member_ova}


# --- inspect: the descriptor only -------------------------------------------------------


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_inspect_shows_compressed_disks_with_their_capacity(
    tmp_path: Path, untouched: Callable[[Path], Path], kind: str
) -> None:
    ova, _ = BUILDERS[kind](tmp_path, (24 * MiB, 8 * MiB))
    untouched(ova.parent)
    result = inspect_source(str(ova), MigrateOptions(), None)
    vm = result.vm
    assert [d.extracted_capacity for d in vm.disks] == [24 * MiB, 8 * MiB]
    assert all(d.chain is None and not d.missing and d.problem_code is None for d in vm.disks)
    assert all(d.problem and EXTRACTED_AT_MIGRATION in d.problem for d in vm.disks)
    assert [d.capacity for d in result.plan.disks] == [24 * MiB, 8 * MiB]


def test_inspect_of_a_gzip_ova_reads_only_the_descriptor(tmp_path: Path) -> None:
    """Everything after the descriptor is garbage: inspect still works, it never reads that far."""
    ova, _ = gzip_whole_ova(tmp_path)
    plain = gzip.decompress(ova.read_bytes())
    # The first 64 KiB of the tar (the descriptor comes first) as a gzip stream that goes on
    # with garbage, not a complete gzip member: reading further would fail.
    deflate = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    head = deflate.compress(plain[: 64 * 1024]) + deflate.flush(zlib.Z_SYNC_FLUSH)
    ova.write_bytes(head + os.urandom(1 << 16))
    with pytest.raises((zlib.error, OSError, EOFError)):  # gzip.BadGzipFile is an OSError
        gzip.decompress(ova.read_bytes())
    vm = load_source(str(ova))
    assert vm.display_name == "web" and vm.disks[0].extracted_at_migration


# --- migration ------------------------------------------------------------------------


@pytest.fixture
def cleanup_domain(libvirt_conn: Any, domain_name: str) -> Iterator[str]:
    yield domain_name
    with contextlib.suppress(libvirt.libvirtError):
        remove_domain(libvirt_conn, domain_name)


def _compare(original: Path, target: str) -> bool:
    result = subprocess.run(
        ["qemu-img", "compare", "-q", "-U", "-f", "vmdk", "-F", "qcow2", str(original), target],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    return result.returncode == 0


def _leftovers(work: Path) -> list[str]:
    return sorted(str(p.relative_to(work)) for p in work.rglob("*")) if work.exists() else []


@pytest.mark.libvirt
@pytest.mark.parametrize("kind", list(BUILDERS))
async def test_migrate_a_compressed_ova_into_a_pool(
    tmp_path: Path,
    untouched: Callable[[Path], Path],
    dir_pool: DirPool,
    test_network: str,
    cleanup_domain: str,
    kind: str,
) -> None:
    ova, disks = await asyncio.to_thread(BUILDERS[kind], tmp_path, (24 * MiB, 8 * MiB))
    untouched(ova.parent)
    work = tmp_path / "work"
    options = MigrateOptions(
        name=cleanup_domain,
        pool=dir_pool.name,
        networks=(("VM Network", test_network),),
        domain_type="qemu",
        work_dir=str(work),
    )
    events = RecordingEvents()
    result = await run_migration(str(ova), options, events)

    assert len(result.outputs) == 2
    for original, target in zip(disks, result.outputs, strict=True):
        assert Path(target).parent == dir_pool.path
        assert await asyncio.to_thread(_compare, original.path, target)
    logs = "\n".join(events.logs)
    assert "checking 3 files" in logs and "manifest: web-disk2.vmdk" in logs
    assert ("decompressing" in logs) == (kind == "whole archive gzip'd")
    assert ("extracting web-disk1.vmdk" in logs) == (kind == "gzip'd members")
    assert await asyncio.to_thread(_leftovers, work) == []


def _corrupt(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    for i in range(offset, offset + 64):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


@pytest.mark.libvirt
async def test_a_corrupt_gzip_stream_is_a_named_error_and_leaves_nothing(
    tmp_path: Path, untouched: Callable[[Path], Path], dir_pool: DirPool, domain_name: str, libvirt_conn: Any
) -> None:
    # The disks compress to almost nothing: a member of random bytes puts the end far away.
    ova, _ = await asyncio.to_thread(gzip_whole_ova, tmp_path, extra=os.urandom(1 << 20))
    # Near the end, far past the descriptor (inspect still reads it): the extraction finds it.
    size = (await asyncio.to_thread(ova.stat)).st_size
    assert size > 256 * 1024
    await asyncio.to_thread(_corrupt, ova, size - 200)
    untouched(ova.parent)
    work = tmp_path / "work"
    options = MigrateOptions(
        name=domain_name, pool=dir_pool.name, networks=(("VM Network", "default"),), work_dir=str(work)
    )
    events = RecordingEvents()
    with pytest.raises(Vm2kvmError) as caught:
        await run_migration(str(ova), options, events)
    err = caught.value
    assert err.code is ErrorCode.INVALID_SOURCE, err.describe()
    assert "damaged gzip data" in err.describe() and str(ova) in err.describe(), err.describe()
    assert events.phases[0] == "inspect", events.phases
    assert "decompressing" in "\n".join(events.logs)  # found by the extraction, not by inspect
    assert await asyncio.to_thread(_leftovers, work) == []
    assert dir_pool.volume_names() == [] and list(dir_pool.path.iterdir()) == []
    assert domain_name not in [d.name() for d in libvirt_conn.listAllDomains(0)]


async def test_a_corrupt_gzip_member_is_named(tmp_path: Path, untouched: Callable[[Path], Path]) -> None:
    ova, _ = await asyncio.to_thread(gzip_member_ova, tmp_path)
    plain = ova.read_bytes()
    start = plain.index(b"\x1f\x8b")  # the disk member's gzip data
    await asyncio.to_thread(_corrupt, ova, start + 4096)
    untouched(ova.parent)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(Vm2kvmError) as caught:
        # No manifest check would pass now; extract the member straight away.
        await asyncio.to_thread(
            gunzip,
            Located(str(ova), start, len(plain) - start, f"{ova} member web-disk1.vmdk"),
            str(work / "x.vmdk"),
            str(work),
            threading.Event(),
        )
    assert caught.value.code is ErrorCode.INVALID_SOURCE
    assert "web-disk1.vmdk" in caught.value.describe() and "damaged gzip data" in caught.value.describe()


def test_the_manifest_covers_the_members_as_stored(tmp_path: Path, untouched: Callable[[Path], Path]) -> None:
    """A manifest of the decompressed bytes does not match: the .mf lists what the tar stores."""
    ova, _ = gzip_member_ova(tmp_path, manifest_of_decompressed=True)
    untouched(ova.parent)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(Vm2kvmError) as caught:
        extract_blocking(str(ova), str(dest), ["web-disk1.vmdk"], threading.Event(), lambda _: None)
    assert caught.value.code is ErrorCode.MANIFEST_MISMATCH
    assert "web-disk1.vmdk" in caught.value.describe()
    assert list(dest.iterdir()) == []  # checked before anything is extracted


def test_not_enough_space_names_the_work_dir(tmp_path: Path, untouched: Callable[[Path], Path]) -> None:
    """The work directory is on an ext4 that keeps half its blocks for root: the decompressed
    archive would fit only into root's reserve, which is not ours to fill (``adapters.free_space``)."""
    ova, _ = gzip_whole_ova(tmp_path, extra=bytes(20 * MiB))
    untouched(ova.parent)
    (tmp_path / "fs").mkdir()
    with ext4_with_reserve(tmp_path / "fs") as work:
        needed = gunzipped_size(Located(str(ova), 0, ova.stat().st_size, str(ova)))
        dest = work.path / "dest"
        dest.mkdir()
        free = work.bavail()
        assert free < needed < work.bfree()
        with pytest.raises(Vm2kvmError) as caught:
            extract_blocking(str(ova), str(dest), [], threading.Event(), lambda _: None)
        err = caught.value
        assert err.code is ErrorCode.NO_SPACE and err.file == str(dest) and err.key == "work-dir"
        assert err.message == (
            f"not enough space in the work directory {dest} to extract {ova}: "
            f"{needed} bytes needed (at least), {free} free"
        )
        assert list(dest.iterdir()) == []


def test_extraction_stops_when_asked(tmp_path: Path) -> None:
    ova, _ = gzip_whole_ova(tmp_path)
    dest = tmp_path / "dest"
    dest.mkdir()
    stop = threading.Event()
    stop.set()
    with pytest.raises(Vm2kvmError) as caught:
        extract_blocking(str(ova), str(dest), [], stop, lambda _: None)
    assert caught.value.code is ErrorCode.CANCELLED
