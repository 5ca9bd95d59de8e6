"""Remote disk reads: the adapter (nbdkit curl → qemu-img) against curl, from the same simulator.

    .venv/bin/python bench/remote_bench.py [--mib 256] [--runs 3]

Starts the vSphere simulator (ESX mode), writes flat extents of random data into its datastore,
and times, in one run (medians): curl downloading one file to a local file; the adapter copying
the same file to a local qcow2 (``qemu-img convert`` from ``RemoteDisk``); two files at once
through two adapters.  Ratios: single disk against curl (goal ≥ 0.9), two disks against one curl
(goal ≥ 1.5).  The RSS of this process and of nbdkit is sampled during the copies: the daemon's
memory must stay flat (no staging in memory).  Not run by the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pyVim.connect import SmartConnect
from pyVmomi import vim

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from testbed.vcsim import PASSWORD, USER, Vcsim, VcsimInfo
from vm2kvmd.adapters.remote_disk import RemoteDisk

MIB = 1 << 20


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


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


async def _adapter(info: VcsimInfo, cookie: str, names: list[str], work: Path, memory: Memory) -> float:
    async def one(name: str) -> None:
        async with RemoteDisk(_url(info, name), cookie, work_dir=work, ca_file=info.ca_file) as disk:
            pids.append(disk.pid or 0)
            proc = await asyncio.create_subprocess_exec(
                "qemu-img", "convert", "-W", "-m", "8", "-O", "qcow2", disk.uri, str(work / f"{name}.qcow2")
            )
            if await proc.wait() != 0:
                raise RuntimeError(f"qemu-img failed on {name}")

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
    args = parser.parse_args()
    size = args.mib * MIB
    with Vcsim("esx") as info, tempfile.TemporaryDirectory(prefix="remote-bench-") as tmp:
        work = Path(tmp)
        directory, cookie = _session(info)
        for name in ("a-flat.vmdk", "b-flat.vmdk"):
            with open(directory / name, "wb") as f:
                for _ in range(args.mib):
                    f.write(os.urandom(MIB))
        curl, single, double = [], [], []
        memory = Memory()
        for _ in range(args.runs):
            curl.append(_curl(info, cookie, "a-flat.vmdk", work / "curl.bin"))
            (work / "curl.bin").unlink()
            single.append(asyncio.run(_adapter(info, cookie, ["a-flat.vmdk"], work, memory)))
            double.append(asyncio.run(_adapter(info, cookie, ["a-flat.vmdk", "b-flat.vmdk"], work, memory)))
            for leftover in work.glob("*.qcow2"):
                leftover.unlink()
    curl_rate = size / statistics.median(curl)
    single_rate = size / statistics.median(single)
    double_rate = 2 * size / statistics.median(double)
    rows = [
        ("curl, one file", curl_rate),
        ("adapter, one disk", single_rate),
        ("adapter, two disks at once (total)", double_rate),
    ]
    print(f"{args.mib} MiB per disk, medians of {args.runs} runs")
    for label, rate in rows:
        print(f"  {label:38} {rate / MIB:8.1f} MiB/s")
    ratio1, ratio2 = single_rate / curl_rate, double_rate / curl_rate
    print(f"  single disk / curl  {ratio1:.2f}  (goal >= 0.9)")
    print(f"  two disks / curl    {ratio2:.2f}  (goal >= 1.5)")
    print(
        f"  RSS of this process {min(memory.own) / 1024:.1f}–{max(memory.own) / 1024:.1f} MiB, "
        f"of nbdkit up to {max(memory.nbdkit, default=0) / 1024:.1f} MiB"
    )
    return 0 if ratio1 >= 0.9 and ratio2 >= 1.5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
