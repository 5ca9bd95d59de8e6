"""``RemoteSources`` against the vSphere simulator: a login cut short by a cancel is logged out, and
a reader started while the session was renewed gets the new cookie."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.vcsim import Vcsim
from tests.e2e_vsphere.test_migrate_vsphere import SECRET, MiB, Sim, place_flat_disk
from vm2kvmd.adapters.remote_disk import RemoteDisk
from vm2kvmd.adapters.vsphere import Session
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.core.vsphere.source import VsphereSource
from vm2kvmd.core.vsphere.uri import TlsPolicy
from vm2kvmd.pipeline import vsphere
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
