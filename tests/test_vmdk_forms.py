"""Every VMDK form migrates with the right content, size and allocation.

Each case builds a source disk with ``tests/helpers/vmdk_factory`` (or a
hand-written descriptor and data files), migrates a one-disk VM through
``run_migration`` and checks the target against the raw reference image the
disk must equal: the guest-visible content (``qemu-img compare``), the
virtual size, the allocation (no thick copies of sparse disks), and that no
source file changed.  Forms qemu 7.2 reads wrongly or not at all by itself
(vmfsThin & co, ZERO and RDONLY extents, extents at resolved datastore or
Windows paths) go through descriptor views; they are also checked to leave no
view directory behind.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from testbed.services import DirPool
from tests.helpers.vmdk_factory import (
    GiB,
    MiB,
    Region,
    default_pattern,
    delta_offsets,
    images_equal,
    make_delta,
    make_flat_file,
    make_vmdk,
    pattern_regions,
    qemu_info,
    rewrite_descriptor,
    sha256_tree,
    write_descriptor,
    write_reference_raw,
)
from tests.pipeline.support import RecordingEvents as Events
from vm2kvmd.aio import in_thread
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.pipeline import MigrationResult, run_migration
from vm2kvmd.pipeline.blockdev import SourceViews, open_source
from vm2kvmd.sources.vmware.paths import local_resolver
from vm2kvmd.sources.vmware.vmdk import load_chain

# A qcow2 target's own metadata (header, L1, refcount table and block, L2 tables) and
# the file system's rounding; anything beyond the data and this is a thick copy.
METADATA_SLACK = 1 * MiB


@dataclass(frozen=True)
class Source:
    """A one-disk VM and what its disk must read as."""

    vmx: Path
    trees: tuple[Path, ...]  # every directory holding source files (checksummed)
    reference: Path  # raw image with the guest-visible content
    size: int
    datastores: tuple[tuple[str, str], ...] = ()


def write_vmx(directory: Path, disk: str) -> Path:
    lines = [
        '.encoding = "UTF-8"',
        'config.version = "8"',
        'virtualHW.version = "19"',
        'displayName = "Forms"',
        'guestOS = "debian12-64"',
        'memsize = "256"',
        'scsi0.present = "TRUE"',
        'scsi0.virtualDev = "pvscsi"',
        'scsi0:0.present = "TRUE"',
        f'scsi0:0.fileName = "{disk}"',
    ]
    vmx = directory / "Forms.vmx"
    vmx.write_text("\n".join(lines) + "\n")
    return vmx


def base_regions(name: str, size: int) -> tuple[Region, ...]:
    return pattern_regions(size, default_pattern(name))


def delta_regions(name: str, size: int) -> tuple[Region, ...]:
    return pattern_regions(size, default_pattern(name), delta_offsets(size))


@pytest.fixture
def work_dir(tmp_path: Path) -> Path:
    """The daemon's work directory (job overlays and descriptor views), for this test alone."""
    return tmp_path / "work"


# --- building the forms ----------------------------------------------------------


def _factory_disk(subformat: str, size: int) -> Callable[[Path], Source]:
    def build(tmp: Path) -> Source:
        vm = tmp / "vm"
        disk = make_vmdk(vm, "disk", subformat, size)
        ref = write_reference_raw(tmp / "ref.raw", size, base_regions("disk", size))
        return Source(write_vmx(vm, disk.name), (vm,), ref, size)

    return build


def _retyped_vmfs(create_type: str) -> Callable[[Path], Source]:
    """An ESXi vmfs disk whose descriptor says vmfsThin/vmfsPreallocated/vmfsEagerZeroedThick."""

    def build(tmp: Path) -> Source:
        size = 32 * MiB
        vm = tmp / "vm"
        disk = make_vmdk(vm, "disk", "vmfs", size)
        rewrite_descriptor(disk, lambda t: t.replace('createType="vmfs"', f'createType="{create_type}"'))
        ref = write_reference_raw(tmp / "ref.raw", size, base_regions("disk", size))
        return Source(write_vmx(vm, disk.name), (vm,), ref, size)

    return build


