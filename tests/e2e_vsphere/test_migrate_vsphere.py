"""Migrations from VMware's vSphere simulator through the whole product: vm2kvmctl → D-Bus →
vm2kvmd → nbdkit (curl) + qemu-img + libvirtd.

The simulator (ESX mode) serves its datastore, a plain directory, under ``/folder``; each test
puts real disk files there (an ESXi ``vmfs`` descriptor over a ``-flat.vmdk``; a ``vmfsSparse``
snapshot delta over it), points a VM's disk at them with ``ReconfigVM_Task`` and migrates the VM
without guest conversion (the disks hold patterns, no OS).  The target must read exactly as
``qemu-img`` reads the same files locally, the datastore must not change, and refusals must come
before any job exists.
"""

from __future__ import annotations

import secrets
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyVim.connect import Disconnect, SmartConnect
from pyVim.task import WaitForTask
from pyVmomi import vim

from testbed.proxy import CuttingProxy
from testbed.services import DirPool
from testbed.vcsim import USER, Vcsim, VcsimInfo
from tests.e2e.support import DaemonProcess, bus_env, ctl
from tests.helpers.vmdk_factory import images_equal, make_delta, make_vmdk, sha256_tree
from tests.test_remote_disk import CmdlineWatch

pytestmark = [pytest.mark.slow, pytest.mark.libvirt]

MiB = 1 << 20
_dev: Any = vim.vm.device
_vim: Any = vim


# The module's simulator logs in with this password only: a leak of it cannot be a coincidence.
SECRET = f"S3cret-{secrets.token_hex(8)}-vsm"


class Sim:
    """The running simulator, a pyvmomi session to change it, and its datastore directory."""

    def __init__(self, info: VcsimInfo, port: int | None = None) -> None:
        self.info = info
        self.port = port or info.port  # where vm2kvm reaches it (a proxy's port)
        context = ssl.create_default_context(cafile=info.ca_file)
        self.si = SmartConnect(host=info.host, port=info.port, user=USER, pwd=SECRET, sslContext=context)
        self.content = self.si.RetrieveContent()
        view = self.content.viewManager.CreateContainerView(self.content.rootFolder, [vim.Datastore], True)
        (datastore,) = view.view
        view.Destroy()
        self.datastore = Path(datastore.info.url)

    @property
    def uri(self) -> str:
        return f"esx://{USER}@{self.info.host}:{self.port}/"

    def vm(self, name: str) -> Any:
        view = self.content.viewManager.CreateContainerView(
            self.content.rootFolder, [vim.VirtualMachine], True
        )
        try:
            return next(vm for vm in view.view if vm.name == name)
        finally:
            view.Destroy()

    def point_disk(self, vm: Any, files: list[str], capacity: int) -> None:
        """The VM's first disk: ``files`` (datastore paths, newest first) as its backing chain."""
        disk = next(d for d in vm.config.hardware.device if isinstance(d, _dev.VirtualDisk))
        flat = _dev.VirtualDisk.FlatVer2BackingInfo
        backing = None
        for name in reversed(files):
            backing = flat(fileName=name, diskMode="persistent", parent=backing)
        disk.backing = backing
        disk.capacityInKB = capacity // 1024
        disk.capacityInBytes = capacity
        change = _dev.VirtualDeviceSpec(operation="edit", device=disk)
        WaitForTask(vm.ReconfigVM_Task(_vim.vm.ConfigSpec(deviceChange=[change])))

    def power(self, vm: Any, on: bool) -> None:
        state = vm.runtime.powerState
        if on and state != "poweredOn":
            WaitForTask(vm.PowerOnVM_Task())
        elif not on and state != "poweredOff":
            WaitForTask(vm.PowerOffVM_Task())

    def close(self) -> None:
        Disconnect(self.si)


@pytest.fixture(scope="module")
def sim() -> Iterator[Sim]:
    with Vcsim("esx", password=SECRET) as info:
        sim = Sim(info)
        try:
            yield sim
        finally:
            sim.close()


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    return path


