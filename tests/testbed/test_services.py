"""The test harness itself: private buses, libvirtd start, dir pools, leak checks."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import libvirt
import pytest
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from testbed.services import (
    DefinedNetwork,
    DirPool,
    LibvirtdGuard,
    PrivateBus,
    child_pids,
    libvirt_answers,
    pid_alive,
    service_pids,
)

REPO = Path(__file__).resolve().parents[2]

pytest_plugins = ["pytester"]


async def _request_name(address: str, name: str) -> Message:
    bus = await MessageBus(bus_address=address).connect()
    try:
        return await bus.call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="RequestName",
                signature="su",
                body=[name, 0],
            )
        )
    finally:
        bus.disconnect()
        await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]


# --- D-Bus ------------------------------------------------------------------


async def test_private_bus_session_allows_everything(private_bus: str) -> None:
    assert private_bus.startswith("unix:path=")
    reply = await _request_name(private_bus, "org.vm2kvm.HarnessTest")
    assert reply.message_type is MessageType.METHOD_RETURN
    assert reply.body == [1]  # DBUS_REQUEST_NAME_REPLY_PRIMARY_OWNER


async def test_private_bus_stops_by_pid() -> None:
    bus = PrivateBus().start()
    pid, tmpdir = bus.pid, bus.tmpdir
    assert pid in service_pids()
    assert pid_alive(pid)
    bus.stop()
    assert not pid_alive(pid)
    assert pid not in service_pids()
    assert tmpdir is not None and not tmpdir.exists()


POLICY = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy user="root">
    <allow own="org.vm2kvm.HarnessAllowed"/>
  </policy>
</busconfig>
"""


@pytest.mark.parametrize("how", ["file", "dir"])
async def test_system_bus_applies_included_policy(tmp_path: Path, how: str) -> None:
    policy_dir = tmp_path / "system.d"
    policy_dir.mkdir()
    (policy_dir / "org.vm2kvm.HarnessAllowed.conf").write_text(POLICY)
    if how == "file":
        bus = PrivateBus(kind="system", include_files=[policy_dir / "org.vm2kvm.HarnessAllowed.conf"])
    else:
        bus = PrivateBus(kind="system", include_dirs=[policy_dir])
    with bus:
        allowed = await _request_name(bus.address, "org.vm2kvm.HarnessAllowed")
        denied = await _request_name(bus.address, "org.vm2kvm.HarnessOther")
    assert allowed.message_type is MessageType.METHOD_RETURN
    assert denied.message_type is MessageType.ERROR
    assert denied.error_name == "org.freedesktop.DBus.Error.AccessDenied"


# --- libvirtd ---------------------------------------------------------------


def test_libvirtd_answers_and_starts_quickly(libvirtd: LibvirtdGuard, libvirt_conn: Any) -> None:
    libvirt_conn.current()  # revives it if someone stopped the one we found
    assert libvirt_answers(libvirtd.uri)
    if libvirtd.started:
        # Measured 1–3 s on the project's machines (qemu capabilities cached).
        assert libvirtd.startup_seconds < 15, libvirtd.startup_seconds
        assert set(libvirtd.pids) <= service_pids()


# Run in a private mount namespace so a libvirtd of our own can be started
# next to the machine's (if any) without touching its state: /run, and
# libvirt's state, cache and persistent-config directories are fresh tmpfs.
_STALE_START = textwrap.dedent(
    """
    import os, socket, subprocess, sys, time
    for d in ("/run", "/var/lib/libvirt", "/var/cache/libvirt", "/etc/libvirt/qemu",
              "/etc/libvirt/storage", "/etc/libvirt/secrets", "/var/log/libvirt"):
        os.makedirs(d, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", d], check=True)
    os.makedirs("/run/libvirt")
    # What a killed run leaves: pid files naming a dead process, sockets nobody listens on.
    for pidfile in ("/run/libvirtd.pid", "/run/virtlogd.pid"):
        with open(pidfile, "w") as f:
            f.write("999999\\n")
    for path in ("/run/libvirt/libvirt-sock", "/run/libvirt/libvirt-sock-ro",
                 "/run/libvirt/virtlogd-sock"):
        s = socket.socket(socket.AF_UNIX)
        s.bind(path)
        s.close()
    sys.path.insert(0, sys.argv[1])
    from testbed.services import ensure_libvirtd, libvirt_answers
    guard = ensure_libvirtd()
    pids = guard.pids
    assert len(pids) == 2, pids
    assert libvirt_answers()
    print("startup", round(guard.startup_seconds, 2))
    guard.stop()
    assert not any(os.path.exists(f"/proc/{p}") for p in pids), pids
    assert not libvirt_answers()

    # A LiveConnection survives its libvirtd being stopped by someone else.
    from testbed.services import LiveConnection
    conn = LiveConnection()
    assert conn.getLibVersion() > 0 and len(conn.guards) == 1  # none answered: started one
    first = conn.guards[0].pids
    conn.guards[0].stop()  # "someone else"
    assert conn.listAllDomains(0) == [] and conn.reconnects == 1
    second = conn.guards[-1].pids
    assert set(first).isdisjoint(second)
    conn.stop()
    assert not any(os.path.exists(f"/proc/{p}") for p in first + second)
    assert not libvirt_answers()
    print("ok")
    """
)