def _esxi_chain(base_type: str, *deltas: str) -> Callable[[Path], Source]:
    """A vmfs (or retyped vmfs) base with ESXi snapshot deltas on top."""

    def build(tmp: Path) -> Source:
        size = 32 * MiB
        vm = tmp / "vm"
        base = top = make_vmdk(vm, "disk", "vmfs", size)
        layers = [base_regions("disk", size)]
        for number, subformat in enumerate(deltas, start=1):
            name = f"disk-{number:06d}"
            top = make_delta(vm, name, top, subformat=subformat)
            layers.append(delta_regions(name, size))
        # Retyped after the deltas were made: the factory asks qemu for the parent's CID.
        rewrite_descriptor(base, lambda t: t.replace('createType="vmfs"', f'createType="{base_type}"'))
        ref = write_reference_raw(tmp / "ref.raw", size, *layers)
        return Source(write_vmx(vm, top.name), (vm,), ref, size)

    return build


def _qemu_chain(subformat: str, depth: int) -> Callable[[Path], Source]:
    def build(tmp: Path) -> Source:
        size = 48 * MiB
        vm = tmp / "vm"
        top = make_vmdk(vm, "disk", subformat, size)
        layers = [base_regions("disk", size)]
        for number in range(1, depth + 1):
            name = f"disk-{number:06d}"
            top = make_delta(vm, name, top)
            layers.append(delta_regions(name, size))
        ref = write_reference_raw(tmp / "ref.raw", size, *layers)
        return Source(write_vmx(vm, top.name), (vm,), ref, size)

    return build


def _filled(path: Path, size: int, byte: int) -> bytes:
    data = bytes([byte]) * size
    path.write_bytes(data)
    return data


def _zero_and_readonly(tmp: Path) -> Source:
    """FLAT, ZERO, RDONLY FLAT and an offset FLAT extent: qemu alone drops two and shifts the rest."""
    vm = tmp / "vm"
    vm.mkdir()
    a = _filled(vm / "z-a.bin", 1 * MiB, 0xA1)
    b = _filled(vm / "z-b.bin", 2 * MiB, 0xB2)
    c = _filled(vm / "z-c.bin", 2 * MiB, 0xC3)
    disk = write_descriptor(
        vm,
        "disk",
        [
            'RW 2048 FLAT "z-a.bin" 0',
            "RW 4096 ZERO",
            'RDONLY 4096 FLAT "z-b.bin" 0',
            "RW 2048 ZERO",
            'RW 2048 FLAT "z-c.bin" 2048',  # the second MiB of z-c.bin
        ],
    )
    size = 7 * MiB
    regions = [Region(0, a), Region(3 * MiB, b), Region(6 * MiB, c[MiB:])]
    ref = write_reference_raw(tmp / "ref.raw", size, regions)
    return Source(write_vmx(vm, disk.name), (vm,), ref, size)


def _only_zero(tmp: Path) -> Source:
    vm = tmp / "vm"
    vm.mkdir()
    disk = write_descriptor(vm, "disk", ["RW 8192 ZERO"], create_type="monolithicFlat")
    ref = write_reference_raw(tmp / "ref.raw", 4 * MiB)
    return Source(write_vmx(vm, disk.name), (vm,), ref, 4 * MiB)


def _readonly_sparse_extents(tmp: Path) -> Source:
    """A twoGbMaxExtentSparse disk whose second extent is RDONLY (qemu alone would drop it)."""
    size = 2 * GiB + 64 * MiB
    vm = tmp / "vm"
    disk = make_vmdk(vm, "disk", "twoGbMaxExtentSparse", size)
    rewrite_descriptor(
        disk,
        lambda t: t.replace('RW 131072 SPARSE "disk-s002.vmdk"', 'RDONLY 131072 SPARSE "disk-s002.vmdk"'),
    )
    ref = write_reference_raw(tmp / "ref.raw", size, base_regions("disk", size))
    return Source(write_vmx(vm, disk.name), (vm,), ref, size)


def _datastore_extent(tmp: Path) -> Source:
    """The descriptor names its flat extent as ``[san-01] shared/disk-flat.vmdk``."""
    size = 16 * MiB
    vm, store = tmp / "vm", tmp / "datastore"
    disk = make_vmdk(vm, "disk", "vmfs", size)
    (store / "shared").mkdir(parents=True)
    (vm / "disk-flat.vmdk").rename(store / "shared" / "disk-flat.vmdk")
    rewrite_descriptor(disk, lambda t: t.replace('"disk-flat.vmdk"', '"[san-01] shared/disk-flat.vmdk"'))
    ref = write_reference_raw(tmp / "ref.raw", size, base_regions("disk", size))
    return Source(write_vmx(vm, disk.name), (vm, store), ref, size, (("san-01", str(store)),))


