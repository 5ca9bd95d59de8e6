"""What a migration created, written down in the job store, and recovery after a daemon died.

Real libvirtd, real qemu-img, a real SQLite store.  The store is only
touched from threads in the async tests: its calls block (a few ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import libvirt
import pytest

from testbed.services import DEFAULT_URI, DirPool, remove_domain
from tests.pipeline.support import MiB, RecordingEvents, small_vm
from vm2kvmd.adapters.libvirt_host import LibvirtHost
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.core.residue import Residue
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.pipeline import inspect_source, run_migration
from vm2kvmd.pipeline.overlay import Overlay, WorkArea
from vm2kvmd.pipeline.rollback import Rollback, undo_residue
from vm2kvmd.pipeline.targets import DirTarget, PoolTarget
from vm2kvmd.service.recovery import recover
from vm2kvmd.service.store import JobStore

INTERRUPTED = "org.vm2kvm.Error.Interrupted"
HOLD = "VM2KVMD_TEST_HOLD"


@pytest.fixture
def vm(tmp_path: Path) -> Path:
    """Two small disks with a little data."""
    return small_vm(tmp_path, 2, 64, 4)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    opened = JobStore.open(str(tmp_path / "state"))
    yield opened
    opened.close()


@pytest.fixture
def undefine(libvirt_conn: Any, domain_name: str) -> Iterator[str]:
    yield domain_name
    with contextlib.suppress(libvirt.libvirtError):
        remove_domain(libvirt_conn, domain_name)


def _options(tmp_path: Path, name: str, **kw: Any) -> MigrateOptions:
    return MigrateOptions(
        name=name, domain_type="qemu", guest_conversion=False, work_dir=str(tmp_path / "work"), **kw
    )


async def _rows_in_phase(
    task: asyncio.Task[Any], events: RecordingEvents, store: JobStore, number: int, phase: str
) -> list[Residue]:
    """The job's residue rows once it entered ``phase`` (held there by VM2KVMD_TEST_HOLD)."""
    for _ in range(3000):
        if phase in events.phases or task.done():
            break
        await asyncio.sleep(0.01)
    assert phase in events.phases, (events.phases, task)
    return [r for _rid, r in await asyncio.to_thread(store.residues, number)]


def _kinds(rows: Sequence[Residue]) -> list[str]:
    return sorted(r.kind for r in rows)


def _exists(path: str) -> bool:
    return os.path.lexists(path)


def _volumes(pool: DirPool) -> list[str]:
    return pool.volume_names()


# --- a migration writes down what it creates, and clears it when it ends ---------------------------


async def test_rows_appear_during_a_run_and_are_gone_after_success(
    vm: Path, dir_pool: DirPool, undefine: str, tmp_path: Path, store: JobStore, monkeypatch: Any
) -> None:
    monkeypatch.setenv(HOLD, "copy:3")
    number = (await asyncio.to_thread(store.create, str(vm), {}, 0, now_us=1)).number
    events = RecordingEvents()
    options = _options(tmp_path, undefine, pool=dir_pool.name)
    task = asyncio.create_task(
        run_migration(str(vm), options, events, recorder=store.recorder(number)), name="migration"
    )
    rows = await _rows_in_phase(task, events, store, number, "copy")
    assert _kinds(rows) == ["tree", "volume", "volume"]
    tree = next(r for r in rows if r.kind == "tree")
    assert Path(tree.path).parent == tmp_path / "work" and _exists(tree.path)
    volumes = sorted((r for r in rows if r.kind == "volume"), key=lambda r: r.name)
    assert [v.name for v in volumes] == [f"{undefine}-disk1.qcow2", f"{undefine}-disk2.qcow2"]
    assert all(v.pool == dir_pool.name and v.uri == options.connect for v in volumes)
    assert [Path(v.path) for v in volumes] == [dir_pool.path / v.name for v in volumes]
    assert all(_exists(v.path) for v in volumes)  # recorded, then created

    result = await task
    # The outputs' records stay until the job is stored as completed, in the same write.
    left = [r for _rid, r in await asyncio.to_thread(store.residues, number)]
    assert _kinds(left) == ["domain", "volume", "volume"]
    await asyncio.to_thread(store.update, number, state="completed", end_time=2)
    assert await asyncio.to_thread(store.residues, number) == []
    assert result.domain_name == undefine
    assert _volumes(dir_pool) == [v.name for v in volumes]  # the outputs stay: they are the result
    assert not _exists(tree.path)
    assert any(line.startswith("defined domain") for line in events.logs)


