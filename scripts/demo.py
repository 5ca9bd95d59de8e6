#!/usr/bin/env python3
"""``./demo.sh``: migrate the embedded sample VMware VM into libvirt through vm2kvmd.

Builds (once, cached in ``build/guests/``) the sample VM: a real Debian 12
VMware Workstation guest made with debootstrap, configured as VMware-era
guests are (root ``/dev/sda1`` hard-coded, no virtio in its initramfs,
open-vm-tools, its NIC configured as ``ens33``).  Starts a private D-Bus
daemon (and virtlogd + libvirtd when none answers), makes sure of a dir pool
``vm2kvm-demo`` in ``build/demo-pool/`` and starts ``vm2kvmd`` on the private
bus, then drives it with ``vm2kvmctl`` exactly as a user would: inspect,
migrate (with guest conversion), report.  ``--boot`` also starts the migrated
domain and shows what its console reports.  The migrated domain and the pool
holding its disks stay defined; the processes the demo started are stopped
again.  ``--remove`` undefines the domain, deletes its volumes and the pool.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree
from xml.sax.saxutils import escape

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import libvirt  # noqa: E402  (Debian's python3-libvirt via --system-site-packages)
from dbus_fast import Message, MessageType  # noqa: E402
from dbus_fast.aio import MessageBus  # noqa: E402

from testbed.services import PrivateBus, ensure_libvirtd  # noqa: E402
from vm2kvmd.constants import BUS_NAME, METADATA_NS  # noqa: E402

URI = "qemu:///system"
POOL = "vm2kvm-demo"
POOL_DIR = REPO / "build" / "demo-pool"
DOMAIN = "debian12-demo"
DAEMON_LOG = REPO / "build" / "demo-vm2kvmd.log"
# The demo daemon's job store: fresh at every run, so the demo's migration is job 1 (the
# installed service keeps its store in /var/lib/vm2kvm).
DEMO_STATE = REPO / "build" / "demo-state"
BIN = Path(sys.executable).parent  # the venv's bin: vm2kvmd and vm2kvmctl live next to python
NAME_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class DemoError(Exception):
    """A demo step failed; the message says which and why."""


def step(title: str) -> None:
    print(f"\n==> {title}", flush=True)


def run_shown(args: list[str], env: dict[str, str] | None = None) -> None:
    """Run a command the way the user would type it, output straight to the terminal."""
    print("$ " + shlex.join(args), flush=True)
    result = subprocess.run(args, env=env, check=False)
    if result.returncode != 0:
        raise DemoError(f"{shlex.join([Path(args[0]).name, *args[1:]])} exited with {result.returncode}")


def build_sample_vm() -> Path:
    # The test suite's boot-test guest: one builder, one cache for both.
    result = subprocess.run(
        [sys.executable, "-m", "testbed.guests.debian12", "--out", str(REPO / "build" / "guests")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise DemoError("building the sample VM failed (debootstrap needs the Debian mirror)")
    return Path(result.stdout.strip().splitlines()[-1])


def appliance_env() -> dict[str, str]:
    """libguestfs settings for the daemon: KVM where it works, else TCG (what CI machines have)."""
    env = {"LIBGUESTFS_BACKEND": os.environ.get("LIBGUESTFS_BACKEND", "direct")}
    if "LIBGUESTFS_BACKEND_SETTINGS" not in os.environ:
        # Nested KVM on the project's machines fails for full CPU models; TCG always works.
        # On a real KVM host run:  LIBGUESTFS_BACKEND_SETTINGS= ./demo.sh
        env["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg"
        print("libguestfs appliance: TCG (software emulation; set LIBGUESTFS_BACKEND_SETTINGS= to use KVM)")
    return env


def remove_demo_domain(conn: libvirt.virConnect) -> None:
    """Undefine the domain a previous demo left behind, and only that one."""
    try:
        dom = conn.lookupByName(DOMAIN)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return
        raise
    if METADATA_NS not in dom.XMLDesc(0):
        raise DemoError(
            f"a domain named {DOMAIN} exists but was not made by vm2kvm; "
            f"remove it yourself (virsh -c {URI} undefine {DOMAIN})"
        )
    print(f"undefining the demo domain {DOMAIN}", flush=True)
    if dom.isActive():
        dom.destroy()
    dom.undefineFlags(
        libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
        | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
    )


def lookup_pool(conn: libvirt.virConnect) -> libvirt.virStoragePool | None:
    try:
        return conn.storagePoolLookupByName(POOL)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
            return None
        raise


def ensure_demo_pool(conn: libvirt.virConnect) -> libvirt.virStoragePool:
    """The persistent pool ``vm2kvm-demo`` on ``build/demo-pool/``, running.

    Not the test harness's ``DirPool``: that one lives in a temp directory and
    deletes its volumes on exit, while the demo leaves its domain's disks in place.
    """
    POOL_DIR.mkdir(parents=True, exist_ok=True)
    pool = lookup_pool(conn)
    if pool is None:
        print(f"defining the storage pool {POOL} on {POOL_DIR.relative_to(REPO)}/", flush=True)
        pool = conn.storagePoolDefineXML(
            f"<pool type='dir'><name>{POOL}</name>"
            f"<target><path>{escape(str(POOL_DIR))}</path></target></pool>",
            0,
        )
        pool.setAutostart(1)
    else:
        path = ElementTree.fromstring(pool.XMLDesc(0)).findtext("target/path")
        if path is None or Path(path).resolve() != POOL_DIR:
            raise DemoError(
                f"the storage pool {POOL} exists on {path}, not on {POOL_DIR} "
                f"(a demo of another checkout?); remove it there with ./demo.sh --remove, or with "
                f"virsh -c {URI} pool-destroy {POOL}; virsh -c {URI} pool-undefine {POOL}"
            )
    if not pool.isActive():
        pool.create(0)
    pool.refresh(0)
    return pool


def delete_pool_volumes(pool: libvirt.virStoragePool) -> None:
    # The pool directory belongs to the demo alone, so everything in it is a leftover.
    for vol in pool.listAllVolumes(0):
        print(f"deleting the volume {vol.name()}", flush=True)
        vol.delete(0)


@contextlib.contextmanager
def libvirt_connection() -> Iterator[libvirt.virConnect]:
    # libvirt's default handler prints every error, expected "no such domain" included.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    conn = libvirt.open(URI)
    try:
        yield conn
    finally:
        conn.close()


async def wait_for_name(address: str, daemon: subprocess.Popen[bytes]) -> None:
    bus = await MessageBus(bus_address=address).connect()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + NAME_TIMEOUT
        while True:
            reply = await bus.call(
                Message(
                    destination="org.freedesktop.DBus",
                    path="/org/freedesktop/DBus",
                    interface="org.freedesktop.DBus",
                    member="NameHasOwner",
                    signature="s",
                    body=[BUS_NAME],
                )
            )
            if reply is not None and reply.message_type == MessageType.METHOD_RETURN and reply.body[0]:
                return
            if daemon.poll() is not None:
                raise DemoError(f"vm2kvmd exited with {daemon.returncode} before taking {BUS_NAME}")
            if loop.time() > deadline:
                raise DemoError(f"vm2kvmd did not take {BUS_NAME} within {NAME_TIMEOUT:.0f} s")
            await asyncio.sleep(0.1)
    finally:
        bus.disconnect()


@contextlib.contextmanager
def running_daemon(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    shutil.rmtree(DEMO_STATE, ignore_errors=True)
    args = [str(BIN / "vm2kvmd"), "--bus", "session", "--state-dir", str(DEMO_STATE)]
    print(f"$ {shlex.join(args)}  (log: {DAEMON_LOG.relative_to(REPO)})", flush=True)
    DAEMON_LOG.parent.mkdir(parents=True, exist_ok=True)
    with DAEMON_LOG.open("wb") as log:
        # Its own session: a Ctrl-C reaches the demo, which then stops the daemon in order.
        daemon = subprocess.Popen(
            args, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    ok = False
    try:
        asyncio.run(wait_for_name(env["DBUS_SESSION_BUS_ADDRESS"], daemon))
        yield daemon
        ok = True
    finally:
        stop(daemon)
        if not ok or daemon.returncode not in (0, -signal.SIGTERM):
            show_log_tail()


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def show_log_tail(lines: int = 30) -> None:
    with contextlib.suppress(OSError):
        tail = DAEMON_LOG.read_text(errors="replace").splitlines()[-lines:]
        if tail:
            print(f"--- last lines of {DAEMON_LOG.relative_to(REPO)} ---", file=sys.stderr)
            print("\n".join(tail), file=sys.stderr, flush=True)


def migrate_args(boot: bool) -> list[str]:
    args = ["--pool", POOL, "--name", DOMAIN]
    if boot or not os.access("/dev/kvm", os.R_OK | os.W_OK):
        # libvirt refuses to define a type='kvm' domain on a host without KVM, and the demo's
        # boot runs under TCG (nested KVM is broken on the project's machines).
        args += ["--domain-type", "qemu"]
    return args


def boot_and_show(conn: libvirt.virConnect) -> None:
    from testbed.guests.boot import boot_and_probe  # the boot tests' harness

    work = REPO / "build" / "demo-boot"
    shutil.rmtree(work, ignore_errors=True)
    result = boot_and_probe(conn, DOMAIN, work)
    for line in result.console.splitlines():
        if line.startswith("VM2KVM-PROBE "):
            print(line)
    print(f"(booted to the probe's report in {result.seconds:.0f} s; whole console in {work}/console.log)")


def demo(boot: bool) -> None:
    step("Building the sample VMware Workstation VM")
    vmx = build_sample_vm()
    print(vmx)

    with contextlib.ExitStack() as stack:
        step("Starting a private D-Bus daemon, and libvirtd if none answers")
        bus = stack.enter_context(PrivateBus())
        print(f"private bus: {bus.address}")
        libvirtd = stack.enter_context(ensure_libvirtd(URI))
        started_libvirtd = bool(libvirtd.pids)
        if started_libvirtd:
            print(f"started virtlogd/libvirtd (PIDs {', '.join(map(str, libvirtd.pids))})")
        else:
            print(f"using the libvirtd that answers on {URI}")

        step(f"Preparing the storage pool {POOL}")
        with libvirt_connection() as conn:
            remove_demo_domain(conn)
            delete_pool_volumes(ensure_demo_pool(conn))

        step("Starting vm2kvmd on the private bus")
        env = {**os.environ, **appliance_env(), "DBUS_SESSION_BUS_ADDRESS": bus.address}
        stack.enter_context(running_daemon(env))

        ctl = [str(BIN / "vm2kvmctl"), "--bus", "session"]
        step("What vm2kvm finds in the VMX, and what it would make of it")
        # Same target options as the migration, so the preview shows the real volume paths.
        run_shown([*ctl, "inspect", str(vmx), *migrate_args(boot)], env)

        step("Migrating it into the pool vm2kvm-demo, converting the guest (a few minutes under TCG)")
        run_shown([*ctl, "migrate", str(vmx), *migrate_args(boot)], env)

        step("What changed: source and target side by side, and every edit made in the guest")
        run_shown([*ctl, "report", "1"], env)

        step("The job, as the service keeps it (jobs survive a daemon restart; logs are per job)")
        run_shown([*ctl, "jobs"], env)

        step(f"The libvirt domain {DOMAIN}")
        run_shown(["virsh", "-c", URI, "dumpxml", DOMAIN])

        step(f"The volumes in the pool {POOL}")
        run_shown(["virsh", "-c", URI, "vol-list", POOL, "--details"])

        if boot:
            step(f"Booting {DOMAIN} (TCG, serial console to a file) and reading its probe")
            with libvirt_connection() as conn:
                boot_and_show(conn)

        step("Stopping vm2kvmd, the private bus and whatever libvirt services the demo started")

    print(
        f"\nDone. The domain {DOMAIN} stays defined in {URI}; its disks are in the pool {POOL} "
        f"({POOL_DIR.relative_to(REPO)}/).\n"
        f"Remove domain, disks and pool with:  ./demo.sh --remove"
    )
    if started_libvirtd:
        print(
            "libvirtd was started for the demo and is stopped again; to look at the domain with "
            "virsh, start it first:  mkdir -p /run/libvirt /var/log/libvirt && virtlogd -d && libvirtd -d"
        )


def remove() -> None:
    with ensure_libvirtd(URI), libvirt_connection() as conn:
        remove_demo_domain(conn)
        pool = lookup_pool(conn)
        if pool is not None:
            # An inactive pool's volumes are plain files in POOL_DIR, removed below.
            if pool.isActive():
                pool.refresh(0)
                delete_pool_volumes(pool)
                pool.destroy()
            pool.undefine()
            print(f"removed the storage pool {POOL}")
    shutil.rmtree(POOL_DIR, ignore_errors=True)
    print(f"removed {POOL_DIR.relative_to(REPO)}/")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--remove", action="store_true", help="undefine the demo domain and delete its volumes"
    )
    parser.add_argument(
        "--boot", action="store_true", help="also boot the migrated domain and show its console probe"
    )
    args = parser.parse_args()
    try:
        remove() if args.remove else demo(args.boot)
    except DemoError as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        return 1
    except libvirt.libvirtError as exc:
        print(f"\ndemo failed: libvirt: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
