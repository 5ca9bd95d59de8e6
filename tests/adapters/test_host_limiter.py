"""Connections per vSphere host over all jobs (``HostLimiter``, held by ``RemoteSources``).

The limiter's rules on their own (fast), then for real: two jobs' readers against the simulator
through a TCP proxy that records every connection, counting how many disk reads were open at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from testbed.proxy import CuttingProxy
from testbed.vcsim import Vcsim
from tests.e2e_vsphere.test_migrate_vsphere import SECRET, Sim, place_flat_disk
from tests.helpers.vmdk_factory import images_equal
from vm2kvmd.adapters import qemu_img
from vm2kvmd.adapters.remote_disk import HostLimiter
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.core.vsphere.source import VsphereSource
from vm2kvmd.core.vsphere.uri import TlsPolicy
from vm2kvmd.pipeline.vsphere import RemoteSources

MiB = 1 << 20


async def _settled() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_reservation_waits_until_the_host_has_room_first_come_first_served() -> None:
    limiter = HostLimiter(per_host=4)
    order: list[str] = []

    async def job(name: str, host: str, n: int, release: asyncio.Event) -> None:
        async with limiter.hold(host, n) as got:
            order.append(f"{name}:{got}")
            await release.wait()

    gates = {name: asyncio.Event() for name in "abcd"}
    a = asyncio.create_task(job("a", "esx1:443", 3, gates["a"]))
    await _settled()
    b = asyncio.create_task(job("b", "esx1:443", 2, gates["b"]))  # 3 + 2 > 4: waits
    await _settled()
    c = asyncio.create_task(job("c", "esx1:443", 1, gates["c"]))  # would fit, but b came first
    d = asyncio.create_task(job("d", "esx2:443", 4, gates["d"]))  # another host: its own 4
    await _settled()
    assert order == ["a:3", "d:4"]
    assert (limiter.in_use("esx1:443"), limiter.busy("esx1:443", 1)) == (3, True)
    gates["a"].set()
    await _settled()
    assert order == ["a:3", "d:4", "b:2", "c:1"]
    assert limiter.in_use("esx1:443") == 3
    for gate in gates.values():
        gate.set()
    await asyncio.gather(a, b, c, d)
    assert (limiter.in_use("esx1:443"), limiter.in_use("esx2:443")) == (0, 0)


async def test_more_than_the_host_allows_takes_the_whole_host_and_a_cancelled_waiter_leaves() -> None:
    limiter = HostLimiter(per_host=2)
    assert (limiter.share(0), limiter.share(5)) == (1, 2)
    held = asyncio.Event()
    release = asyncio.Event()

    async def big() -> None:
        async with limiter.hold("esx1:443", 5) as got:
            assert got == 2
            held.set()
            await release.wait()

    first = asyncio.create_task(big())
    await held.wait()
    waiter = asyncio.create_task(big())
    await _settled()
    waiter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiter
    assert limiter.in_use("esx1:443") == 2
    release.set()
    await first
    assert (limiter.in_use("esx1:443"), limiter.busy("esx1:443", 2)) == (0, False)


class Meeting:
    """Each job, once it holds its reader, waits until the other one holds its reader too or is
    waiting for the limiter: their copies then overlap unless the limiter keeps them apart."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.arrived = 0
        self.all_there = asyncio.Event()
        self.log: list[str] = []

    def arrive(self) -> None:
        self.arrived += 1
        if self.arrived >= self.jobs:
            self.all_there.set()

    def on_log(self, line: str) -> None:
        self.log.append(line)
        if line.startswith("waiting for connections"):
            self.arrive()


async def _job(sim: Sim, vm: str, limiter: HostLimiter, tmp: Path, meeting: Meeting) -> Path:
    """What a migration does with its remote disk: log in, open the reader, copy, close."""
    source = VsphereSource(sim.uri, vm, TlsPolicy(ca_file=sim.info.ca_file), SECRET)
    remote = RemoteSources(source, meeting.on_log, limiter)
    dst = tmp / f"{vm}.qcow2"
    try:
        await remote.load(MigrateOptions())
        (key,) = remote.chains
        disk = await remote.open(key, str(tmp / vm))
        meeting.arrive()
        await meeting.all_there.wait()
        await qemu_img.convert(
            disk.node, str(dst), dst_format="qcow2", on_progress=lambda _p: None, target_exists=False
        )
    finally:
        await remote.aclose()
    return dst


@pytest.mark.slow
@pytest.mark.parametrize("per_host", [1, 2])
async def test_two_jobs_readers_stay_within_the_connections_per_host(per_host: int, tmp_path: Path) -> None:
    vms = ("ha-host_VM0", "ha-host_VM1")
    with Vcsim("esx", password=SECRET) as info:
        sim = Sim(info)
        try:
            disks = [place_flat_disk(sim, vm, "limit", 48 * MiB, random=True) for vm in vms]
            limiter = HostLimiter(per_host)
            meeting = Meeting(len(vms))
            with CuttingProxy(info.host, info.port) as proxy:
                through = Sim.__new__(Sim)
                through.info, through.port = info, proxy.port
                jobs = (_job(through, vm, limiter, tmp_path, meeting) for vm in vms)
                copies = await asyncio.wait_for(asyncio.gather(*jobs), 240)
            for vm, disk, copy in zip(vms, disks, copies, strict=True):
                assert images_equal(disk, copy, fmt_a="vmdk"), vm
        finally:
            sim.close()
    # Logins and descriptor reads carry kilobytes; a disk read carries its 48 MiB.
    assert proxy.most_at_once(min_bytes=16 * MiB) == per_host
    assert limiter.in_use(f"{info.host}:{proxy.port}") == 0
    waited = [line for line in meeting.log if line.startswith("waiting for connections")]
    assert len(waited) == (1 if per_host == 1 else 0), meeting.log
