"""``RemoteSources`` against the vSphere simulator: a login cut short by a cancel is logged out."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from testbed.vcsim import Vcsim
from tests.e2e_vsphere.test_migrate_vsphere import SECRET, Sim
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