def place_flat_disk(sim: Sim, vm_name: str, disk: str, size: int, *, random: bool = False) -> Path:
    """An ESXi flat disk ``disk`` in the VM's folder, the powered-off VM's first disk."""
    folder = sim.datastore / vm_name
    folder.mkdir(exist_ok=True)
    pattern = secrets.token_bytes(4096) if random else None
    path = make_vmdk(folder, disk, "vmfs", size, pattern=pattern)
    vm = sim.vm(vm_name)
    sim.power(vm, on=False)
    sim.point_disk(vm, [f"[LocalDS_0] {vm_name}/{disk}.vmdk"], size)
    return path


def migrate(
    daemon: DaemonProcess,
    sim: Sim,
    vm: str,
    pool: str,
    name: str,
    secret: Path,
    *more: str,
    timeout: float = 120,
) -> Any:
    return ctl(
        daemon.address,
        "migrate",
        sim.uri,
        "--vm",
        vm,
        "--password-file",
        str(secret),
        "--ca-file",
        sim.info.ca_file,
        "--pool",
        pool,
        "--name",
        name,
        *more,
        timeout=timeout,
    )


def target_path(conn: Any, name: str) -> Path:
    from lxml import etree

    root = etree.fromstring(conn.lookupByName(name).XMLDesc(0).encode())
    (path,) = root.xpath("/domain/devices/disk[@device='disk']/source/@file")
    return Path(path)


def undefine(conn: Any, name: str) -> None:
    conn.lookupByName(name).undefineFlags(0x4)


def test_flat_disk_migrates_identical_and_sparse(
    sim: Sim,
    daemon: DaemonProcess,
    libvirt_conn: Any,
    dir_pool: DirPool,
    domain_name: str,
    password_file: Path,
) -> None:
    folder = sim.datastore / "ha-host_VM0"
    folder.mkdir(exist_ok=True)
    disk = make_vmdk(folder, "flat", "vmfs", 32 * MiB)
    vm = sim.vm("ha-host_VM0")
    sim.power(vm, on=False)
    sim.point_disk(vm, ["[LocalDS_0] ha-host_VM0/flat.vmdk"], 32 * MiB)
    before = sha256_tree(folder)

    run = migrate(daemon, sim, "ha-host_VM0", dir_pool.name, domain_name, password_file)
    assert run.status == 0, run.err
    try:
        target = target_path(libvirt_conn, domain_name)
        assert images_equal(disk, target, fmt_a="vmdk")
        # Sparse: the pattern's holes stay holes (the disk is mostly zeros).
        assert target.stat().st_blocks * 512 < 16 * MiB
        assert "phase copy" in run.err
        status = ctl(daemon.address, "--json", "jobs")
        assert status.status == 0
    finally:
        undefine(libvirt_conn, domain_name)
    assert sha256_tree(folder) == before


def test_snapshot_chain_migrates_its_current_state(
    sim: Sim,
    daemon: DaemonProcess,
    libvirt_conn: Any,
    dir_pool: DirPool,
    domain_name: str,
    password_file: Path,
) -> None:
    folder = sim.datastore / "ha-host_VM1"
    folder.mkdir(exist_ok=True)
    base = make_vmdk(folder, "base", "vmfs", 16 * MiB)
    delta = make_delta(folder, "base-000001", base, subformat="vmfsSparse")
    # govmomi 0.24's ReconfigVM wants a NAME-flat.vmdk beside every descriptor it is given; a
    # real ESXi keeps a delta's data in NAME-delta.vmdk (what the descriptor names and we read).
    (folder / "base-000001-flat.vmdk").write_bytes(b"")
    vm = sim.vm("ha-host_VM1")
    sim.power(vm, on=False)
    sim.point_disk(
        vm, ["[LocalDS_0] ha-host_VM1/base-000001.vmdk", "[LocalDS_0] ha-host_VM1/base.vmdk"], 16 * MiB
    )
    before = sha256_tree(folder)

    run = migrate(daemon, sim, "ha-host_VM1", dir_pool.name, domain_name, password_file)
    assert run.status == 0, run.err
    try:
        target = target_path(libvirt_conn, domain_name)
        assert images_equal(delta, target, fmt_a="vmdk")
        assert not images_equal(base, target, fmt_a="vmdk")  # the delta's writes are there
    finally:
        undefine(libvirt_conn, domain_name)
    assert sha256_tree(folder) == before