def _datastore_split_flat(tmp: Path) -> Source:
    """twoGbMaxExtentFlat with its second extent on a datastore and the first named by a Windows path."""
    size = 2 * GiB + 32 * MiB
    vm, store = tmp / "vm", tmp / "datastore"
    disk = make_vmdk(vm, "disk", "twoGbMaxExtentFlat", size)
    store.mkdir()
    (vm / "disk-f002.vmdk").rename(store / "disk-f002.vmdk")
    rewrite_descriptor(
        disk,
        lambda t: t.replace('"disk-f001.vmdk"', '"C:\\Virtual Machines\\Forms\\disk-f001.vmdk"').replace(
            '"disk-f002.vmdk"', '"[ds2] disk-f002.vmdk"'
        ),
    )
    ref = write_reference_raw(tmp / "ref.raw", size, base_regions("disk", size))
    return Source(write_vmx(vm, disk.name), (vm, store), ref, size, (("ds2", str(store)),))


def _quote_in_datastore_path(tmp: Path) -> Source:
    """A datastore directory whose name qemu cannot parse from a descriptor (it has a quote)."""
    size = 8 * MiB
    vm, store = tmp / "vm", tmp / 'store "A"'
    disk = make_vmdk(vm, "disk", "vmfs", size)
    store.mkdir()
    (vm / "disk-flat.vmdk").rename(store / "disk-flat.vmdk")
    rewrite_descriptor(disk, lambda t: t.replace('"disk-flat.vmdk"', '"[A] disk-flat.vmdk"'))
    ref = write_reference_raw(tmp / "ref.raw", size, base_regions("disk", size))
    return Source(write_vmx(vm, disk.name), (vm, store), ref, size, (("A", str(store)),))


def _blank_line_before_extent(tmp: Path) -> Source:
    """qemu 7.2 reads an extent line twice when a blank line precedes it (and doubles the disk)."""
    vm = tmp / "vm"
    vm.mkdir()
    data = _filled(vm / "disk-flat.vmdk", 2 * MiB, 0x5E)
    disk = write_descriptor(vm, "disk", ["", 'RW 4096 FLAT "disk-flat.vmdk" 0'])
    ref = write_reference_raw(tmp / "ref.raw", 2 * MiB, [Region(0, data)])
    return Source(write_vmx(vm, disk.name), (vm,), ref, 2 * MiB)


FORMS: dict[str, Callable[[Path], Source]] = {
    "monolithicSparse": _factory_disk("monolithicSparse", 64 * MiB),
    "twoGbMaxExtentSparse": _factory_disk("twoGbMaxExtentSparse", 2 * GiB + 128 * MiB),
    "monolithicFlat": _factory_disk("monolithicFlat", 32 * MiB),
    "twoGbMaxExtentFlat": _factory_disk("twoGbMaxExtentFlat", 2 * GiB + 128 * MiB),
    "streamOptimized": _factory_disk("streamOptimized", 64 * MiB),
    "vmfs": _factory_disk("vmfs", 32 * MiB),
    "vmfsThin": _retyped_vmfs("vmfsThin"),
    "vmfsPreallocated": _retyped_vmfs("vmfsPreallocated"),
    "vmfsEagerZeroedThick": _retyped_vmfs("vmfsEagerZeroedThick"),
    "vmfs+vmfsSparse": _esxi_chain("vmfs", "vmfsSparse"),
    "vmfs+seSparse": _esxi_chain("vmfs", "seSparse"),
    "vmfs+vmfsSparse+seSparse": _esxi_chain("vmfs", "vmfsSparse", "seSparse"),
    "vmfsThin+seSparse": _esxi_chain("vmfsThin", "seSparse"),
    "monolithicSparse+2 deltas": _qemu_chain("monolithicSparse", 2),
    "twoGbMaxExtentFlat+delta": _qemu_chain("twoGbMaxExtentFlat", 1),
    "ZERO and RDONLY extents": _zero_and_readonly,
    "only a ZERO extent": _only_zero,
    "RDONLY sparse extent": _readonly_sparse_extents,
    "extent on a [datastore]": _datastore_extent,
    "split flat on a datastore and a Windows path": _datastore_split_flat,
    "extent path qemu cannot parse": _quote_in_datastore_path,
    "blank line before an extent": _blank_line_before_extent,
}
# qemu 7.2 reads these correctly by itself; the others only through our descriptor views.
QEMU_READS_DIRECTLY = frozenset(
    {
        "monolithicSparse",
        "twoGbMaxExtentSparse",
        "monolithicFlat",
        "twoGbMaxExtentFlat",
        "streamOptimized",
        "vmfs",
        "vmfs+vmfsSparse",
        "vmfs+seSparse",
        "vmfs+vmfsSparse+seSparse",
        "monolithicSparse+2 deltas",
        "twoGbMaxExtentFlat+delta",
    }
)


