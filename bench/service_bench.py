"""Service benchmark of vm2kvmd: idle memory, listing 1,000 jobs, CPU share while copying.

    .venv/bin/python bench/service_bench.py [--dir build/bench] [--jobs 1000] [--runs 20]
                                            [--size-gib 4] [--data-gib 3]

Runs the real daemon (``python -m vm2kvmd.daemon``) on a private dbus-daemon,
as a real user would run it, and reports:

1. **idle RSS**: the daemon's resident memory (``VmRSS``) after start-up and
   a few seconds of idling with ``--jobs`` finished jobs in its store (goal:
   at most 40 MiB);
2. **listing jobs**: the median time of the call ``vm2kvmctl jobs --all``
   makes (``Manager1.ListJobs``: every job with every property, as JSON,
   decoded) over ``--runs`` runs, with ``--jobs`` finished jobs seeded into
   the store (goal: at most 50 ms); ``GetManagedObjects`` (the same values as
   variants, unwrapped) and the whole ``vm2kvmctl jobs --all --json`` command
   (process start included) are reported next to it;
3. **CPU share during a copy**: the daemon's own CPU time (``utime+stime``
   of its process; qemu-img is a child and not counted) divided by the wall
   time of the copy phase of a real migration of a disk with ``--data-gib``
   of data (goal: at most 2 % of one core).

Prints a table, writes ``service-results.json`` into ``--dir`` and exits 1
when a goal is missed.  Needs root (libvirt's system instance) and
``./test.sh``'s set-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from copy_bench import GiB, build_source, warm  # noqa: E402

from testbed.bus import PrivateBus  # noqa: E402
from testbed.services import DirPool, ensure_libvirtd, remove_domain, unique_name  # noqa: E402
from vm2kvmctl.client import Client, unwrap  # noqa: E402
from vm2kvmd.constants import JOB_IFACE, MANAGER_PATH, OBJECT_MANAGER_IFACE  # noqa: E402
from vm2kvmd.service.store import DiskRecord, JobStore  # noqa: E402

MiB = 1 << 20
RSS_GOAL = 40 * MiB
LIST_GOAL = 0.050
CPU_GOAL = 0.02
CLK_TCK = os.sysconf("SC_CLK_TCK")


def seed_store(state_dir: Path, count: int, source: str) -> None:
    """``count`` finished jobs, shaped like real ones (two disks, outputs, notes, a report)."""
    store = JobStore.open(str(state_dir))
    try:
        now = time.time_ns() // 1000
        options = {"pool": "default", "format": "qcow2", "guest-conversion": True}
        for i in range(count):
            record = store.create(source, options, 0, now_us=now - (count - i) * 60_000_000)
            store.update(
                record.number,
                state="completed" if i % 10 else "failed",
                phase="define",
                work_phase="define",
                start_time=record.create_time + 1_000_000,
                end_time=record.create_time + 50_000_000,
                domain=f"bench-vm-{i}",
                outputs=(f"/var/lib/libvirt/images/bench-vm-{i}-sda.qcow2",),
                notes=("the guest's NIC names were pinned to their MAC addresses",),
                disks=(
                    DiskRecord(
                        "scsi0:0", f"/var/lib/libvirt/images/bench-vm-{i}-sda.qcow2", 8 * GiB, 8 * GiB
                    ),
                ),
                error=("", "") if i % 10 else ("org.vm2kvm.Error.CopyFailed", "qemu-img failed: no space"),
                report="",
            )
    finally:
        store.close()


class Daemon:
    """``python -m vm2kvmd.daemon --bus session`` on ``address``; the bench's own copy, not the tests'."""

    def __init__(self, address: str, state_dir: Path, work_dir: Path, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DBUS_")}
        env["DBUS_SESSION_BUS_ADDRESS"] = address
        env["PYTHONPATH"] = str(REPO)
        argv = [sys.executable, "-m", "vm2kvmd.daemon", "--bus", "session", "--config", os.devnull]
        argv += ["--state-dir", str(state_dir), "--work-dir", str(work_dir), "--log-level", "warning"]
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
        )

    def rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime: the process, not children

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def wait_answering(client: Client) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            # A small call: listing the jobs would grow the heap before the idle RSS is read.
            await client.call(MANAGER_PATH, "org.freedesktop.DBus.Peer", "Ping")
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def list_times(client: Client, runs: int) -> tuple[float, float, int]:
    """Medians of ``vm2kvmctl jobs``' call (``ListJobs``, decoded) and of ``GetManagedObjects``
    (unwrapped), and the number of jobs listed."""
    count = len(await client.jobs())  # warm-up, and the count
    listed, managed = [], []
    for _ in range(runs):
        begin = time.perf_counter()
        await client.jobs()
        middle = time.perf_counter()
        (objects,) = await client.call(MANAGER_PATH, OBJECT_MANAGER_IFACE, "GetManagedObjects")
        {path: unwrap(interfaces[JOB_IFACE]) for path, interfaces in objects.items()}
        listed.append(middle - begin)
        managed.append(time.perf_counter() - middle)
    return statistics.median(listed), statistics.median(managed), count


def cli_time(address: str, runs: int = 5) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBUS_")}
    env["DBUS_SESSION_BUS_ADDRESS"] = address
    env["PYTHONPATH"] = str(REPO)
    times = []
    for _ in range(runs):
        begin = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "vm2kvmctl.main", "--bus", "session", "--json", "jobs", "--all"],
            cwd=REPO,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        times.append(time.perf_counter() - begin)
    return statistics.median(times)


async def copy_cpu(client: Client, daemon: Daemon, vmx: Path, pool: DirPool) -> dict[str, float]:
    """The daemon's CPU seconds and the wall seconds of the copy phase of one migration."""
    name = unique_name("bench")
    signals = await client.subscribe()
    from dbus_fast.signature import Variant

    options = {
        "name": Variant("s", name),
        "pool": Variant("s", pool.name),
        "domain-type": Variant("s", "qemu"),
        "guest-conversion": Variant("b", False),
    }
    path = await client.migrate(str(vmx), options)
    queue = signals.follow(path)
    marks: dict[str, tuple[float, float]] = {}
    try:
        while True:
            event = await asyncio.wait_for(queue.get(), 600)
            props = getattr(event, "properties", {})
            phase = props.get("Phase")
            if phase and phase not in marks:
                marks[phase] = (time.monotonic(), daemon.cpu_seconds())
            if type(event).__name__ == "Completed":
                break
        final = await client.job(path)
        if final["State"] != "completed":
            raise RuntimeError(f"migration failed: {final['Error']}")
    finally:
        import libvirt

        conn = libvirt.open("qemu:///system")  # a fresh connection: the bench's may be stale
        try:
            if name in [d.name() for d in conn.listAllDomains(0)]:
                remove_domain(conn, name)
            for vol in conn.storagePoolLookupByName(pool.name).listAllVolumes(0):
                vol.delete(0)
        finally:
            conn.close()
    (t0, c0), (t1, c1) = marks["copy"], marks["define"]
    return {"copy_seconds": t1 - t0, "cpu_seconds": c1 - c0, "share": (c1 - c0) / (t1 - t0)}


