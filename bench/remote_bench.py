"""Remote disk reads: the adapter (nbdkit curl → qemu-img) against curl, from the same simulator.

    .venv/bin/python bench/remote_bench.py [--mib 256] [--runs 3]

Starts the vSphere simulator (ESX mode), writes flat extents of random data into its datastore,
and times, in one run (medians): curl downloading one file to a local file; the adapter copying
the same file to a local qcow2 (``qemu-img convert`` from ``RemoteDisk``); two files at once
through two adapters.  Ratios: single disk against curl (goal ≥ 0.9), two disks against one curl
(goal ≥ 1.5).  The RSS of this process and of nbdkit is sampled during the copies: the daemon's
memory must stay flat (no staging in memory).  Not run by the tests.

It also counts the CPU time each way costs (the client's: curl, or nbdkit + qemu-img; and the
simulator's), because on one machine the simulator's TLS and the client share the same cores:
when curl alone keeps them all busy, no reader can beat curl's CPU cost per byte, and the ratio
is bounded by curl's CPU per byte over the adapter's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pyVim.connect import SmartConnect
from pyVmomi import vim

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from testbed.vcsim import PASSWORD, USER, Vcsim, VcsimInfo
from vm2kvmd.adapters import qemu_img
from vm2kvmd.adapters.remote_disk import COPY_REQUESTS, RemoteDisk

MIB = 1 << 20
PAIR = ["a-flat.vmdk", "b-flat.vmdk"]


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children_cpu() -> float:
    """CPU seconds of this process's reaped children (curl, nbdkit, qemu-img)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _cpu_of(pid: int) -> float:
    """CPU seconds of a running process (the simulator)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Cost:
    """Wall time and CPU seconds (client, simulator) of each run of one way of reading."""

    def __init__(self, simulator: int) -> None:
        self.simulator = simulator
        self.wall: list[float] = []
        self.client: list[float] = []
        self.server: list[float] = []

    def measure(self, run: Callable[[], float]) -> None:
        client, server = _children_cpu(), _cpu_of(self.simulator)
        self.wall.append(run())
        self.client.append(_children_cpu() - client)
        self.server.append(_cpu_of(self.simulator) - server)

    def cpu(self) -> float:
        return statistics.median(c + s for c, s in zip(self.client, self.server, strict=True))


def _session(info: VcsimInfo) -> tuple[Path, str]:
    context = ssl.create_default_context(cafile=info.ca_file)
    si = SmartConnect(host=info.host, port=info.port, user=USER, pwd=PASSWORD, sslContext=context)
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.Datastore], True)
    (datastore,) = view.view
    view.Destroy()
    return Path(datastore.info.url), str(si._stub.cookie)


def _url(info: VcsimInfo, name: str) -> str:
    return f"https://{info.host}:{info.port}/folder/{name}?dcPath=ha-datacenter&dsName=LocalDS_0"


def _curl(info: VcsimInfo, cookie: str, name: str, dst: Path) -> float:
    start = time.monotonic()
    # The bench's own session on a loopback simulator: the cookie in curl's argv is harmless here.
    subprocess.run(
        [
            "curl",
            "-sf",
            "--cacert",
            info.ca_file,
            "-H",
            f"Cookie: {cookie}",
            "-o",
            str(dst),
            _url(info, name),
        ],
        check=True,
    )
    return time.monotonic() - start


class Memory:
    def __init__(self) -> None:
        self.own: list[int] = []
        self.nbdkit: list[int] = []


async def _adapter(
    info: VcsimInfo, cookie: str, names: list[str], work: Path, memory: Memory, requests: int
) -> float:
    async def one(name: str) -> None:
        async with RemoteDisk(_url(info, name), cookie, work_dir=work, ca_file=info.ca_file) as disk:
            pids.append(disk.pid or 0)
            # The pipeline's own copy (its qemu-img options), from the reader's node.
            await qemu_img.convert(
                disk.node,
                str(work / f"{name}.qcow2"),
                dst_format="qcow2",
                on_progress=lambda _p: None,
                target_exists=False,
                requests=requests,
            )

    async def sample() -> None:
        while True:
            memory.own.append(_rss_kib(os.getpid()))
            memory.nbdkit += [_rss_kib(pid) for pid in pids if pid]
            await asyncio.sleep(0.02)

    pids: list[int] = []
    sampler = asyncio.create_task(sample())
    start = time.monotonic()
    try:
        await asyncio.gather(*(one(name) for name in names))
    finally:
        sampler.cancel()
    return time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=COPY_REQUESTS, help="qemu-img -m (the pipeline's)")
    args = parser.parse_args()
    size = args.mib * MIB
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs")
    simulator = Vcsim("esx")
    with simulator as info, tempfile.TemporaryDirectory(prefix="remote-bench-") as tmp:
        assert simulator.proc is not None
        curl, single, double = Cost(simulator.proc.pid), Cost(simulator.proc.pid), Cost(simulator.proc.pid)
        work = Path(tmp)
        directory, cookie = _session(info)
        for name in PAIR:
            with open(directory / name, "wb") as f:
                for _ in range(args.mib):
                    f.write(os.urandom(MIB))
        memory = Memory()
        for _ in range(args.runs):
            curl.measure(lambda: _curl(info, cookie, "a-flat.vmdk", work / "curl.bin"))
            (work / "curl.bin").unlink()
            single.measure(lambda: asyncio.run(_adapter(info, cookie, PAIR[:1], work, memory, args.requests)))
            for leftover in work.glob("*.qcow2"):
                leftover.unlink()
            double.measure(lambda: asyncio.run(_adapter(info, cookie, PAIR, work, memory, args.requests)))
            for leftover in work.glob("*.qcow2"):
                leftover.unlink()
    curl_rate = size / statistics.median(curl.wall)
    single_rate = size / statistics.median(single.wall)
    double_rate = 2 * size / statistics.median(double.wall)
    rows = [
        ("curl, one file", curl_rate),
        ("adapter, one disk", single_rate),
        ("adapter, two disks at once (total)", double_rate),
    ]
    print(f"{args.mib} MiB per disk, medians of {args.runs} runs, qemu-img -m {args.requests}")
    for label, rate in rows:
        print(f"  {label:38} {rate / MIB:8.1f} MiB/s")
    ratio1, ratio2 = single_rate / curl_rate, double_rate / curl_rate
    print(f"  single disk / curl  {ratio1:.2f}  (goal >= 0.9)")
    print(f"  two disks / curl    {ratio2:.2f}  (goal >= 1.5)")
    gib = size / (1 << 30)
    for label, cost, disks in (
        ("curl", curl, 1),
        ("adapter, one disk", single, 1),
        ("adapter, two disks", double, 2),
    ):
        client = statistics.median(cost.client) / (disks * gib)
        server = statistics.median(cost.server) / (disks * gib)
        print(f"  CPU per GiB, {label:18} client {client:5.2f} s + simulator {server:5.2f} s")
    busy = curl.cpu() / statistics.median(curl.wall)
    ceiling = curl.cpu() / single.cpu()
    print(f"  cores busy during curl {busy:.2f} of {os.cpu_count()}")
    print(f"  CPU-bound ceiling of one disk / curl: {ceiling:.2f}")
    print(f"  load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"  RSS of this process {min(memory.own) / 1024:.1f}–{max(memory.own) / 1024:.1f} MiB, "
        f"of nbdkit up to {max(memory.nbdkit, default=0) / 1024:.1f} MiB"
    )
    return 0 if ratio1 >= 0.9 and ratio2 >= 1.5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