def _job_count(daemon: DaemonProcess) -> int:
    run = ctl(daemon.address, "--json", "jobs")
    assert run.status == 0, run.err
    return len(run.json())


def test_powered_on_vm_is_refused_before_a_job(
    sim: Sim, daemon: DaemonProcess, dir_pool: DirPool, domain_name: str, password_file: Path
) -> None:
    folder = sim.datastore / "ha-host_VM0"
    folder.mkdir(exist_ok=True)
    if not (folder / "on.vmdk").exists():
        make_vmdk(folder, "on", "vmfs", 4 * MiB)
    vm = sim.vm("ha-host_VM0")
    sim.power(vm, on=False)
    sim.point_disk(vm, ["[LocalDS_0] ha-host_VM0/on.vmdk"], 4 * MiB)
    sim.power(vm, on=True)
    jobs = _job_count(daemon)
    try:
        run = migrate(daemon, sim, "ha-host_VM0", dir_pool.name, domain_name, password_file)
    finally:
        sim.power(vm, on=False)
    assert run.status == 1
    assert "SourcePoweredOn" in run.err or "poweredOn" in run.err, run.err
    assert "shut the VM down" in run.err
    assert _job_count(daemon) == jobs


def test_wrong_password_and_unknown_vm_are_named_errors(
    sim: Sim, daemon: DaemonProcess, dir_pool: DirPool, domain_name: str, tmp_path: Path, password_file: Path
) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("Wr0ng-xyzzy\n")
    wrong.chmod(0o600)
    jobs = _job_count(daemon)
    run = migrate(daemon, sim, "ha-host_VM0", dir_pool.name, domain_name, wrong)
    assert run.status == 1
    assert "refused the login" in run.err, run.err
    assert "Wr0ng-xyzzy" not in run.err
    run = migrate(daemon, sim, "ha-host_VM9", dir_pool.name, domain_name, password_file)
    assert run.status == 1
    assert "ha-host_VM0" in run.err, run.err  # a close match
    assert _job_count(daemon) == jobs
    assert not list(dir_pool.path.iterdir())


def test_inspect_and_virt_v2v_spelling(sim: Sim, daemon: DaemonProcess, password_file: Path) -> None:
    folder = sim.datastore / "ha-host_VM0"
    folder.mkdir(exist_ok=True)
    if not (folder / "seen.vmdk").exists():
        make_vmdk(folder, "seen", "vmfs", 8 * MiB)
    vm = sim.vm("ha-host_VM0")
    sim.power(vm, on=False)
    # The API says 1 MiB; the descriptor 8 MiB: inspect shows what the descriptor says.
    sim.point_disk(vm, ["[LocalDS_0] ha-host_VM0/seen.vmdk"], 1 * MiB)
    common = ("--password-file", str(password_file), "--ca-file", sim.info.ca_file)
    run = ctl(daemon.address, "--json", "inspect", "-ic", sim.uri, "ha-host_VM0", *common)
    assert run.status == 0, run.err
    data = run.json()
    (disk,) = data["disks"]
    assert disk["virtual_size"] == 8 * MiB
    assert disk["remote"]["layers"] == ["[LocalDS_0] ha-host_VM0/seen.vmdk"]
    run = ctl(daemon.address, "inspect", sim.uri, *common)
    assert run.status == 2 and "--vm" in run.err


