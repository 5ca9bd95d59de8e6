"""Helpers of the service-lifecycle and cancel tests: a vm2kvmd that can be killed and restarted.

``ServiceDaemon`` is ``vm2kvmd --bus session`` with its own state directory
(the job store), work directory and configuration file, and extra
environment (``VM2KVMD_TEST_HOLD``).  ``kill()`` is SIGKILL (the power-loss
case), ``terminate()`` SIGTERM; ``start()`` again runs a new process on the
same directories.

Job properties are read straight over D-Bus (``job_props``): polling for a
phase with a ``vm2kvmctl`` process per poll would cost a Python start each
time on a machine with two shared cores.

``Residue`` checks look everywhere a migration leaves things: the pool
(volumes and files), the daemon's work directory, libvirt's domains and the
job store's residue records.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid as uuid_module
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.signature import Variant

from testbed.processes import forget_service, register_service, tail
from testbed.services import DirPool
from tests.e2e.support import REPO, VmxDisk, VmxNic, bus_env, ctl, vmware_uuid, write_vmx
from tests.helpers.vmdk_factory import make_vmdk, sha256_tree
from vm2kvmd.constants import BUS_NAME, JOB_IFACE, MANAGER_IFACE, MANAGER_PATH, job_path

MiB = 1 << 20
HOLD_ENV = "VM2KVMD_TEST_HOLD"
INTERRUPTED = "org.vm2kvm.Error.Interrupted"
CANCELLED = "org.vm2kvm.Error.Cancelled"
FINISHED = ("completed", "failed", "cancelled")

T = TypeVar("T")


# --- polling --------------------------------------------------------------------------------------


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """The first truthy value of ``probe()``; fails the test naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# --- D-Bus, directly ------------------------------------------------------------------------------


def _unwrap(value: Any) -> Any:
    if isinstance(value, Variant):
        return _unwrap(value.value)
    if isinstance(value, dict):
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


async def dbus_call(
    address: str,
    path: str,
    interface: str,
    member: str,
    signature: str,
    body: list[Any],
    *,
    unix_fds: list[int] | None = None,
) -> Any:
    bus = await MessageBus(bus_address=address, negotiate_unix_fd=bool(unix_fds)).connect()
    try:
        reply = await bus.call(
            Message(
                destination=BUS_NAME,
                path=path,
                interface=interface,
                member=member,
                signature=signature,
                body=body,
                unix_fds=unix_fds or [],
            )
        )
    finally:
        bus.disconnect()
    assert reply is not None
    if reply.message_type is MessageType.ERROR:
        raise DBusCallError(str(reply.error_name), str(reply.body[0]) if reply.body else "")
    return _unwrap(reply.body)


class DBusCallError(Exception):
    def __init__(self, name: str, text: str) -> None:
        super().__init__(f"{name}: {text}")
        self.name = name
        self.text = text


def job_props(address: str, number: int) -> dict[str, Any]:
    """Every ``org.vm2kvm.Job1`` property of job ``number``, as plain Python values."""
    body = asyncio.run(
        dbus_call(address, job_path(number), "org.freedesktop.DBus.Properties", "GetAll", "s", [JOB_IFACE])
    )
    props: dict[str, Any] = body[0]
    return props


def cancel_now(address: str, number: int) -> None:
    """``Job1.Cancel`` straight over D-Bus: milliseconds, where ``vm2kvmctl cancel`` needs a Python start."""
    asyncio.run(dbus_call(address, job_path(number), JOB_IFACE, "Cancel", "", []))


def get_log(address: str, number: int) -> list[tuple[int, str, str]]:
    """``Job1.GetLog``: (time µs, phase, message) lines from the job store."""
    body = asyncio.run(dbus_call(address, job_path(number), JOB_IFACE, "GetLog", "", []))
    return [(int(t), str(phase), str(message)) for t, phase, message in body[0]]


def manager_jobs(address: str) -> list[str]:
    paths: list[str] = asyncio.run(dbus_call(address, MANAGER_PATH, MANAGER_IFACE, "GetJobs", "", []))[0]
    return paths


def answers(address: str) -> bool:
    try:
        manager_jobs(address)
    except (DBusCallError, OSError, EOFError):
        return False
    return True


def wait_phase(address: str, number: int, phase: str, timeout: float = 60) -> dict[str, Any]:
    """Job ``number``'s properties once it is running in ``phase``; fails if it finishes first."""

    def probe() -> dict[str, Any] | None:
        props = job_props(address, number)
        if props["State"] in FINISHED:
            raise AssertionError(f"job {number} finished ({props['State']}, {props['Error']}) before {phase}")
        return props if props["State"] == "running" and props["Phase"] == phase else None

    return wait_for(probe, timeout, f"job {number} to reach phase {phase}", interval=0.05)


