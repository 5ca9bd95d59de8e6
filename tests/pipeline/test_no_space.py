"""A pool that fills up during the copy: NoSpace naming the pool and sizes, nothing left, daemon serving.

The pool lives on a 32 MiB tmpfs.  The space check before the copy passes;
then, at the start of the copy phase, the test fills the tmpfs (as another
writer on the same file system would), so qemu-img hits ENOSPC half-way.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from dbus_fast.signature import Variant

from testbed.services import DirPool
from tests.helpers.vmdk_factory import sha256_tree
from tests.pipeline.support import MiB, RecordingEvents, make_disk, qemu_img_children, vm_with
from tests.service.support import BusClient
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.daemon import Daemon
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.pipeline import DiskProgress, JobEvents, run_migration
from vm2kvmd.service.manager import Manager
from vm2kvmd.service.runner import MigrationOutcome, pipeline_preflight

LEFT_FREE = 4 * MiB


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mnt)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.fixture
def tmpfs_pool(libvirt_conn: Any, tmpfs: Path) -> Iterator[DirPool]:
    with DirPool(libvirt_conn, parent_dir=tmpfs) as pool:
        yield pool


@pytest.fixture
def vm(tmp_path: Path) -> Path:
    """A 64 MiB disk with 20 MiB of data: fits the 32 MiB tmpfs, until someone else fills it."""
    vmdir = tmp_path / "vm"
    vmdir.mkdir()
    runs = [(0, 10 * MiB, 0x61), (40 * MiB, 10 * MiB, 0x62)]
    return vm_with(vmdir, [make_disk(vmdir, "disk.vmdk", 64 * MiB, runs)])


def fill(mount: Path) -> None:
    """Leave ``LEFT_FREE`` bytes free on ``mount`` (blocking)."""
    fs = os.statvfs(mount)
    free = fs.f_bavail * fs.f_frsize
    with (mount / "filler").open("wb") as f:
        os.posix_fallocate(f.fileno(), 0, free - LEFT_FREE)


class FillAtCopy:
    """``JobEvents`` that fill the file system when the copy phase starts, then pass everything on."""

    def __init__(self, inner: JobEvents, mount: Path) -> None:
        self.inner = inner
        self.mount = mount
        self.filled = False

    def phase(self, name: str) -> None:
        if name == "copy" and not self.filled:
            fill(self.mount)
            self.filled = True
        self.inner.phase(name)

    def disks(self, items: Sequence[DiskProgress]) -> None:
        self.inner.disks(items)

    def disk_progress(self, index: int, done: int, total: int) -> None:
        self.inner.disk_progress(index, done, total)

    def log(self, message: str) -> None:
        self.inner.log(message)


def assert_names_pool_and_sizes(message: str, pool: str) -> None:
    assert f"pool {pool!r} ran out of space while copying disk scsi0:0" in message
    assert "20.3 MiB to write" in message  # 20 MiB of data and the qcow2 metadata
    assert "were free before the copy" in message and "free now" in message


@pytest.mark.allow_blocking  # the test's event sink fills the tmpfs
async def test_disk_full_during_the_copy(
    vm: Path, tmpfs: Path, tmpfs_pool: DirPool, domain_name: str, tmp_path: Path, libvirt_conn: Any
) -> None:
    before = sha256_tree(vm.parent)
    recorded = RecordingEvents()
    events = FillAtCopy(recorded, tmpfs)
    options = MigrateOptions(
        name=domain_name, pool=tmpfs_pool.name, domain_type="qemu", work_dir=str(tmp_path / "work")
    )
    with pytest.raises(Vm2kvmError) as exc:
        await run_migration(str(vm), options, events)
    err = exc.value
    assert events.filled
    assert err.code is ErrorCode.NO_SPACE
    assert_names_pool_and_sizes(err.message, tmpfs_pool.name)
    assert err.file == str(tmpfs_pool.path / f"{domain_name}-disk1.qcow2")
    assert "free some space" in str(err)
    assert recorded.phases[-1] == "cleanup"
    assert any(line.startswith("removed volume") for line in recorded.logs)
    assert tmpfs_pool.volume_names() == []
    assert list(tmpfs_pool.path.iterdir()) == []
    assert list((tmp_path / "work").iterdir()) == []
    assert not qemu_img_children()
    assert domain_name not in {d.name() for d in libvirt_conn.listAllDomains(0)}
    assert sha256_tree(vm.parent) == before


@pytest.mark.allow_blocking  # the runner's event sink fills the tmpfs
async def test_disk_full_over_dbus_and_the_daemon_keeps_serving(
    vm: Path,
    tmpfs: Path,
    tmpfs_pool: DirPool,
    dir_pool: DirPool,
    domain_name: str,
    tmp_path: Path,
    private_bus: str,
    client: BusClient,
    libvirt_conn: Any,
) -> None:
    """vm2kvmd in this process with the real pipeline; the runner only adds the filling event sink."""

    async def runner(source: str, options: MigrateOptions, events: JobEvents) -> MigrationOutcome:
        sink: JobEvents = FillAtCopy(events, tmpfs) if options.pool == tmpfs_pool.name else events
        return await run_migration(source, options, sink)

    manager = Manager(
        runner=runner,
        preflight=pipeline_preflight,
        defaults=MigrateOptions(domain_type="qemu", work_dir=str(tmp_path / "work")),
    )
    daemon = Daemon(manager, bus="session", address=private_bus)
    await daemon.start()
    try:
        options = {"pool": Variant("s", tmpfs_pool.name), "name": Variant("s", domain_name)}
        path = await client.migrate(str(vm), options)
        (completed,) = await client.wait_for(path, "Completed", within=60)
        props = await client.job_props(path)
        assert completed.body[0] is False
        assert props["State"] == "failed"
        name, message = props["Error"]
        assert name == "org.vm2kvm.Error.NoSpace"
        assert_names_pool_and_sizes(message, tmpfs_pool.name)
        assert props["Disks"][0][2] > 20 * MiB  # the bytes the copy was to write
        assert tmpfs_pool.volume_names() == []

        # The daemon goes on: the same VM into a pool with room.
        options = {"pool": Variant("s", dir_pool.name), "name": Variant("s", domain_name)}
        again = await client.migrate(str(vm), options)
        (done,) = await client.wait_for(again, "Completed", within=60)
        assert done.body == [True, f"migrated to domain {domain_name}"]
        final = await client.job_props(again)
        assert final["Bytes"] == final["BytesDone"] == props["Disks"][0][2]
    finally:
        await daemon.stop(grace=10)
        with contextlib.suppress(Exception):
            libvirt_conn.lookupByName(domain_name).undefine()
    assert list((tmp_path / "work").iterdir()) == []