async def test_a_failed_run_removes_what_it_made_and_its_rows_but_not_a_domain_it_did_not_make(
    vm: Path,
    dir_pool: DirPool,
    undefine: str,
    tmp_path: Path,
    store: JobStore,
    libvirt_conn: Any,
    monkeypatch: Any,
) -> None:
    """Someone defines the name while we copy: define fails, our volumes go, their domain stays."""
    monkeypatch.setenv(HOLD, "copy:2")
    theirs = str(uuid.uuid4())

    async def take_the_name(overlays: Sequence[Overlay]) -> None:
        xml = _domain_xml(undefine, theirs)
        await asyncio.to_thread(libvirt_conn.defineXML, xml)

    number = (await asyncio.to_thread(store.create, str(vm), {}, 0, now_us=1)).number
    events = RecordingEvents()
    task = asyncio.create_task(
        run_migration(
            str(vm),
            _options(tmp_path, undefine, pool=dir_pool.name),
            events,
            before_copy=[take_the_name],
            recorder=store.recorder(number),
        )
    )
    rows = await _rows_in_phase(task, events, store, number, "copy")
    assert _kinds(rows) == ["tree", "volume", "volume"]
    with pytest.raises(Vm2kvmError) as exc:
        await task
    assert exc.value.code is ErrorCode.DOMAIN_EXISTS
    assert await asyncio.to_thread(store.residues, number) == []
    assert await asyncio.to_thread(_volumes, dir_pool) == []
    assert "cleanup" in events.phases
    assert sorted(line for line in events.logs if line.startswith("removed volume")) == [
        f"removed volume {undefine}-disk1.qcow2 in pool {dir_pool.name}",
        f"removed volume {undefine}-disk2.qcow2 in pool {dir_pool.name}",
    ]
    # Their domain: still defined, with their UUID.
    dom = await asyncio.to_thread(libvirt_conn.lookupByName, undefine)
    assert dom.UUIDString() == theirs