def wait_finished(address: str, number: int, timeout: float = 120) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        props = job_props(address, number)
        return props if props["State"] in FINISHED else None

    return wait_for(probe, timeout, f"job {number} to finish", interval=0.1)


# --- processes --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    pid: int
    start: str  # /proc/PID/stat field 22: tells a reused PID from the process we saw
    cmdline: str

    def running(self) -> bool:
        """Still there and not a zombie (a zombie has stopped; only its parent has not reaped it)."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return False
        fields = stat.rsplit(")", 1)[1].split()
        return fields[19] == self.start and fields[0] != "Z"


def _stat(pid: int) -> tuple[int, str, str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[1]), fields[19], cmd.strip()


def descendants(root: int) -> list[Proc]:
    """Every process below ``root`` (children, their children, ...)."""
    parents: dict[int, list[tuple[int, str, str]]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            info = _stat(int(entry.name))
            if info is not None:
                parents.setdefault(info[0], []).append((int(entry.name), info[1], info[2]))
    found: list[Proc] = []
    todo = [root]
    while todo:
        for pid, start, cmd in parents.get(todo.pop(), []):
            found.append(Proc(pid, start, cmd))
            todo.append(pid)
    return found


def still_running(procs: Iterable[Proc], timeout: float = 5.0) -> list[Proc]:
    """Those of ``procs`` still running after up to ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in procs if p.running()]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


# --- the daemon -------------------------------------------------------------------------------------


class ServiceDaemon:
    """``vm2kvmd --bus session --state-dir S --work-dir W --config C``, restartable on the same dirs."""

    def __init__(
        self, address: str, directory: Path, *, config: str = "", env: Mapping[str, str] | None = None
    ) -> None:
        self.address = address
        self.directory = directory
        self.state_dir = directory / "state"
        self.work_dir = directory / "work"
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.config = directory / "vm2kvmd.conf"
        self.config.write_text(config)
        self.log = directory / "vm2kvmd.log"
        self.env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, env: Mapping[str, str] | None = None, timeout: float = 60) -> ServiceDaemon:
        """A new vm2kvmd on the same directories; ``env`` replaces the extra environment."""
        assert not self.alive, "vm2kvmd is already running"
        if env is not None:
            self.env = dict(env)
        environ = bus_env(self.address)
        environ.pop(HOLD_ENV, None)
        environ.update(self.env)
        argv = [sys.executable, "-m", "vm2kvmd.daemon", "--bus", "session", "--config", str(self.config)]
        argv += ["--state-dir", str(self.state_dir), "--work-dir", str(self.work_dir), "--log-level", "debug"]
        with self.log.open("ab") as log:
            log.write(f"--- start, extra env {self.env}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                argv, cwd=REPO, env=environ, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log
            )
        register_service(self.proc.pid)
        deadline = time.monotonic() + timeout
        while not answers(self.address):
            if self.proc.poll() is not None:
                forget_service(self.proc.pid)
                raise RuntimeError(f"vm2kvmd exited at start ({self.proc.returncode}):\n{tail(self.log, 30)}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"vm2kvmd did not answer within {timeout:.0f} s:\n{tail(self.log, 30)}")
            time.sleep(0.1)
        return self

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as after a power loss."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        forget_service(self.proc.pid)

    def terminate(self, timeout: float = 90) -> tuple[int | None, float]:
        """SIGTERM; (exit status, seconds it took).  Killed (status None) if it outlives ``timeout``."""
        assert self.proc is not None
        begin = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            status: int | None = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            status = None
            self.kill()
        forget_service(self.proc.pid)
        return status, time.monotonic() - begin

    def close(self) -> None:
        """Stop it if it runs (fixture teardown); a test that cares checks ``terminate()`` itself."""
        if self.alive:
            self.terminate(timeout=90)

    def logs(self, lines: int = 40) -> str:
        return tail(self.log, lines)

    def ctl(self, *args: str, timeout: float = 120, convert: bool = False) -> Any:
        return ctl(self.address, *args, timeout=timeout, convert=convert)


# What the ``daemons`` fixture (tests/e2e/conftest.py) gives: daemons(config=..., env=...).
MakeDaemon = Callable[..., ServiceDaemon]


# --- VMs and residue ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceVm:
    directory: Path
    vmx: Path
    bios_uuid: str  # as libvirt spells it
    macs: tuple[str, ...]
    disks: tuple[Path, ...]
    checksums: dict[str, str]

    def unchanged(self) -> bool:
        return sha256_tree(self.directory) == self.checksums


def make_vm(directory: Path, name: str, sizes: Iterable[int] = (32 * MiB, 16 * MiB)) -> SourceVm:
    """A Workstation VM with blank sparse disks (one per size) and two NICs; its checksums taken."""
    directory.mkdir(parents=True)
    disks = [make_vmdk(directory, f"disk{i}", "monolithicSparse", size) for i, size in enumerate(sizes)]
    bios = uuid_module.uuid4()
    nics = (VmxNic(0, "00:0c:29:5e:00:01"), VmxNic(1, "00:50:56:3a:00:02", "vmxnet3", "bridged"))
    vmx = write_vmx(
        directory,
        name,
        [VmxDisk(f"scsi0:{i}", d.name) for i, d in enumerate(disks)],
        nics,
        uuid=vmware_uuid(bios),
    )
    return SourceVm(
        directory, vmx, str(bios), tuple(n.mac for n in nics), tuple(disks), sha256_tree(directory)
    )


def phony_vm(image: Path, directory: Path) -> tuple[Path, dict[str, str]]:
    """A VM whose one disk is a phony guest (``testbed/guests/phony.py``): (its .vmx, its checksums)."""
    directory.mkdir(parents=True)
    disk = directory / f"{image.name.split('-')[0]}.vmdk"
    vmdk = ["-O", "vmdk", "-o", "subformat=monolithicSparse"]
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", *vmdk, str(image), str(disk)], check=True)
    nics = [VmxNic(0, "00:0c:29:c0:00:01")]
    vmx = write_vmx(directory, "Phony Guest", [VmxDisk("scsi0:0", disk.name)], nics)
    return vmx, sha256_tree(directory)


def appliance(procs: Iterable[Proc]) -> list[Proc]:
    """The libguestfs appliances (QEMU) among ``procs``."""
    return [p for p in procs if "qemu-system" in p.cmdline or "qemu-kvm" in p.cmdline]


def store_residues(state_dir: Path, number: int) -> list[Any]:
    """The residue records of job ``number`` in the job store (read while the daemon may run)."""
    from vm2kvmd.service.store import JobStore

    store = JobStore.open(str(state_dir))
    try:
        return [residue for _rid, residue in store.residues(number)]
    finally:
        store.close()


def work_files(work_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(work_dir)) for p in work_dir.rglob("*"))


