"""The copy engine: disks in parallel (bounded), progress per disk and per job, failure and cancel."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from testbed.disks import make_unreadable_vmdk
from testbed.services import DirPool
from tests.helpers.vmdk_factory import images_equal, sha256_tree
from tests.pipeline.support import MiB, RecordingEvents, allocated, make_disk, qemu_img_children, vm_with
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.pipeline import copy, run_migration


def _options(pool: DirPool, name: str, tmp_path: Path) -> MigrateOptions:
    return MigrateOptions(name=name, pool=pool.name, domain_type="qemu", work_dir=str(tmp_path / "work"))


async def test_disks_copy_in_parallel_two_at_a_time(
    three_disk_vm: Path, dir_pool: DirPool, domain_name: str, tmp_path: Path, libvirt_conn: object
) -> None:
    before = sha256_tree(three_disk_vm.parent)
    events = RecordingEvents()
    result = await run_migration(str(three_disk_vm), _options(dir_pool, domain_name, tmp_path), events)
    try:
        assert MigrateOptions().disk_parallelism == 2
        assert events.most_concurrent() == 2
        for index, disk in enumerate(events.announced):
            reports = events.progress[index]
            done = [d for d, _ in reports]
            assert all(total == disk.total for _, total in reports)
            assert done == sorted(done) and done[0] == 0 and done[-1] == disk.total
            # The total is what the copy writes: the target's allocation, give or take metadata.
            assert abs(allocated(disk.target) - disk.total) < 1 * MiB
            # The total is the data (96 MiB) and the qcow2 metadata.
            assert 96 * MiB < disk.total < 97 * MiB
        # The job's BytesDone (the sum over disks) only grows and ends at the job's total.
        sums = events.job_totals()
        assert sums == sorted(sums) and sums[-1] == sum(d.total for d in events.announced)
        for n, out in enumerate(result.outputs):
            assert images_equal(three_disk_vm.parent / f"disk{n}.vmdk", Path(out))
    finally:
        dom = libvirt_conn.lookupByName(domain_name)  # type: ignore[attr-defined]
        dom.undefine()
    assert sha256_tree(three_disk_vm.parent) == before


async def test_one_disk_at_a_time_when_the_limit_is_one(three_disk_vm: Path, tmp_path: Path) -> None:
    events = RecordingEvents()
    options = MigrateOptions(
        name="serial", output_dir=str(tmp_path / "out"), work_dir=str(tmp_path / "w"), disk_parallelism=1
    )
    await run_migration(str(three_disk_vm), options, events)
    assert events.most_concurrent() == 1
    assert [i for _t, i, done, _total in events.timeline if done == 0] == [0, 1, 2]


async def test_a_failing_disk_stops_the_others_and_everything_is_removed(
    tmp_path: Path, dir_pool: DirPool, domain_name: str, libvirt_conn: object
) -> None:
    vmdir = tmp_path / "vm"
    vmdir.mkdir()
    big = make_disk(vmdir, "big.vmdk", 512 * MiB, [(0, 384 * MiB, 0x7E)])
    bad = make_unreadable_vmdk(vmdir, "bad.vmdk", 32 * MiB)
    vmx = vm_with(vmdir, [big, bad])
    before = sha256_tree(vmdir)
    events = RecordingEvents()
    with pytest.raises(Vm2kvmError) as exc:
        await run_migration(str(vmx), _options(dir_pool, domain_name, tmp_path), events)
    assert exc.value.code is ErrorCode.COPY_FAILED
    assert exc.value.file == str(bad)
    # The big disk was still being copied when the other failed: it was stopped, not finished.
    assert events.progress[0][-1][0] < events.announced[0].total
    assert not qemu_img_children()
    assert events.phases[-1] == "cleanup"
    assert sum("removed volume" in line for line in events.logs) == 2
    assert dir_pool.volume_names() == []
    assert list((tmp_path / "work").iterdir()) == []
    assert domain_name not in {d.name() for d in libvirt_conn.listAllDomains(0)}  # type: ignore[attr-defined]
    assert sha256_tree(vmdir) == before


async def test_cancel_stops_every_running_copy(
    three_disk_vm: Path, dir_pool: DirPool, domain_name: str, tmp_path: Path
) -> None:
    class CancelWhenTwoRun(RecordingEvents):
        def disk_progress(self, index: int, done: int, total: int) -> None:
            super().disk_progress(index, done, total)
            if index == 1 and done == 0:  # the second copy starts: two are running
                task.cancel()

    events = CancelWhenTwoRun()
    task = asyncio.create_task(
        run_migration(str(three_disk_vm), _options(dir_pool, domain_name, tmp_path), events)
    )
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not qemu_img_children()
    assert set(events.progress) == {0, 1}  # the third never started
    assert events.phases[-1] == "cleanup"
    assert dir_pool.volume_names() == []
    assert list((tmp_path / "work").iterdir()) == []


def test_write_meter_counts_what_a_process_writes(tmp_path: Path) -> None:
    """Preallocated files and logical volumes: progress is qemu-img's written bytes (/proc/PID/io)."""
    import subprocess
    import sys
    import time

    meter = copy._WriteMeter()
    assert meter.done() == 0
    script = f"import sys; f = open({str(tmp_path / 'out')!r}, 'wb'); f.write(bytes(8 << 20)); f.flush(); "
    script += "print('written', flush=True); sys.stdin.read()"
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        meter.started(proc.pid)
        assert proc.stdout is not None and proc.stdout.readline() == "written\n"
        assert 8 * MiB <= meter.done() < 9 * MiB
    finally:
        proc.communicate("")
    time.sleep(0.05)
    assert meter.done() >= 8 * MiB  # the process is gone: the last reading stays