@pytest.mark.slow
def test_libvirtd_start_with_stale_files_and_restart_after_loss(tmp_path: Path) -> None:
    if not shutil.which("unshare") or subprocess.run(["unshare", "-m", "true"]).returncode != 0:
        pytest.skip("needs mount namespaces (unshare -m)")
    script = tmp_path / "stale_start.py"
    script.write_text(_STALE_START)
    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", sys.executable, str(script), str(REPO)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1] == "ok"
    startup = float(proc.stdout.split("startup", 1)[1].split()[0])
    # Cold start (no capabilities cache): a few seconds.
    assert startup < 30, startup


# --- pools and networks ------------------------------------------------------


def test_dir_pool_is_running_and_removed_with_leftovers(libvirt_conn: Any) -> None:
    with DirPool(libvirt_conn) as pool:
        lv_pool = libvirt_conn.storagePoolLookupByName(pool.name)
        assert lv_pool.isActive()
        assert pool.path.is_dir()
        vol = lv_pool.createXML(
            "<volume><name>left.qcow2</name><capacity>1048576</capacity>"
            "<target><format type='qcow2'/></target></volume>",
            0,
        )
        assert Path(vol.path()).exists()
    assert pool.leftover_volumes == ["left.qcow2"]
    assert not pool.path.exists()
    with pytest.raises(libvirt.libvirtError):
        libvirt_conn.storagePoolLookupByName(pool.name)


def test_dir_pool_fixture(dir_pool: DirPool, libvirt_conn: Any) -> None:
    assert dir_pool.name.startswith("vm2kvm-test-")
    xml = libvirt_conn.storagePoolLookupByName(dir_pool.name).XMLDesc(0)
    assert f"<path>{dir_pool.path}</path>" in xml


def test_defined_network(libvirt_conn: Any) -> None:
    with DefinedNetwork(libvirt_conn) as net:
        assert not libvirt_conn.networkLookupByName(net.name).isActive()
    with pytest.raises(libvirt.libvirtError):
        libvirt_conn.networkLookupByName(net.name)


# --- leak checks --------------------------------------------------------------


def test_child_pids_sees_running_and_zombie_children() -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        assert proc.pid in child_pids()
        proc.kill()
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # dead, not reaped: a zombie
        assert proc.pid in child_pids()
    finally:
        proc.kill()
        proc.wait()
    assert proc.pid not in child_pids()


LEAKY_TESTS = """
import asyncio
import subprocess

def test_leaks_process():
    subprocess.Popen(["sleep", "30"])

async def test_leaks_task():
    asyncio.get_running_loop().create_task(asyncio.sleep(30), name="leaky-sleep")

def test_clean():
    subprocess.run(["true"], check=True)

async def test_our_code_blocks_the_loop(tmp_path):
    from vm2kvmd.sources.vmware.vmx import read_vmx
    path = tmp_path / "x.vmx"
    path.write_text('displayName = "x"\\n')  # test code may block
    read_vmx(str(path))  # our code may not, inside the event loop
"""


def test_leak_checks_fail_leaky_tests(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        "from tests.conftest import _no_blocking_calls, _no_leaked_processes, _no_leaked_tasks\n"
    )
    pytester.makepyfile(test_leaky=LEAKY_TESTS)
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    env_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    pytester._monkeypatch.setenv("PYTHONPATH", env_path)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, errors=2, failed=1)
    result.stdout.fnmatch_lines(["*BlockingError: Blocking call to *"])
    result.stdout.fnmatch_lines(["*test leaked child processes: * sleep 30*"])
    result.stdout.fnmatch_lines(["*test leaked asyncio tasks: *leaky-sleep*"])


LEFTOVER_DOMAIN_TEST = """
def test_forgets_its_domain(libvirt_conn, domain_name):
    libvirt_conn.defineXML(
        f"<domain type='qemu'><name>{domain_name}</name><memory unit='MiB'>64</memory>"
        "<os><type arch='x86_64'>hvm</type></os></domain>"
    )
    print("DEFINED", domain_name)
"""


def test_session_fails_and_cleans_up_when_a_test_domain_is_left(
    pytester: pytest.Pytester, libvirt_conn: Any
) -> None:
    libvirt_conn.current()  # the inner session uses this libvirtd instead of starting one
    pytester.makeconftest("from tests.conftest import *  # noqa: F403\n")
    pytester.makepyfile(test_leftover=LEFTOVER_DOMAIN_TEST)
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    env_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    pytester._monkeypatch.setenv("PYTHONPATH", env_path)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["*tests left libvirt objects defined (now removed): domains ['vm2kvm-test-*"]
    )
    name = re.search(r"DEFINED (\S+)", result.stdout.str())
    assert name is not None
    assert name[1] not in {d.name() for d in libvirt_conn.listAllDomains(0)}