async def test_a_cancelled_run_leaves_no_rows(
    vm: Path, dir_pool: DirPool, undefine: str, tmp_path: Path, store: JobStore, monkeypatch: Any
) -> None:
    monkeypatch.setenv(HOLD, "copy:60")
    number = (await asyncio.to_thread(store.create, str(vm), {}, 0, now_us=1)).number
    events = RecordingEvents()
    task = asyncio.create_task(
        run_migration(
            str(vm), _options(tmp_path, undefine, pool=dir_pool.name), events, recorder=store.recorder(number)
        )
    )
    rows = await _rows_in_phase(task, events, store, number, "copy")
    assert _kinds(rows) == ["tree", "volume", "volume"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(store.residues, number) == []
    assert await asyncio.to_thread(_volumes, dir_pool) == []
    assert list((tmp_path / "work").iterdir()) == []


async def test_an_output_directory_run_records_directory_files_and_work_area(
    vm: Path, tmp_path: Path, store: JobStore, monkeypatch: Any
) -> None:
    monkeypatch.setenv(HOLD, "copy:3")
    out = tmp_path / "out"
    number = (await asyncio.to_thread(store.create, str(vm), {}, 0, now_us=1)).number
    events = RecordingEvents()
    options = _options(tmp_path, "plain", output_dir=str(out))
    task = asyncio.create_task(run_migration(str(vm), options, events, recorder=store.recorder(number)))
    rows = await _rows_in_phase(task, events, store, number, "copy")
    assert _kinds(rows) == ["directory", "file", "file", "tree"]
    assert next(r for r in rows if r.kind == "directory").path == str(out)
    assert sorted(r.path for r in rows if r.kind == "file") == [
        str(out / "plain-disk1.qcow2"),
        str(out / "plain-disk2.qcow2"),
    ]
    result = await task
    await asyncio.to_thread(store.update, number, state="completed", end_time=2)
    assert await asyncio.to_thread(store.residues, number) == []
    assert sorted(result.outputs) == sorted(
        [*(r.path for r in rows if r.kind == "file"), str(out / "plain.xml")]
    )
    assert all(_exists(p) for p in result.outputs)


# --- never remove what existed before ------------------------------------------------------------


def test_a_volume_that_already_exists_is_never_recorded_nor_removed(
    vm: Path, dir_pool: DirPool, domain_name: str, tmp_path: Path, store: JobStore
) -> None:
    number = store.create(str(vm), {}, 0, now_us=1).number
    options = _options(tmp_path, domain_name, pool=dir_pool.name)
    with LibvirtHost(DEFAULT_URI) as host:
        disk = inspect_source(str(vm), options, host).plan.disks[0]
        theirs = host.create_volume(dir_pool.name, disk.volume_name, 1 * MiB, "raw")
        Path(theirs).write_bytes(b"their data")
        rollback = Rollback(store.recorder(number))
        with pytest.raises(Vm2kvmError) as exc:
            PoolTarget(host, dir_pool.name, options).create(disk, rollback)
        assert exc.value.code is ErrorCode.VOLUME_EXISTS
        assert store.residues(number) == []
        assert not rollback.pending and rollback.run() == []
        assert Path(theirs).read_bytes() == b"their data"
        assert disk.volume_name in dir_pool.volume_names()


def test_an_output_file_that_already_exists_is_never_recorded_nor_removed(
    vm: Path, tmp_path: Path, store: JobStore
) -> None:
    number = store.create(str(vm), {}, 0, now_us=1).number
    out = tmp_path / "out"
    out.mkdir()
    options = _options(tmp_path, "taken", output_dir=str(out))
    disk = inspect_source(str(vm), options, None).plan.disks[0]
    Path(disk.target_path).write_text("theirs")
    rollback = Rollback(store.recorder(number))
    target = DirTarget(options)
    target.prepare(rollback)  # the directory exists: nothing to make, nothing recorded
    with pytest.raises(Vm2kvmError) as exc:
        target.create(disk, rollback)
    assert exc.value.code is ErrorCode.VOLUME_EXISTS
    assert store.residues(number) == [] and rollback.run() == []
    assert Path(disk.target_path).read_text() == "theirs"


async def test_a_migration_refused_for_a_taken_volume_records_nothing(
    vm: Path, dir_pool: DirPool, domain_name: str, tmp_path: Path, store: JobStore
) -> None:
    theirs = dir_pool.path / f"{domain_name}-disk2.qcow2"
    await asyncio.to_thread(theirs.write_bytes, b"their volume")
    number = (await asyncio.to_thread(store.create, str(vm), {}, 0, now_us=1)).number
    with pytest.raises(Vm2kvmError) as exc:
        await run_migration(
            str(vm),
            _options(tmp_path, domain_name, pool=dir_pool.name),
            RecordingEvents(),
            recorder=store.recorder(number),
        )
    assert exc.value.code is ErrorCode.VOLUME_EXISTS
    assert await asyncio.to_thread(store.residues, number) == []
    assert await asyncio.to_thread(theirs.read_bytes) == b"their volume"


# --- the ledger and the work area on their own -------------------------------------------------


def test_the_work_area_is_recorded_when_made_and_forgotten_when_removed(
    tmp_path: Path, store: JobStore
) -> None:
    number = store.create("/a.vmx", {}, 0, now_us=1).number
    area = WorkArea.create(str(tmp_path / "work"), store.recorder(number))
    assert Path(area.path).is_dir() and os.stat(area.path).st_mode & 0o777 == 0o700
    assert [r for _rid, r in store.residues(number)] == [Residue("tree", path=area.path)]
    (Path(area.disk_dir(0)) / "overlay.qcow2").write_bytes(b"x")
    assert area.remove() == []
    assert not Path(area.path).exists() and store.residues(number) == []


def test_rollback_forgets_what_it_removed_and_keeps_what_it_could_not(
    tmp_path: Path, store: JobStore
) -> None:
    number = store.create("/a.vmx", {}, 0, now_us=1).number
    rollback = Rollback(store.recorder(number))
    full = tmp_path / "full"
    with rollback.creating(Residue("directory", path=str(full))) as rid:
        full.mkdir()
    rollback.directory(str(full), rid=rid)
    (full / "someone-elses").write_text("x")  # rmdir fails: not ours to empty
    made = tmp_path / "made.xml"
    with rollback.creating(Residue("file", path=str(made))) as rid:
        made.write_text("<domain/>")
    rollback.file(str(made), rid=rid)
    with pytest.raises(FileExistsError), rollback.creating(Residue("file", path=str(made))):
        os.open(made, os.O_CREAT | os.O_EXCL)
    assert [r.kind for _rid, r in store.residues(number)] == ["directory", "file"]

    lines = rollback.run()
    assert lines[0] == f"removed file {made}"
    assert lines[1].startswith(f"could not remove directory {full}")
    assert [r for _rid, r in store.residues(number)] == [Residue("directory", path=str(full))]
    # The job ends: what is still there stays recorded, for service.recovery.sweep_leftovers.
    (line,) = rollback.forget_all()
    assert line.startswith("what could not be removed stays recorded")
    assert [r for _rid, r in store.residues(number)] == [Residue("directory", path=str(full))]


# --- recovery after a crash ------------------------------------------------------------------------


def _domain_xml(name: str, domain_uuid: str) -> str:
    return (
        f"<domain type='qemu'><name>{name}</name><uuid>{domain_uuid}</uuid>"
        "<memory unit='MiB'>64</memory><os><type arch='x86_64'>hvm</type></os></domain>"
    )


def _running(store: JobStore, source: str, phase: str = "copy") -> int:
    number = store.create(source, {}, 0, now_us=1).number
    store.update(number, state="running", phase=phase, work_phase=phase, start_time=2)
    return number


def test_recover_removes_what_a_killed_job_made_and_fails_it_as_interrupted(
    dir_pool: DirPool, undefine: str, tmp_path: Path, store: JobStore, libvirt_conn: Any
) -> None:
    number = _running(store, "/vms/a.vmx")
    queued = store.create("/vms/b.vmx", {}, 0, now_us=3).number
    done = store.create("/vms/c.vmx", {}, 0, now_us=4).number
    store.update(done, state="completed", end_time=5)
    rec = store.recorder(number)
    ours = str(uuid.uuid4())

    # What the migration made before the daemon died, each recorded first.
    work = tmp_path / "work" / "job-dead0001"
    rec.record(Residue("tree", path=str(work)))
    (work / "disk1").mkdir(parents=True)
    (work / "disk1" / "overlay.qcow2").write_bytes(b"o" * 4096)
    name = f"{undefine}-disk1.qcow2"
    rec.record(
        Residue("volume", path=str(dir_pool.path / name), pool=dir_pool.name, name=name, uri=DEFAULT_URI)
    )
    with LibvirtHost(DEFAULT_URI) as host:
        volume = host.create_volume(dir_pool.name, name, 8 * MiB, "qcow2")
    out = tmp_path / "out"
    rec.record(Residue("directory", path=str(out)))
    out.mkdir()
    xml_file = out / "a.xml"
    rec.record(Residue("file", path=str(xml_file)))
    xml_file.write_text("<domain/>")
    rec.record(Residue("domain", name=undefine, uri=DEFAULT_URI, uuid=ours))
    libvirt_conn.defineXML(_domain_xml(undefine, ours))
    # A finished job's stale record is not recovery's business: its outputs are the result.
    kept = tmp_path / "kept.raw"
    kept.write_text("a completed job's output")
    store.recorder(done).record(Residue("file", path=str(kept)))

    lines = recover(store)

    assert lines == [
        f"job {number}: removed domain {undefine}",
        f"job {number}: removed file {xml_file}",
        f"job {number}: removed directory {out}",
        f"job {number}: removed volume {name} in pool {dir_pool.name}",
        f"job {number}: removed directory tree {work}",
        f"job {number}: marked failed: interrupted: vm2kvmd stopped while the job was in phase copy; "
        f"everything it created was removed; vm2kvmctl retry {number} starts it again",
        f"job {queued}: marked failed: interrupted before it started: vm2kvmd stopped while the job "
        f"was queued; vm2kvmctl retry {queued} starts it again",
    ]
    assert not work.exists() and not out.exists() and not Path(volume).exists()
    assert name not in dir_pool.volume_names()
    with pytest.raises(libvirt.libvirtError):
        libvirt_conn.lookupByName(undefine)

    record = store.get(number)
    assert record is not None and record.state == "failed"
    assert record.error == (
        INTERRUPTED,
        f"interrupted: vm2kvmd stopped while the job was in phase copy; everything it created was "
        f"removed; vm2kvmctl retry {number} starts it again",
    )
    assert record.end_time > 0 and record.phase == "copy"
    assert store.residues(number) == []
    log = store.log(number)
    assert [message for _t, _p, message in log][:2] == [
        f"removed domain {undefine}",
        f"removed file {xml_file}",
    ]
    assert log[-1][2] == record.error[1]

    waiting = store.get(queued)
    assert waiting is not None and waiting.state == "failed" and waiting.error[0] == INTERRUPTED
    assert waiting.end_time > 0

    untouched = store.get(done)
    assert untouched is not None and untouched.state == "completed" and untouched.error == ("", "")
    assert kept.exists() and len(store.residues(done)) == 1
    assert recover(store) == []  # nothing left to do


def test_recover_is_fine_with_what_is_already_gone(
    dir_pool: DirPool, tmp_path: Path, store: JobStore
) -> None:
    number = _running(store, "/vms/a.vmx", phase="define")
    rec = store.recorder(number)
    missing = [
        Residue("tree", path=str(tmp_path / "work" / "job-gone")),
        Residue(
            "volume",
            path=str(dir_pool.path / "gone.qcow2"),
            pool=dir_pool.name,
            name="gone.qcow2",
            uri=DEFAULT_URI,
        ),
        Residue(
            "volume",
            path=str(tmp_path / "nopool" / "x.raw"),
            pool="vm2kvm-test-no-such-pool",
            name="x.raw",
            uri=DEFAULT_URI,
        ),
        Residue("directory", path=str(tmp_path / "never-made")),
        Residue("file", path=str(tmp_path / "never-made.xml")),
        Residue("domain", name="vm2kvm-test-never-defined", uri=DEFAULT_URI, uuid=str(uuid.uuid4())),
    ]
    for residue in missing:
        rec.record(residue)
    lines = recover(store)
    assert lines[:-1] == [f"job {number}: {r.describe()} was already gone" for r in reversed(missing)]
    record = store.get(number)
    assert record is not None and record.error == (
        INTERRUPTED,
        f"interrupted: vm2kvmd stopped while the job was in phase define; everything it created was "
        f"removed; vm2kvmctl retry {number} starts it again",
    )
    assert all(undo_residue(r).endswith("was already gone") for r in missing)


def test_recover_leaves_a_domain_that_is_no_longer_ours_and_says_what_it_could_not_remove(
    undefine: str, tmp_path: Path, store: JobStore, libvirt_conn: Any
) -> None:
    number = _running(store, "/vms/a.vmx", phase="cleanup")
    store.update(number, work_phase="copy")
    rec = store.recorder(number)
    theirs = str(uuid.uuid4())
    # We recorded the domain, died before defining it; someone else defined the name since.
    rec.record(Residue("domain", name=undefine, uri=DEFAULT_URI, uuid=str(uuid.uuid4())))
    libvirt_conn.defineXML(_domain_xml(undefine, theirs))
    busy = tmp_path / "out"
    rec.record(Residue("directory", path=str(busy)))
    busy.mkdir()
    (busy / "not-ours.txt").write_text("x")

    lines = recover(store)
    assert lines[0].startswith(f"job {number}: could not remove directory {busy}")
    assert lines[1].startswith(f"job {number}: left domain {undefine} alone: its UUID is {theirs}")
    assert libvirt_conn.lookupByName(undefine).UUIDString() == theirs
    assert (busy / "not-ours.txt").exists()
    record = store.get(number)
    assert record is not None and record.error == (
        INTERRUPTED,
        f"interrupted: vm2kvmd stopped while the job was in phase copy; some of what it created could "
        f"not be removed (vm2kvmctl logs {number} says what); vm2kvmctl retry {number} starts it again",
    )
    assert store.residues(number) == []


# --- --snapshots keep -----------------------------------------------------------------------------


@pytest.fixture
def snapshot_vm(tmp_path: Path) -> Path:
    """base <- -000001 (current), one snapshot on the base (as tests/test_snapshots.py builds them)."""
    from tests.helpers.vmdk_factory import make_delta
    from tests.helpers.vmdk_factory import make_vmdk as make_layer
    from tests.test_snapshots import Snap, write_vmsd, write_vmx

    directory = tmp_path / "Snapshot VM"
    directory.mkdir()
    base = make_layer(directory, "sys", "monolithicSparse", 16 * MiB)
    top = make_delta(directory, "sys-000001", base)
    vmx = write_vmx(directory, [top])
    write_vmsd(vmx, [Snap(1, "Installed", ("sys.vmdk",), time_us=1711684617758198)], current=1)
    return vmx


@pytest.fixture
def undefine_with_snapshots(libvirt_conn: Any, domain_name: str) -> Iterator[str]:
    yield domain_name
    with contextlib.suppress(libvirt.libvirtError):
        libvirt_conn.lookupByName(domain_name).undefineFlags(
            libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        )


async def test_keep_records_its_layer_volumes_and_recovery_removes_a_domain_with_snapshots(
    snapshot_vm: Path,
    dir_pool: DirPool,
    undefine_with_snapshots: str,
    tmp_path: Path,
    store: JobStore,
    libvirt_conn: Any,
    monkeypatch: Any,
) -> None:
    name = undefine_with_snapshots
    monkeypatch.setenv(HOLD, "define:3")
    number = (await asyncio.to_thread(store.create, str(snapshot_vm), {}, 0, now_us=1)).number
    events = RecordingEvents()
    options = _options(tmp_path, name, pool=dir_pool.name, snapshots="keep")
    task = asyncio.create_task(
        run_migration(str(snapshot_vm), options, events, recorder=store.recorder(number))
    )
    rows = await _rows_in_phase(task, events, store, number, "define")
    assert _kinds(rows) == ["tree", "volume", "volume"]  # the base and its delta
    result = await task
    assert await asyncio.to_thread(store.residues, number) != []  # until stored as completed
    assert sorted(r.path for r in rows if r.kind == "volume") == sorted(result.outputs)
    await asyncio.to_thread(store.update, number, state="completed", end_time=2)
    assert await asyncio.to_thread(store.residues, number) == []

    # As if the daemon had died right after defining it: the domain has snapshot metadata,
    # which a plain undefine refuses; recovery removes the domain, then the volumes.
    crashed = await asyncio.to_thread(_running, store, str(snapshot_vm), "define")
    rec = store.recorder(crashed)
    for row in rows:
        if row.kind == "volume":
            await asyncio.to_thread(rec.record, row)
    domain = Residue("domain", name=name, uri=DEFAULT_URI, uuid=result.domain_uuid)
    await asyncio.to_thread(rec.record, domain)
    dom = await asyncio.to_thread(libvirt_conn.lookupByName, name)
    assert await asyncio.to_thread(dom.snapshotNum, 0) == 1
    lines = await asyncio.to_thread(recover, store)
    assert lines[0] == f"job {crashed}: removed domain {name}"
    assert all(line.startswith(f"job {crashed}: removed volume") for line in lines[1:3])
    assert await asyncio.to_thread(_volumes, dir_pool) == []
    with pytest.raises(libvirt.libvirtError):
        await asyncio.to_thread(libvirt_conn.lookupByName, name)