def domain_names(conn: Any) -> list[str]:
    return sorted(str(d.name()) for d in conn.listAllDomains(0))


def volumes(conn: Any, pool: DirPool) -> list[str]:
    """The pool's volumes, refreshed, looked up through ``conn`` (a ``LiveConnection`` survives a
    libvirtd restart; ``DirPool``'s own pool object would not)."""
    handle = conn.storagePoolLookupByName(pool.name)
    handle.refresh(0)
    return sorted(str(n) for n in handle.listVolumes())


def residue(
    conn: Any, pool: DirPool, daemon: ServiceDaemon, domain: str, numbers: Iterable[int]
) -> dict[str, Any]:
    """Everything a migration left: empty lists everywhere when there is none."""
    return {
        "volumes": volumes(conn, pool),
        "pool files": sorted(p.name for p in pool.path.iterdir()),
        "work dir": work_files(daemon.work_dir),
        "domains": [d for d in domain_names(conn) if d == domain],
        "store residues": {n: store_residues(daemon.state_dir, n) for n in numbers},
    }


def no_residue(numbers: Iterable[int]) -> dict[str, Any]:
    return {
        "volumes": [],
        "pool files": [],
        "work dir": [],
        "domains": [],
        "store residues": {n: [] for n in numbers},
    }


def start_job(daemon: ServiceDaemon, *args: str, convert: bool = False) -> int:
    """``vm2kvmctl migrate ARGS --detach --json``: the new job's number."""
    run = daemon.ctl("migrate", *args, "--detach", "--json", convert=convert)
    assert run.status == 0, f"{run.err}\n{daemon.logs()}"
    number: int = run.json()["number"]
    return number


def converting_job(daemon: ServiceDaemon, vmx: Path, pool: str, name: str) -> tuple[int, list[Proc]]:
    """A migration with guest conversion, once its libguestfs appliance runs (~20 s under
    TCG): the job's number and the daemon's processes at that moment."""
    number = start_job(daemon, str(vmx), "--pool", pool, "--name", name, convert=True)
    wait_phase(daemon.address, number, "convert", timeout=120)

    def appliance_up() -> list[Proc] | None:
        procs = descendants(daemon.pid)
        return procs if appliance(procs) else None

    return number, wait_for(appliance_up, 120, "the libguestfs appliance to start", interval=0.2)