# --- checks ----------------------------------------------------------------------


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def check_target(src: Source, target: Path, fmt: str) -> None:
    info = qemu_info(target)
    assert info["format"] == fmt
    assert info["virtual-size"] == src.size
    assert images_equal(src.reference, target, fmt_a="raw", fmt_b=fmt)
    # Only the data was written: no thick copy of a sparse source, no zeroes written out.
    data = allocated(src.reference)
    assert allocated(target) <= data * 1.05 + METADATA_SLACK, (allocated(target), data)


async def migrate(src: Source, tmp: Path, **options: Any) -> MigrationResult:
    opts = MigrateOptions(
        name="forms",
        output_dir=str(tmp / "out"),
        domain_type="qemu",
        datastores=src.datastores,
        work_dir=str(tmp / "work"),
        **options,
    )
    return await run_migration(str(src.vmx), opts, Events())


async def leftovers(directory: Path) -> list[str]:
    """What a job left in the work directory (its overlays and descriptor views must be gone)."""
    return await asyncio.to_thread(os.listdir, directory)


def trees(src: Source) -> dict[str, dict[str, str]]:
    return {str(tree): sha256_tree(tree) for tree in src.trees}


# --- the forms -------------------------------------------------------------------


@pytest.mark.parametrize("form", list(FORMS))
async def test_form_copies_with_the_right_content(form: str, tmp_path: Path, work_dir: Path) -> None:
    src = await in_thread(FORMS[form], tmp_path)
    # The reference is right where qemu reads the source by itself; the other forms are
    # worth a test: qemu alone refuses them or reads them wrong.
    assert await in_thread(qemu_alone_reads_right, src) is (form in QEMU_READS_DIRECTLY)
    before = trees(src)

    result = await migrate(src, tmp_path)

    target = Path(result.outputs[0])
    await in_thread(check_target, src, target, "qcow2")
    assert trees(src) == before
    assert await leftovers(work_dir) == []  # the job directory (overlays, views) is gone


def qemu_alone_reads_right(src: Source) -> bool:
    """Whether plain ``qemu-img`` (no views, no explicit paths) reads the disk as the reference."""
    disk = src.vmx.parent / _disk_name(src)
    try:
        same_size = qemu_info(disk, "vmdk")["virtual-size"] == src.size
        return same_size and images_equal(disk, src.reference, fmt_a="vmdk", fmt_b="raw")
    except RuntimeError:  # it cannot open it
        return False


def _disk_name(src: Source) -> str:
    for line in src.vmx.read_text().splitlines():
        if line.startswith("scsi0:0.fileName"):
            return line.split('"')[1]
    raise AssertionError("no disk")


@pytest.mark.parametrize("form", ["vmfsThin+seSparse", "ZERO and RDONLY extents", "extent on a [datastore]"])
async def test_view_forms_into_a_libvirt_pool(
    form: str, tmp_path: Path, work_dir: Path, dir_pool: DirPool, domain_name: str, libvirt_conn: Any
) -> None:
    src = await in_thread(FORMS[form], tmp_path)
    before = trees(src)
    opts = MigrateOptions(
        name=domain_name,
        pool=dir_pool.name,
        domain_type="qemu",
        datastores=src.datastores,
        verify=True,
        work_dir=str(work_dir),
    )
    result = await run_migration(str(src.vmx), opts, Events())
    try:
        await in_thread(check_target, src, Path(result.outputs[0]), "qcow2")
        assert any(str(n) == "scsi0:0: verified: identical to the source" for n in result.notes)
    finally:
        libvirt_conn.lookupByName(domain_name).undefine()
    assert trees(src) == before
    assert await leftovers(work_dir) == []


