"""Overlays: one qcow2 per source disk in the job's work area, the hook point, cleanup."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from testbed.disks import make_delta, make_unreadable_vmdk
from testbed.services import DirPool
from tests.helpers.vmdk_factory import images_equal, read_virtual, sha256_tree
from tests.pipeline.support import MiB, RecordingEvents, allocated, make_disk, vm_with
from vm2kvmd.adapters import qemu_img
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.core.planning import blockdev as qemu_source
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.pipeline import run_migration
from vm2kvmd.pipeline.overlay import QCOW2_BACKING_MAX, Overlay, backing_file


def _opts(tmp_path: Path, **kw: Any) -> MigrateOptions:
    kw.setdefault("output_dir", str(tmp_path / "out"))
    kw.setdefault("name", "overlaid")
    kw.setdefault("work_dir", str(tmp_path / "work"))
    return MigrateOptions(domain_type="qemu", **kw)


async def _qemu(*args: str) -> str:
    """A tool run from a hook: the hook runs in the event loop, so no blocking subprocess."""
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


@pytest.fixture
def two_disk_vm(tmp_path: Path) -> Path:
    vmdir = tmp_path / "vm"
    vmdir.mkdir()
    system = make_disk(vmdir, "system.vmdk", 64 * MiB, [(0, 8 * MiB, 0xAB), (40 * MiB, 2 * MiB, 0x11)])
    data = make_disk(vmdir, "data.vmdk", 32 * MiB, [(MiB, MiB, 0x22)], subformat="twoGbMaxExtentSparse")
    return vm_with(vmdir, [system, data])


async def test_every_disk_gets_an_overlay_over_its_read_only_source(
    two_disk_vm: Path, tmp_path: Path
) -> None:
    seen: list[tuple[Overlay, dict[str, Any]]] = []

    async def inspect_overlays(overlays: Sequence[Overlay]) -> None:
        for overlay in overlays:
            seen.append((overlay, json.loads(await _qemu("qemu-img", "info", "--output=json", overlay.path))))

    before = sha256_tree(two_disk_vm.parent)
    result = await run_migration(
        str(two_disk_vm), _opts(tmp_path), RecordingEvents(), before_copy=[inspect_overlays]
    )

    assert [o.key for o, _ in seen] == ["scsi0:0", "scsi0:1"]
    work = tmp_path / "work"
    for (overlay, info), name in zip(seen, ("system.vmdk", "data.vmdk"), strict=True):
        assert Path(overlay.path).parent.parent.parent == work  # work/job-*/diskN/overlay.qcow2
        assert info["format"] == "qcow2"
        assert info["backing-filename-format"] == "vmdk"
        backing = json.loads(info["backing-filename"].removeprefix("json:"))
        assert backing == {
            "driver": "vmdk",
            "read-only": True,
            "file": {"driver": "file", "filename": str(two_disk_vm.parent / name)},
        }
        assert overlay.label == str(two_disk_vm.parent / name)
    # The work area is gone with the job; the sources were never written.
    assert list(work.iterdir()) == []
    assert sha256_tree(two_disk_vm.parent) == before
    for out, name in zip(result.outputs[:2], ("system.vmdk", "data.vmdk"), strict=True):
        assert images_equal(two_disk_vm.parent / name, Path(out))


async def test_a_discard_in_the_overlay_is_not_copied(two_disk_vm: Path, tmp_path: Path) -> None:
    """What the guest conversion will do with fstrim: discarded blocks read as zeros, cost nothing."""

    async def trim(overlays: Sequence[Overlay]) -> None:
        await _qemu("qemu-io", "-f", "qcow2", "-c", "discard 0 4M", overlays[0].path)

    before = sha256_tree(two_disk_vm.parent)
    plain_events = RecordingEvents()
    plain = await run_migration(str(two_disk_vm), _opts(tmp_path, name="plain"), plain_events)
    events = RecordingEvents()
    trimmed = await run_migration(
        str(two_disk_vm), _opts(tmp_path, name="trimmed"), events, before_copy=[trim]
    )

    source = two_disk_vm.parent / "system.vmdk"
    full, small = Path(plain.outputs[0]), Path(trimmed.outputs[0])
    assert allocated(full) - allocated(small) >= 4 * MiB - 64 * 1024
    assert read_virtual(small, 0, 4 * MiB, fmt="qcow2") == bytes(4 * MiB)
    assert read_virtual(small, 4 * MiB, 4 * MiB, fmt="qcow2") == read_virtual(source, 4 * MiB, 4 * MiB)
    assert read_virtual(small, 40 * MiB, 2 * MiB, fmt="qcow2") == bytes([0x11]) * 2 * MiB
    # The progress total is measured after the hooks: the discarded 4 MiB are not announced.
    assert plain_events.announced[0].total - events.announced[0].total == 4 * MiB
    assert sha256_tree(two_disk_vm.parent) == before
    assert images_equal(source, full)


async def test_hooks_run_in_order_after_the_first_space_check(two_disk_vm: Path, tmp_path: Path) -> None:
    calls: list[str] = []
    events = RecordingEvents()

    async def first(overlays: Sequence[Overlay]) -> None:
        calls.append(f"first {len(overlays)} {events.phases[-1]}")

    async def second(overlays: Sequence[Overlay]) -> None:
        calls.append("second")

    await run_migration(str(two_disk_vm), _opts(tmp_path), events, before_copy=[first, second])
    assert calls == ["first 2 prepare", "second"]


async def test_a_failing_hook_rolls_back_and_removes_the_overlays(two_disk_vm: Path, tmp_path: Path) -> None:
    async def fail(overlays: Sequence[Overlay]) -> None:
        raise Vm2kvmError(ErrorCode.INTERNAL, "the guest could not be converted")

    with pytest.raises(Vm2kvmError, match="could not be converted"):
        await run_migration(str(two_disk_vm), _opts(tmp_path), RecordingEvents(), before_copy=[fail])
    assert list((tmp_path / "work").iterdir()) == []
    assert not (tmp_path / "out").exists()


async def test_work_area_goes_after_a_copy_failure_and_a_cancel(
    tmp_path: Path, dir_pool: DirPool, domain_name: str
) -> None:
    vmdir = tmp_path / "vm"
    vmdir.mkdir()
    good = make_disk(vmdir, "good.vmdk", 64 * MiB, [(0, 32 * MiB, 0x5A)])
    bad = make_unreadable_vmdk(vmdir, "bad.vmdk", 32 * MiB)
    failing, cancelled = vm_with(vmdir, [good, bad], "Failing"), vm_with(vmdir, [good], "Cancelled")
    before = sha256_tree(vmdir)
    options = MigrateOptions(
        name=domain_name, pool=dir_pool.name, domain_type="qemu", work_dir=str(tmp_path / "work")
    )
    with pytest.raises(Vm2kvmError) as exc:
        await run_migration(str(failing), options, RecordingEvents())
    assert exc.value.code is ErrorCode.COPY_FAILED
    assert list((tmp_path / "work").iterdir()) == []

    class CancelInCopy(RecordingEvents):
        def disk_progress(self, index: int, done: int, total: int) -> None:
            super().disk_progress(index, done, total)
            task.cancel()

    task = asyncio.create_task(run_migration(str(cancelled), options, CancelInCopy()))
    with pytest.raises(asyncio.CancelledError):
        await task
    assert list((tmp_path / "work").iterdir()) == []
    assert dir_pool.volume_names() == []
    assert sha256_tree(vmdir) == before


async def test_a_long_chain_is_named_through_short_links(tmp_path: Path) -> None:
    """A qcow2 header holds 1023 bytes of backing name; five layers under a long path need more."""
    vmdir = tmp_path / ("A VM with a long, long directory name " * 4).strip()
    vmdir.mkdir()
    layers = [make_disk(vmdir, "disk.vmdk", 16 * MiB, [(0, MiB, 0x01)], subformat="twoGbMaxExtentSparse")]
    for n in range(1, 5):
        layers.append(make_delta(vmdir, f"disk-00000{n}.vmdk", layers[-1], writes=[(n * MiB, 512 * 1024, n)]))
    vmx = vm_with(vmdir, [layers[-1]])
    before = sha256_tree(vmdir)
    backing: list[str] = []

    async def look(overlays: Sequence[Overlay]) -> None:
        info = json.loads(await _qemu("qemu-img", "info", "--output=json", overlays[0].path))
        backing.append(info["backing-filename"])

    result = await run_migration(str(vmx), _opts(tmp_path), RecordingEvents(), before_copy=[look])
    assert len(backing[0]) <= QCOW2_BACKING_MAX
    assert str(vmdir) not in backing[0]  # named through the links
    assert images_equal(layers[-1], Path(result.outputs[0]))
    info = await qemu_img.info(result.outputs[0])
    assert "backing-filename" not in info  # the copy stands alone
    assert sha256_tree(vmdir) == before
    assert list((tmp_path / "work").iterdir()) == []


def test_a_chain_too_deep_for_an_overlay_is_refused(tmp_path: Path) -> None:
    layers = [
        {"driver": "vmdk", "read-only": True, "file": {"driver": "file", "filename": f"/vm/disk-{n:06}.vmdk"}}
        for n in range(16)
    ]
    short = backing_file(qemu_source.stack(layers[:3]), str(tmp_path), 0)
    assert short == qemu_source.json_filename(qemu_source.stack(layers[:3]))  # fits: no links
    with pytest.raises(Vm2kvmError) as exc:
        backing_file(qemu_source.stack(layers), str(tmp_path), 0)
    assert exc.value.code is ErrorCode.UNSUPPORTED_DISK
    assert exc.value.file == "/vm/disk-000000.vmdk"
    assert "16 layers" in exc.value.message and "--snapshots keep" in str(exc.value)


async def test_an_unusable_work_dir_is_a_named_error(two_disk_vm: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    options = _opts(tmp_path, work_dir=str(blocker / "work"))
    with pytest.raises(Vm2kvmError) as exc:
        await run_migration(str(two_disk_vm), options, RecordingEvents())
    assert exc.value.code is ErrorCode.INVALID_OPTION
    assert exc.value.key == "work-dir"
    assert "--work-dir" in str(exc.value)
    assert not (tmp_path / "out").exists()


def test_work_dir_is_the_daemons_not_the_callers() -> None:
    defaults = MigrateOptions(work_dir="/srv/vm2kvm-work")
    assert MigrateOptions.from_mapping({"name": "x"}, defaults).work_dir == "/srv/vm2kvm-work"
    with pytest.raises(Vm2kvmError) as exc:
        MigrateOptions.from_mapping({"work-dir": "/tmp/evil"}, defaults)
    assert exc.value.code is ErrorCode.INVALID_OPTION
    assert "work-dir" not in MigrateOptions(work_dir="/x").to_mapping()
    from vm2kvmd.config import DaemonConfig
    from vm2kvmd.daemon import effective_config, parse_args

    file_config = DaemonConfig(work_dir="/srv/from-file")
    assert effective_config(parse_args(["--work-dir", "/srv/w"]), file_config).work_dir == "/srv/w"
    assert effective_config(parse_args([]), file_config).work_dir == "/srv/from-file"
    assert effective_config(parse_args([]), DaemonConfig()).work_dir == "/var/tmp/vm2kvm"