def test_connection_reset_mid_transfer_resumes(
    sim: Sim,
    daemon: DaemonProcess,
    libvirt_conn: Any,
    dir_pool: DirPool,
    domain_name: str,
    password_file: Path,
) -> None:
    disk = place_flat_disk(sim, "ha-host_VM0", "cut", 48 * MiB, random=True)
    with CuttingProxy(sim.info.host, sim.info.port, cut_after=24 * MiB, cuts=1) as proxy:
        through = Sim.__new__(Sim)
        through.info, through.port = sim.info, proxy.port
        run = migrate(daemon, through, "ha-host_VM0", dir_pool.name, domain_name, password_file)
        assert run.status == 0, run.err
        assert proxy.cuts_done == 1
    try:
        assert images_equal(disk, target_path(libvirt_conn, domain_name), fmt_a="vmdk")
    finally:
        undefine(libvirt_conn, domain_name)


def _dbus_properties(address: str, path: str, interface: str) -> str:
    return subprocess.run(
        [
            "dbus-send",
            "--session",
            "--print-reply",
            "--dest=org.vm2kvm.Daemon1",
            path,
            "org.freedesktop.DBus.Properties.GetAll",
            f"string:{interface}",
        ],
        env=bus_env(address),
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_the_password_shows_nowhere(
    sim: Sim,
    daemon: DaemonProcess,
    libvirt_conn: Any,
    dir_pool: DirPool,
    domain_name: str,
    password_file: Path,
) -> None:
    place_flat_disk(sim, "ha-host_VM0", "secret", 32 * MiB, random=True)
    with CmdlineWatch(SECRET) as watch:
        run = migrate(daemon, sim, "ha-host_VM0", dir_pool.name, domain_name, password_file)
    assert run.status == 0, run.err
    try:
        assert watch.saw_nbdkit  # the watch ran while the disk was read
        assert watch.leaks == []
        listed = ctl(daemon.address, "--json", "jobs", "--all")
        number = max(job["number"] for job in listed.json())
        seen = [run.out, run.err, listed.out]
        seen.append(ctl(daemon.address, "logs", str(number)).out)
        seen.append(_dbus_properties(daemon.address, "/org/vm2kvm/Daemon1", "org.vm2kvm.Manager1"))
        seen.append(_dbus_properties(daemon.address, f"/org/vm2kvm/Daemon1/jobs/{number}", "org.vm2kvm.Job1"))
        assert all(SECRET not in text for text in seen)
        assert sim.uri in seen[2]  # the job's Source, without the password
        for path in [daemon.log, *daemon.state_dir.rglob("*")]:
            if path.is_file():
                assert SECRET.encode() not in path.read_bytes(), path
    finally:
        undefine(libvirt_conn, domain_name)


def test_a_cancelled_job_is_retried_with_the_password_asked_again(
    sim: Sim,
    daemon: DaemonProcess,
    libvirt_conn: Any,
    dir_pool: DirPool,
    domain_name: str,
    password_file: Path,
) -> None:
    disk = place_flat_disk(sim, "ha-host_VM0", "again", 64 * MiB, random=True)
    run = migrate(daemon, sim, "ha-host_VM0", dir_pool.name, domain_name, password_file, "--detach", "--json")
    assert run.status == 0, run.err
    number = run.json()["number"]
    assert ctl(daemon.address, "cancel", str(number)).status in (0, 1)
    deadline = time.monotonic() + 60
    while (state := ctl(daemon.address, "--json", "status", str(number)).json()["state"]) not in (
        "cancelled",
        "completed",
        "failed",
    ):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    if state == "completed":
        undefine(libvirt_conn, domain_name)
        for volume in dir_pool.pool.listAllVolumes():
            volume.delete(0)
        pytest.skip("the job completed before it could be cancelled")
    assert state == "cancelled"
    assert [v.name() for v in dir_pool.pool.listAllVolumes()] == []
    # No ~/.netrc, no terminal, no --password-file: the CLI says how to give it.
    run = ctl(daemon.address, "retry", str(number))
    assert run.status == 2 and "--password-file" in run.err, run.err
    run = ctl(
        daemon.address,
        "retry",
        str(number),
        "--password-file",
        str(password_file),
        "--ca-file",
        sim.info.ca_file,
    )
    assert run.status == 0, run.err
    try:
        assert images_equal(disk, target_path(libvirt_conn, domain_name), fmt_a="vmdk")
    finally:
        undefine(libvirt_conn, domain_name)


def test_thumbprint_mismatch_and_no_verify_warning(
    sim: Sim,
    daemon: DaemonProcess,
    libvirt_conn: Any,
    dir_pool: DirPool,
    domain_name: str,
    password_file: Path,
) -> None:
    disk = place_flat_disk(sim, "ha-host_VM0", "trust", 8 * MiB)
    jobs = _job_count(daemon)
    wrong = ":".join(["AB"] * 32)
    run = ctl(
        daemon.address,
        "migrate",
        sim.uri,
        "--vm",
        "ha-host_VM0",
        "--password-file",
        str(password_file),
        "--thumbprint",
        wrong,
        "--pool",
        dir_pool.name,
    )
    assert run.status == 1
    assert sim.info.thumbprint in run.err and "--thumbprint" in run.err, run.err
    assert _job_count(daemon) == jobs
    # The right pin: the disk readers trust exactly that certificate (it names 127.0.0.1).
    secret = ("--password-file", str(password_file))
    pinned = ("--thumbprint", sim.info.thumbprint)
    run = ctl(daemon.address, "migrate", sim.uri, "--vm", "ha-host_VM0", *secret, *pinned,
              "--pool", dir_pool.name, "--name", f"{domain_name}-pinned")  # fmt: skip
    assert run.status == 0, run.err
    try:
        assert images_equal(disk, target_path(libvirt_conn, f"{domain_name}-pinned"), fmt_a="vmdk")
        number = max(job["number"] for job in ctl(daemon.address, "--json", "jobs").json())
        assert "unverified" not in ctl(daemon.address, "logs", str(number)).out
    finally:
        undefine(libvirt_conn, f"{domain_name}-pinned")
    run = ctl(
        daemon.address,
        "migrate",
        sim.uri + "?no_verify=1",
        "--vm",
        "ha-host_VM0",
        "--password-file",
        str(password_file),
        "--pool",
        dir_pool.name,
        "--name",
        domain_name,
    )
    assert run.status == 0, run.err
    try:
        assert images_equal(disk, target_path(libvirt_conn, domain_name), fmt_a="vmdk")
        number = max(job["number"] for job in ctl(daemon.address, "--json", "jobs").json())
        log = ctl(daemon.address, "logs", str(number)).out
        assert "is not verified (no_verify)" in log, log
    finally:
        undefine(libvirt_conn, domain_name)


def test_from_a_vcenter(
    daemon: DaemonProcess, libvirt_conn: Any, dir_pool: DirPool, domain_name: str, password_file: Path
) -> None:
    """``vpx://USER@VCENTER/DC/CLUSTER/HOST``: the datastore URLs name the URI's datacenter."""
    with Vcsim("vpx", password=SECRET) as info:
        sim = Sim(info)
        try:
            host = sim.vm("DC0_C0_RP0_VM0").runtime.host.name
            disk = place_flat_disk(sim, "DC0_C0_RP0_VM0", "vc", 8 * MiB)
        finally:
            sim.close()
        uri = f"vpx://{USER}@{info.host}:{info.port}/DC0/DC0_C0/{host}"
        run = ctl(
            daemon.address,
            "migrate",
            "-ic",
            uri,
            "DC0_C0_RP0_VM0",
            "--password-file",
            str(password_file),
            "--ca-file",
            info.ca_file,
            "-os",
            dir_pool.name,
            "-on",
            domain_name,
        )
        assert run.status == 0, run.err
        try:
            assert images_equal(disk, target_path(libvirt_conn, domain_name), fmt_a="vmdk")
        finally:
            undefine(libvirt_conn, domain_name)


def test_shutdown_source_needs_tools_or_force(
    sim: Sim,
    daemon: DaemonProcess,
    libvirt_conn: Any,
    dir_pool: DirPool,
    domain_name: str,
    password_file: Path,
) -> None:
    disk = place_flat_disk(sim, "ha-host_VM1", "power", 8 * MiB)
    vm = sim.vm("ha-host_VM1")
    sim.power(vm, on=True)  # the simulator's VMs run without VMware Tools
    try:
        run = migrate(
            daemon, sim, "ha-host_VM1", dir_pool.name, domain_name, password_file, "--shutdown-source"
        )
        assert run.status == 1
        assert "--force" in run.err and "ha-host_VM1" in run.err, run.err
        assert vm.runtime.powerState == "poweredOn"  # left as it was
        assert [v.name() for v in dir_pool.pool.listAllVolumes()] == []
        run = migrate(
            daemon,
            sim,
            "ha-host_VM1",
            dir_pool.name,
            domain_name,
            password_file,
            "--shutdown-source",
            "--force",
        )
        assert run.status == 0, run.err
    finally:
        sim.power(vm, on=False)
    try:
        assert images_equal(disk, target_path(libvirt_conn, domain_name), fmt_a="vmdk")
        number = max(job["number"] for job in ctl(daemon.address, "--json", "jobs").json())
        assert "power" in ctl(daemon.address, "logs", str(number)).out.lower()
    finally:
        undefine(libvirt_conn, domain_name)


def test_host_killed_mid_transfer_fails_clean_and_retry_works(
    daemon: DaemonProcess, libvirt_conn: Any, dir_pool: DirPool, domain_name: str, password_file: Path
) -> None:
    size = 64 * MiB
    first = Vcsim("esx", password=SECRET)
    info = first.start()
    try:
        sim = Sim(info)
        place_flat_disk(sim, "ha-host_VM0", "gone", size, random=True)
        sim.close()
        with CuttingProxy(info.host, info.port, cut_after=24 * MiB, cuts=1) as proxy:
            sim.port = proxy.port
            stop = threading.Event()

            def kill_at_the_cut() -> None:
                # The cut resets every connection mid-copy; the host dies before nbdkit retries.
                while not stop.is_set() and proxy.cuts_done == 0:
                    time.sleep(0.01)
                first.kill()

            killer = threading.Thread(target=kill_at_the_cut)
            killer.start()
            try:
                run = migrate(
                    daemon, sim, "ha-host_VM0", dir_pool.name, domain_name, password_file, timeout=240
                )
            finally:
                stop.set()
                killer.join()
            assert run.status == 1, run.err
            assert "gone-flat.vmdk" in run.err and f"127.0.0.1:{proxy.port}" in run.err, run.err
            assert "Traceback" not in run.err
            assert [v.name() for v in dir_pool.pool.listAllVolumes()] == []
            assert domain_name not in [d.name() for d in libvirt_conn.listAllDomains()]
            job = max(ctl(daemon.address, "--json", "jobs", "--all").json(), key=lambda j: j["number"])
            assert job["state"] == "failed"

            with Vcsim("esx", password=SECRET) as again:
                fresh = Sim(again)
                try:
                    disk = place_flat_disk(fresh, "ha-host_VM0", "gone", size)
                finally:
                    fresh.close()
                proxy.upstream = (again.host, again.port)
                proxy.cut_after = None
                run = ctl(
                    daemon.address,
                    "retry",
                    str(job["number"]),
                    "--password-file",
                    str(password_file),
                    "--ca-file",
                    again.ca_file,
                    timeout=240,
                )
                assert run.status == 0, run.err
                try:
                    assert images_equal(disk, target_path(libvirt_conn, domain_name), fmt_a="vmdk")
                finally:
                    undefine(libvirt_conn, domain_name)
    finally:
        first.stop()