async def measure(
    args: argparse.Namespace, address: str, daemon: Daemon, vmx: Path, pool: DirPool
) -> dict[str, Any]:
    client = await Client.connect("session")
    try:
        await wait_answering(client)
        await asyncio.sleep(3)  # idle: imports done, store loaded, nothing running
        idle_rss = daemon.rss()
        idle_cpu = daemon.cpu_seconds()
        await asyncio.sleep(10)
        idle_cpu = (daemon.cpu_seconds() - idle_cpu) / 10
        list_median, managed_median, listed = await list_times(client, args.runs)
        list_cli = await asyncio.to_thread(cli_time, address)
        copy = await copy_cpu(client, daemon, vmx, pool)
    finally:
        await client.close()
    return {
        "jobs_listed": listed,
        "idle_rss_bytes": idle_rss,
        "idle_cpu_share": idle_cpu,
        "list_seconds": list_median,
        "get_managed_objects_seconds": managed_median,
        "list_cli_seconds": list_cli,
        **{f"copy_{k}" if not k.startswith("copy") else k: v for k, v in copy.items()},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default=str(REPO / "build" / "bench"))
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--size-gib", type=float, default=4)
    parser.add_argument("--data-gib", type=float, default=3)
    args = parser.parse_args(argv)
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    vmx = build_source(directory, int(args.size_gib * GiB), int(args.data_gib * GiB))
    warm(sorted(vmx.parent.glob("*.vmdk")))
    guard = ensure_libvirtd()
    scratch = Path(tempfile.mkdtemp(prefix="service-bench-", dir=directory))
    try:
        state, work = scratch / "state", scratch / "work"
        work.mkdir()
        seed_store(state, args.jobs, str(vmx))
        with PrivateBus() as bus, DirPool(parent_dir=directory) as pool:
            os.environ["DBUS_SESSION_BUS_ADDRESS"] = bus.address  # for the bench's own client
            daemon = Daemon(bus.address, state, work, scratch / "vm2kvmd.log")
            try:
                results = asyncio.run(measure(args, bus.address, daemon, vmx, pool))
            finally:
                daemon.stop()
    finally:
        guard.stop()
        subprocess.run(["rm", "-rf", str(scratch)], check=False)
    goals = {
        "idle_rss_bytes": results["idle_rss_bytes"] <= RSS_GOAL,
        "list_seconds": results["list_seconds"] <= LIST_GOAL,
        "copy_share": results["copy_share"] <= CPU_GOAL,
    }
    rows = [
        ("jobs in the store / listed", f"{args.jobs} / {results['jobs_listed']}", ""),
        (
            "idle RSS (goal ≤ 40 MiB)",
            f"{results['idle_rss_bytes'] / MiB:.1f} MiB",
            _ok(goals["idle_rss_bytes"]),
        ),
        ("idle CPU share", f"{results['idle_cpu_share'] * 100:.2f} %", ""),
        (
            "ListJobs (vm2kvmctl jobs), median (goal ≤ 50 ms)",
            f"{results['list_seconds'] * 1000:.1f} ms",
            _ok(goals["list_seconds"]),
        ),
        ("GetManagedObjects, median", f"{results['get_managed_objects_seconds'] * 1000:.1f} ms", ""),
        ("vm2kvmctl --json jobs --all, whole command", f"{results['list_cli_seconds'] * 1000:.0f} ms", ""),
        ("copy phase wall time", f"{results['copy_seconds']:.2f} s", ""),
        ("daemon CPU during the copy", f"{results['copy_cpu_seconds']:.3f} s", ""),
        ("daemon CPU share (goal ≤ 2 %)", f"{results['copy_share'] * 100:.2f} %", _ok(goals["copy_share"])),
    ]
    width = max(len(r[0]) for r in rows)
    for label, value, verdict in rows:
        print(f"{label:<{width}}  {value:>14}  {verdict}")
    (directory / "service-results.json").write_text(json.dumps({"args": vars(args), **results}, indent=2))
    return 0 if all(goals.values()) else 1


def _ok(met: bool) -> str:
    return "ok" if met else "MISSED"


if __name__ == "__main__":
    sys.exit(main())
