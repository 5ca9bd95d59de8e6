"""``RemoteSources`` against the vSphere simulator: a login cut short by a cancel is logged out, a
reader started while the session was renewed gets the new cookie, a failing close hides nothing,
and a VM started during the copy fails the job."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim

from testbed.vcsim import Vcsim
from tests.e2e_vsphere.test_migrate_vsphere import SECRET, MiB, Sim, place_flat_disk
from tests.pipeline.support import RecordingEvents
from vm2kvmd.adapters.remote_disk import RemoteDisk
from vm2kvmd.adapters.vsphere import Session
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.core.vsphere.source import VsphereSource
from vm2kvmd.core.vsphere.uri import TlsPolicy
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.pipeline import run_migration, vsphere
from vm2kvmd.pipeline.vsphere import RemoteSources

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sim() -> Iterator[Sim]:
    with Vcsim("esx", password=SECRET) as info:
        sim = Sim(info)
        try:
            yield sim
        finally:
            sim.close()


def _source(sim: Sim, vm: str) -> VsphereSource:
    return VsphereSource(sim.uri, vm, TlsPolicy(ca_file=sim.info.ca_file), SECRET)


def _live(sim: Sim) -> set[str]:
    return {str(s.key) for s in sim.content.sessionManager.sessionList}


async def test_a_login_cancelled_meanwhile_is_logged_out(sim: Sim, monkeypatch: pytest.MonkeyPatch) -> None:
    logged_in, release = threading.Event(), threading.Event()
    keys: list[str] = []
    real_login = vsphere.login

    def slow_login(source: VsphereSource) -> Session:
        session = real_login(source)
        keys.append(session.session_key)
        logged_in.set()
        release.wait(30)
        return session

    monkeypatch.setattr(vsphere, "login", slow_login)
    sources = RemoteSources(_source(sim, "ha-host_VM0"), lambda _line: None)
    task = asyncio.create_task(sources.load(MigrateOptions()))
    await asyncio.to_thread(logged_in.wait, 30)
    assert keys and keys[0] in await asyncio.to_thread(_live, sim)
    task.cancel()
    await asyncio.sleep(0.2)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    await sources.aclose()
    assert keys[0] not in await asyncio.to_thread(_live, sim)


async def test_a_reader_started_during_a_renewal_gets_the_new_cookie(
    sim: Sim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await asyncio.to_thread(place_flat_disk, sim, "ha-host_VM1", "renewed", 4 * MiB)
    sources = RemoteSources(_source(sim, "ha-host_VM1"), lambda _line: None)
    await sources.load(MigrateOptions())
    session, keeper = sources.session, sources.keeper
    assert session is not None and keeper is not None
    first = session.cookie
    real_enter = RemoteDisk.__aenter__

    async def enter_then_renew(disk: RemoteDisk) -> Any:
        # The session ends and the keeper renews it after the reader took its cookie but before
        # the reader is watched.
        started = await real_enter(disk)
        key = await asyncio.to_thread(lambda: session.session_key)
        await asyncio.to_thread(sim.content.sessionManager.TerminateSession, [key])
        assert await keeper.check()
        return started

    monkeypatch.setattr(RemoteDisk, "__aenter__", enter_then_renew)
    try:
        await sources.open(next(iter(sources.chains)), str(tmp_path / "disk1"))
        assert session.cookie != first
        cookies = await asyncio.to_thread(lambda: [p.read_text() for p in tmp_path.rglob("cookie")])
        assert cookies == [session.cookie]
    finally:
        await sources.aclose()


@dataclass
class Run:
    task: asyncio.Task[Any]
    events: RecordingEvents
    out: Path
    work: Path

    async def rolled_back(self) -> bool:
        out, work = self.out, self.work
        return self.events.phases[-1] == "cleanup" and await asyncio.to_thread(
            lambda: not out.exists() and list(work.iterdir()) == []
        )


@contextlib.asynccontextmanager
async def migration_in_copy(sim: Sim, vm: str, tmp_path: Path) -> AsyncIterator[Run]:
    """A migration of ``vm`` to an output directory, entered into its copy phase (held there by
    VM2KVMD_TEST_HOLD, which the test sets)."""
    # Short: nbdkit's socket goes into the work area, and a socket path has at most 107 bytes.
    short = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="vst-"))
    out, work = tmp_path / "out", short / "work"
    options = MigrateOptions(
        name=vm, domain_type="qemu", guest_conversion=False, work_dir=str(work), output_dir=str(out)
    )
    source = _source(sim, vm)
    events = RecordingEvents()
    task = asyncio.create_task(run_migration(source.label, options, events, vsphere=source))
    try:
        for _ in range(3000):
            if "copy" in events.phases or task.done():
                break
            await asyncio.sleep(0.01)
        assert "copy" in events.phases
        yield Run(task, events, out, work)
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await asyncio.to_thread(shutil.rmtree, short)


async def test_a_failing_close_neither_hides_the_cancel_nor_skips_the_rollback(
    sim: Sim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No real host answers with a broken HTTP response on demand: the readers' close raises what
    # http.client would, after really closing them.
    await asyncio.to_thread(place_flat_disk, sim, "ha-host_VM0", "closing", 4 * MiB)
    real_aclose = RemoteSources.aclose

    async def aclose(self: RemoteSources, exc: BaseException | None = None) -> None:
        await real_aclose(self, exc)
        raise http.client.BadStatusLine("garbage")

    monkeypatch.setattr(RemoteSources, "aclose", aclose)
    monkeypatch.setenv("VM2KVMD_TEST_HOLD", "copy:30")
    async with migration_in_copy(sim, "ha-host_VM0", tmp_path) as run:
        assert await asyncio.to_thread(lambda: bool(list(run.out.iterdir())))
        run.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run.task
        assert await run.rolled_back()


def test_a_logout_failing_in_http_still_closes(sim: Sim, monkeypatch: pytest.MonkeyPatch) -> None:
    session = vsphere.login(_source(sim, "ha-host_VM0"))
    manager = session.content.sessionManager

    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise http.client.BadStatusLine("garbage")

    monkeypatch.setattr(type(manager), "Logout", broken)
    session.close()  # best effort: no error, whatever the host answered


def _reconfigure(sim: Sim, vm: Any) -> None:
    spec: Any = vim.vm.ConfigSpec
    WaitForTask(vm.ReconfigVM_Task(spec(annotation=f"changed {time.time()}")))


@pytest.mark.parametrize("change", ["power-on", "reconfigure"])
async def test_a_vm_started_or_changed_during_the_copy_fails_the_job(
    sim: Sim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    await asyncio.to_thread(place_flat_disk, sim, "ha-host_VM1", change, 4 * MiB)
    monkeypatch.setenv("VM2KVMD_TEST_HOLD", "copy:3")
    vm = await asyncio.to_thread(sim.vm, "ha-host_VM1")
    try:
        async with migration_in_copy(sim, "ha-host_VM1", tmp_path) as run:
            if change == "power-on":
                await asyncio.to_thread(sim.power, vm, True)
            else:
                await asyncio.to_thread(_reconfigure, sim, vm)
            with pytest.raises(Vm2kvmError) as caught:
                await run.task
            if change == "power-on":
                assert caught.value.code is ErrorCode.SOURCE_POWERED_ON
                assert "was powered on while its disks were copied" in caught.value.message
            else:
                assert caught.value.code is ErrorCode.SOURCE_CHANGED
                assert "was reconfigured while its disks were copied" in caught.value.message
            assert await run.rolled_back()
    finally:
        await asyncio.to_thread(sim.power, vm, False)