async def test_raw_target_of_a_view_form(tmp_path: Path, work_dir: Path) -> None:
    src = await in_thread(_zero_and_readonly, tmp_path)
    result = await migrate(src, tmp_path, format="raw")
    await in_thread(check_target, src, Path(result.outputs[0]), "raw")


# --- refusals --------------------------------------------------------------------


async def test_noaccess_extent_is_refused_naming_the_line(tmp_path: Path, work_dir: Path) -> None:
    vm = tmp_path / "vm"
    vm.mkdir()
    make_flat_file(vm, "a.bin", 1 * MiB)
    disk = write_descriptor(vm, "disk", ['RW 2048 FLAT "a.bin" 0', 'NOACCESS 2048 FLAT "a.bin" 0'])
    src = Source(write_vmx(vm, disk.name), (vm,), tmp_path / "unused", 2 * MiB)
    events = Events()
    with pytest.raises(Vm2kvmError) as exc:
        await run_migration(
            str(src.vmx),
            MigrateOptions(name="forms", output_dir=str(tmp_path / "out"), work_dir=str(work_dir)),
            events,
        )
    assert exc.value.code is ErrorCode.UNSUPPORTED_DISK
    assert "extent line 9 is NOACCESS" in str(exc.value)
    assert str(disk) in str(exc.value)
    assert "copy" not in events.phases
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("create_type", "extent"),
    [("vmfsRawDeviceMap", 'RW 2048 VMFSRDM "disk-rdm.vmdk"'), ("custom", 'RW 2048 FLAT "a.bin" 0')],
)
async def test_rdm_and_unknown_types_stay_errors(
    tmp_path: Path, work_dir: Path, create_type: str, extent: str
) -> None:
    vm = tmp_path / "vm"
    vm.mkdir()
    make_flat_file(vm, "a.bin", 1 * MiB)
    disk = write_descriptor(vm, "disk", [extent], create_type=create_type)
    vmx = write_vmx(vm, disk.name)
    with pytest.raises(Vm2kvmError) as exc:
        await run_migration(
            str(vmx),
            MigrateOptions(name="forms", output_dir=str(tmp_path / "out"), work_dir=str(work_dir)),
            Events(),
        )
    assert exc.value.code is ErrorCode.UNSUPPORTED_DISK
    assert create_type in str(exc.value)
    assert not (tmp_path / "out").exists()


async def test_size_qemu_disagrees_with_is_refused_before_copying(tmp_path: Path, work_dir: Path) -> None:
    vm = tmp_path / "vm"
    disk = make_vmdk(vm, "disk", "monolithicFlat", 8 * MiB)
    chain = await in_thread(lambda: load_chain(str(disk), local_resolver(str(vm))))
    # As if our parser counted an extent qemu does not see.
    wrong = replace(chain, layers=(replace(chain.top, virtual_size=9 * MiB),))
    views = SourceViews(str(tmp_path))
    try:
        with pytest.raises(Vm2kvmError) as exc:
            await open_source(views, wrong)
    finally:
        await in_thread(views.close)
    assert exc.value.code is ErrorCode.UNSUPPORTED_DISK
    assert exc.value.file == str(disk)
    assert "QEMU reads this VMDK as 8388608 bytes, its descriptor describes 9437184" in str(exc.value)


async def test_views_that_cannot_be_written_are_a_clear_error(tmp_path: Path) -> None:
    src = await in_thread(_retyped_vmfs("vmfsThin"), tmp_path)
    chain = await in_thread(
        lambda: load_chain(str(src.vmx.parent / "disk.vmdk"), local_resolver(str(src.vmx.parent)))
    )
    views = SourceViews(str(tmp_path / "no such directory"))
    with pytest.raises(Vm2kvmError) as exc:
        await open_source(views, chain)
    assert exc.value.code is ErrorCode.INVALID_OPTION
    assert exc.value.key == "work-dir"
    assert "cannot write the descriptor view of" in str(exc.value) and "--work-dir" in str(exc.value)
