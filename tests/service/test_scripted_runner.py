"""The service tests' ``ScriptedRunner`` reports the phases the real pipeline reports.

The real one is ``pipeline.run_migration`` on a one-disk 1 MiB VM into a pool of the
test libvirtd (qemu-img copies, libvirt defines): on success, on a failure and on a
cancel in each phase.  A failure or cancel is made at the same point in both, on
entering the phase (the events raise, or cancel the running task); two failures are
the pipeline's own (a work directory it cannot make, a disk it cannot read).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest

from testbed.disks import make_unreadable_vmdk
from testbed.services import DirPool
from tests.pipeline.support import MiB, RecordingEvents, make_disk, vm_with
from tests.service.support import ScriptedRunner, pipeline_phases
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.pipeline import run_migration
from vm2kvmd.pipeline.conversion import unconverted

pytestmark = pytest.mark.libvirt

FAILURE = Vm2kvmError(ErrorCode.COPY_FAILED, "failed on purpose")


class PhaseEvents(RecordingEvents):
    """Records; on entering ``at`` raises ``FAILURE`` (``fail``) or cancels the running task."""

    def __init__(self, at: str = "", *, fail: bool = False) -> None:
        super().__init__()
        self.at = at
        self.fail = fail

    def phase(self, name: str) -> None:
        super().phase(name)
        if name == self.at:
            if self.fail:
                raise FAILURE
            task = asyncio.current_task()
            assert task is not None
            task.cancel()


async def no_conversion(*_args: object) -> object:
    """A converter that leaves the guest as it is: the pipeline still goes through "convert"."""
    return unconverted()


@pytest.fixture
def tiny_vm(tmp_path: Path) -> Path:
    vmdir = tmp_path / "vm"
    vmdir.mkdir()
    return vm_with(vmdir, [make_disk(vmdir, "disk0.vmdk", 1 * MiB, [(0, 64 << 10, 0x41)])])


@pytest.fixture
def options(dir_pool: DirPool, domain_name: str, tmp_path: Path) -> MigrateOptions:
    return MigrateOptions(
        name=domain_name,
        pool=dir_pool.name,
        domain_type="qemu",
        work_dir=str(tmp_path / "work"),
        guest_conversion=False,
    )


async def phases_of(run: Awaitable[Any], events: RecordingEvents) -> list[str]:
    """The phases ``run`` reported; in a task of its own, so ``PhaseEvents`` cancels only it."""
    task = asyncio.ensure_future(run)
    with contextlib.suppress(Vm2kvmError, asyncio.CancelledError):
        await task
    return events.phases


async def real_phases(
    vm: Path, options: MigrateOptions, events: RecordingEvents, libvirt_conn: Any
) -> list[str]:
    """The pipeline's phases; the domain it defined, if it succeeded, is undefined again."""
    converter: Any = no_conversion if options.guest_conversion else None
    task = asyncio.ensure_future(run_migration(str(vm), options, events, converter=converter))
    phases = await phases_of(task, events)
    if not task.cancelled() and task.exception() is None:
        name = task.result().domain_name
        await asyncio.to_thread(lambda: libvirt_conn.lookupByName(name).undefine())
    return phases


async def scripted_phases(
    runner: ScriptedRunner, options: MigrateOptions, events: RecordingEvents
) -> list[str]:
    sink: Any = (
        events  # RecordingEvents takes the pipeline's DiskProgress, the runner's protocol any DiskInfo
    )
    return await phases_of(runner("/vms/a.vmx", options, sink), events)


@pytest.mark.parametrize(
    "changes",
    [{}, {"verify": True}, {"guest_conversion": True}],
    ids=["plain", "verify", "convert"],
)
async def test_success(
    tiny_vm: Path, options: MigrateOptions, libvirt_conn: Any, changes: dict[str, Any]
) -> None:
    options = dataclasses.replace(options, **changes)
    real = await real_phases(tiny_vm, options, RecordingEvents(), libvirt_conn)
    scripted = await scripted_phases(ScriptedRunner(steps=1), options, RecordingEvents())
    assert real == scripted == list(pipeline_phases(options))
    assert "cleanup" not in real


@pytest.mark.parametrize("phase", ["inspect", "prepare", "copy", "define"])
async def test_failure_in_each_phase(
    tiny_vm: Path, options: MigrateOptions, libvirt_conn: Any, phase: str
) -> None:
    real = await real_phases(tiny_vm, options, PhaseEvents(phase, fail=True), libvirt_conn)
    runner = ScriptedRunner(steps=1, fail=FAILURE, fail_phase=phase)
    scripted = await scripted_phases(runner, options, RecordingEvents())
    assert real == scripted
    assert runner.cleaned_up is (real[-1] == "cleanup")


@pytest.mark.parametrize("phase", ["inspect", "prepare", "copy", "define"])
async def test_cancel_in_each_phase(
    tiny_vm: Path, options: MigrateOptions, libvirt_conn: Any, phase: str
) -> None:
    real = await real_phases(tiny_vm, options, PhaseEvents(phase), libvirt_conn)
    runner = ScriptedRunner(steps=1)
    scripted = await scripted_phases(runner, options, PhaseEvents(phase))
    assert real == scripted
    assert runner.cleaned_up is (real[-1] == "cleanup")


async def test_the_pipelines_own_failures(
    tmp_path: Path, tiny_vm: Path, options: MigrateOptions, libvirt_conn: Any
) -> None:
    # A work directory that cannot be made (a file is in the way): refused while preparing,
    # before anything was created.
    (tmp_path / "file").write_text("")
    no_work_dir = dataclasses.replace(options, work_dir=str(tmp_path / "file" / "work"))
    real = await real_phases(tiny_vm, no_work_dir, RecordingEvents(), libvirt_conn)
    runner = ScriptedRunner(steps=1, fail=FAILURE, fail_phase="prepare")
    assert real == await scripted_phases(runner, no_work_dir, RecordingEvents()) == ["inspect", "prepare"]
    # A disk qemu-img cannot read: the copy fails after the volume was created.
    vmdir = tmp_path / "bad"
    vmdir.mkdir()
    bad = vm_with(vmdir, [make_unreadable_vmdk(vmdir, "bad.vmdk", 1 * MiB)])
    real = await real_phases(bad, options, RecordingEvents(), libvirt_conn)
    runner = ScriptedRunner(steps=1, fail=FAILURE, fail_phase="copy")
    assert real == await scripted_phases(runner, options, RecordingEvents())
    assert real[-2:] == ["copy", "cleanup"]
