"""vm2kvmd under systemd: sd_notify (READY, STATUS, WATCHDOG, STOPPING) and the logind inhibitor.

The notifications are received on a datagram socket the test binds, passed as
``$NOTIFY_SOCKET`` (what systemd does for ``Type=notify``).  logind is
python-dbusmock's ``logind`` template on the test's private bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from testbed.services import PrivateBus
from tests.e2e.lifecycle_support import (
    HOLD_ENV,
    MiB,
    ServiceDaemon,
    cancel_now,
    make_vm,
    start_job,
    wait_finished,
    wait_for,
    wait_phase,
)
from tests.service.support import BusClient, ScriptedRunner, StaticInspector
from tests.service.test_daemon_process import finish, name_owner
from vm2kvmd.constants import BUS_NAME, MANAGER_IFACE, MANAGER_PATH
from vm2kvmd.daemon import Daemon
from vm2kvmd.service.inhibit import LOGIND_MANAGER, LOGIND_NAME, LOGIND_PATH
from vm2kvmd.service.manager import Manager
from vm2kvmd.service.sdnotify import Notifier, status_text, watchdog_interval

REPO = Path(__file__).resolve().parents[2]

needs_dbusmock = pytest.mark.skipif(
    importlib.util.find_spec("dbusmock") is None, reason="needs python3-dbusmock (apt-get install)"
)


# --- the pure parts -----------------------------------------------------------------


def test_status_text() -> None:
    assert status_text(0, 0) == "idle"
    assert status_text(1, 0) == "1 running, 0 queued"
    assert status_text(2, 3) == "2 running, 3 queued"
    assert status_text(0, 0, stopping=True) == "stopping"
    assert status_text(1, 2, stopping=True) == "stopping: 1 running, 2 queued"


def test_watchdog_interval() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "200000"}, 42) == 0.1
    assert watchdog_interval({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "42"}, 42) == 0.1
    assert watchdog_interval({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "7"}, 42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, 42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}, 42) is None
    assert watchdog_interval({}, 42) is None


def test_environment_is_read_once_and_removed() -> None:
    env = {"NOTIFY_SOCKET": "@abc", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid()), "X": "1"}
    notifier = Notifier.from_environ(env)
    assert notifier.address == "\0abc"
    assert notifier.watchdog == 0.5
    assert env == {"X": "1"}  # children (qemu-img, the appliance) never see them
    assert not Notifier.from_environ({}).enabled
    assert not Notifier.from_environ({"NOTIFY_SOCKET": "vsock:2:123"}).enabled
    assert not Notifier.from_environ({}).send("READY=1")


@contextlib.contextmanager
def notify_socket(abstract: bool = False) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket and its ``$NOTIFY_SOCKET`` value."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setblocking(False)
    tmp = tempfile.mkdtemp(prefix="vm2kvm-notify-")
    try:
        if abstract:
            name = f"vm2kvm-test-notify-{secrets.token_hex(6)}"
            sock.bind("\0" + name)
            yield sock, "@" + name
        else:
            path = os.path.join(tmp, "notify")
            sock.bind(path)
            yield sock, path
    finally:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(tmp, "notify"))
        os.rmdir(tmp)


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_send_reaches_the_socket(abstract: bool) -> None:
    with notify_socket(abstract) as (sock, value):
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": value})
        notifier.ready("idle")
        notifier.counts(1, 0)
        notifier.counts(1, 0)  # unchanged: not sent again
        notifier.counts(0, 0)
        notifier.stopping()
        sock.setblocking(True)
        sock.settimeout(2)
        got = [sock.recv(4096).decode() for _ in range(4)]
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.recv(4096)
        asyncio.run(notifier.close())
    assert got == [
        "READY=1\nSTATUS=idle",
        "STATUS=1 running, 0 queued",
        "STATUS=idle",
        "STOPPING=1\nSTATUS=stopping",
    ]


class Datagrams:
    """Everything arriving on a notify socket, with the arrival order kept."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.messages: list[str] = []
        self._arrived = asyncio.Event()
        self._task = asyncio.create_task(self._read(), name="test notify reader")

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, 4096)
            self.messages.append(data.decode())
            self._arrived.set()

    async def wait_for(self, line: str, within: float = 20.0, start: int = 0) -> int:
        """Index of the first message from ``start`` on with ``line`` among its lines."""
        async with asyncio.timeout(within):
            while True:
                for index in range(start, len(self.messages)):
                    if line in self.messages[index].split("\n"):
                        return index
                self._arrived.clear()
                await self._arrived.wait()

    def count(self, line: str) -> int:
        return sum(line in message.split("\n") for message in self.messages)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


# --- the real daemon process -------------------------------------------------------


async def spawn_notified(address: str, notify: str, tmp: Path, **extra: str) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBUS_", "NOTIFY_", "WATCHDOG_"))}
    env.update(DBUS_SESSION_BUS_ADDRESS=address, NOTIFY_SOCKET=notify, **extra)
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vm2kvmd.daemon",
        "--bus",
        "session",
        "--config",
        os.devnull,
        "--state-dir",
        str(tmp / "state"),
        "--log-level",
        "debug",
        cwd=REPO,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


@contextlib.asynccontextmanager
async def notified_daemon(
    address: str, tmp: Path, abstract: bool = False, **extra: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, Datagrams]]:
    """vm2kvmd as a process with its own ``$NOTIFY_SOCKET``, and the datagrams it sends there;
    killed afterwards if the test did not make it exit."""
    with notify_socket(abstract=abstract) as (sock, value):
        datagrams = Datagrams(sock)
        proc = await spawn_notified(address, value, tmp, **extra)
        try:
            yield proc, datagrams
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.communicate()
            await datagrams.close()


async def test_daemon_process_notifies_systemd(private_bus: str, client: BusClient, tmp_path: Path) -> None:
    daemon = notified_daemon(private_bus, tmp_path, abstract=True, WATCHDOG_USEC="200000")
    async with daemon as (proc, datagrams):
        ready = await datagrams.wait_for("READY=1")
        owned_at_ready = await name_owner(client)
        # Pings every 0.1 s: a handful within a second.
        await asyncio.sleep(1.0)
        pings = datagrams.count("WATCHDOG=1")
        proc.send_signal(signal.SIGTERM)
        stopping = await datagrams.wait_for("STOPPING=1")
        status, err = await finish(proc)
    assert status == 0, err
    assert owned_at_ready, "READY=1 came before the bus name was owned"
    assert datagrams.messages[ready] == "READY=1\nSTATUS=idle"
    assert 4 <= pings <= 15, datagrams.messages
    assert datagrams.messages[stopping] == "STOPPING=1\nSTATUS=stopping"
    # Nothing but pings between READY and STOPPING on an idle daemon.
    assert set(datagrams.messages[ready + 1 : stopping]) == {"WATCHDOG=1"}
    assert "Traceback" not in err


async def test_watchdog_for_another_pid_is_not_ours(
    private_bus: str, client: BusClient, tmp_path: Path
) -> None:
    daemon = notified_daemon(private_bus, tmp_path, WATCHDOG_USEC="100000", WATCHDOG_PID="1")
    async with daemon as (proc, datagrams):
        await datagrams.wait_for("READY=1")
        await asyncio.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        await datagrams.wait_for("STOPPING=1")
        status, err = await finish(proc)
    assert status == 0, err
    assert datagrams.count("WATCHDOG=1") == 0


# --- STATUS and the inhibitor with jobs (the daemon in this process) ------------------


@contextlib.asynccontextmanager
async def daemon_with(
    address: str, runner: ScriptedRunner, notifier: Notifier, max_parallel_jobs: int = 2
) -> AsyncIterator[Daemon]:
    manager = Manager(runner=runner, inspector=StaticInspector(), max_parallel_jobs=max_parallel_jobs)
    await manager.load()
    daemon = Daemon(manager, bus="session", address=address, notifier=notifier)
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop(grace=10)


@contextlib.asynccontextmanager
async def mock_logind(address: str, client: BusClient) -> AsyncIterator[None]:
    """python-dbusmock's logind on the bus at ``address`` until the block ends."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBUS_")}
    env["DBUS_SESSION_BUS_ADDRESS"] = address
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dbusmock",
        "--session",
        "--template",
        "logind",
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(20):
            while not await has_owner(client, LOGIND_NAME):
                assert proc.returncode is None, "dbusmock exited"
                await asyncio.sleep(0.05)
        yield
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.communicate()


async def has_owner(client: BusClient, name: str) -> bool:
    (has,) = await client.call_ok(
        "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "NameHasOwner", "s", [name]
    )
    return bool(has)


async def inhibitors(client: BusClient) -> list[tuple[str, str, str, str]]:
    (listed,) = await client.call_ok(LOGIND_NAME, LOGIND_PATH, LOGIND_MANAGER, "ListInhibitors")
    return [(what, who, why, mode) for what, who, why, mode, *_ in listed]


async def wait_inhibitors(client: BusClient, want: list[Any], within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while True:
            if await inhibitors(client) == want:
                return
            await asyncio.sleep(0.05)


@pytest.fixture
async def own_bus() -> AsyncIterator[tuple[str, BusClient]]:
    """A bus of this test's own: a logind mock on it cannot leak into other tests."""
    with PrivateBus() as bus:
        bus_client = await BusClient.connect(bus.address)
        await bus_client.subscribe()
        try:
            yield bus.address, bus_client
        finally:
            await bus_client.close()


@needs_dbusmock
async def test_status_and_inhibitor_follow_the_jobs(own_bus: tuple[str, BusClient]) -> None:
    address, client = own_bus
    hold = asyncio.Event()
    runner = ScriptedRunner(hold=hold, steps=1)
    with notify_socket() as (sock, value):
        datagrams = Datagrams(sock)
        try:
            async with (
                mock_logind(address, client),
                daemon_with(address, runner, Notifier.from_environ({"NOTIFY_SOCKET": value})),
            ):
                await datagrams.wait_for("READY=1")
                assert await inhibitors(client) == []
                first = await client.migrate("/vms/a.vmx")
                await client.wait_property(first, "Phase", "copy")
                await wait_inhibitors(client, [("shutdown:sleep", "vm2kvm", "1 migration running", "block")])
                await client.migrate("/vms/b.vmx")
                last = await client.migrate("/vms/c.vmx")
                await datagrams.wait_for("STATUS=2 running, 1 queued")
                # Re-worded, not doubled: the old one is released once the new one holds.
                await wait_inhibitors(client, [("shutdown:sleep", "vm2kvm", "2 migrations running", "block")])
                hold.set()
                await client.wait_for(last, "Completed")
                await datagrams.wait_for("STATUS=idle", start=1)
                await wait_inhibitors(client, [])
            await datagrams.wait_for("STOPPING=1")
        finally:
            await datagrams.close()
    statuses = [m for m in datagrams.messages if m.startswith("STATUS=")]
    assert statuses[0] == "STATUS=1 running, 0 queued"
    assert "STATUS=2 running, 1 queued" in statuses
    assert statuses[-1] == "STATUS=idle"
    assert datagrams.messages[-1] == "STOPPING=1\nSTATUS=stopping"


@needs_dbusmock
async def test_stop_releases_the_inhibitor(own_bus: tuple[str, BusClient]) -> None:
    address, client = own_bus
    runner = ScriptedRunner(hold=asyncio.Event())
    async with mock_logind(address, client), daemon_with(address, runner, Notifier()) as daemon:
        path = await client.migrate("/vms/a.vmx")
        await client.wait_property(path, "Phase", "copy")
        await wait_inhibitors(client, [("shutdown:sleep", "vm2kvm", "1 migration running", "block")])
        await daemon.stop(grace=10)  # cancels the job; the inhibitor goes with it
        assert await inhibitors(client) == []


async def test_no_logind_is_one_debug_line(own_bus: tuple[str, BusClient], caplog: Any) -> None:
    address, client = own_bus
    caplog.set_level(logging.DEBUG, logger="vm2kvmd.inhibit")
    runner = ScriptedRunner(steps=1)
    async with daemon_with(address, runner, Notifier()):
        for source in ("/vms/a.vmx", "/vms/b.vmx"):
            path = await client.migrate(source)
            (completed,) = await client.wait_for(path, "Completed")
            assert completed.body[0] is True
            await asyncio.sleep(0.1)  # the inhibitor task's answer
    records = [r for r in caplog.records if r.name == "vm2kvmd.inhibit"]
    assert [(r.levelno, r.getMessage()) for r in records if r.levelno > logging.DEBUG] == []
    assert any("logind is not available" in r.getMessage() for r in records)


async def test_fds_attached_by_callers_are_closed(own_bus: tuple[str, BusClient]) -> None:
    """fd passing is on (for logind's answer), but no method takes one: what a caller attaches
    is closed, else any caller could fill the daemon's fd table."""
    address, _ = own_bus
    sender = await MessageBus(bus_address=address, negotiate_unix_fd=True).connect()
    read_end, write_end = os.pipe()
    try:
        async with daemon_with(address, ScriptedRunner(), Notifier()):
            before = len(os.listdir("/proc/self/fd"))
            for _ in range(20):
                reply = await sender.call(
                    Message(
                        destination=BUS_NAME,
                        path=MANAGER_PATH,
                        interface=MANAGER_IFACE,
                        member="GetJobs",
                        signature="h",
                        body=[0],
                        unix_fds=[read_end],
                    )
                )
                assert reply.message_type is MessageType.ERROR  # no GetJobs(h)
            after = len(os.listdir("/proc/self/fd"))
    finally:
        sender.disconnect()
        await sender.wait_for_disconnect()  # type: ignore[no-untyped-call]
        os.close(read_end)
        os.close(write_end)
    assert after == before


# --- a real migration in the real daemon process --------------------------------------


@contextlib.contextmanager
def mock_logind_process(address: str) -> Iterator[None]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBUS_")}
    env["DBUS_SESSION_BUS_ADDRESS"] = address
    proc = subprocess.Popen(
        [sys.executable, "-m", "dbusmock", "--session", "--template", "logind"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: asyncio.run(list_inhibitors(address)) is not None, 20, "the logind mock")
        yield
    finally:
        proc.terminate()
        proc.wait(10)


async def list_inhibitors(address: str) -> list[tuple[str, str, str, str]] | None:
    """logind's inhibitors; None while there is no logind."""
    bus = await MessageBus(bus_address=address).connect()
    try:
        reply = await bus.call(
            Message(
                destination=LOGIND_NAME, path=LOGIND_PATH, interface=LOGIND_MANAGER, member="ListInhibitors"
            )
        )
    finally:
        bus.disconnect()
    if reply.message_type is MessageType.ERROR:
        return None
    return [(what, who, why, mode) for what, who, why, mode, *_ in reply.body[0]]


def received(sock: socket.socket) -> list[str]:
    messages = []
    with contextlib.suppress(BlockingIOError):
        while True:
            messages.append(sock.recv(4096).decode())
    return messages


@needs_dbusmock
@pytest.mark.libvirt
def test_real_migration_holds_the_inhibitor(
    libvirt_conn: Any, dir_pool: Any, domain_name: str, tmp_path: Path
) -> None:
    """vm2kvmd as a process, a real migration held in its copy phase (VM2KVMD_TEST_HOLD):
    the inhibitor and STATUS= follow it, and both are back to nothing after Cancel."""
    one = [("shutdown:sleep", "vm2kvm", "1 migration running", "block")]
    vm = make_vm(tmp_path / "vm", "Inhibit", sizes=[8 * MiB])
    with PrivateBus() as bus, mock_logind_process(bus.address), notify_socket() as (sock, value):
        daemon = ServiceDaemon(
            bus.address, tmp_path / "daemon", env={HOLD_ENV: "copy:60", "NOTIFY_SOCKET": value}
        )
        daemon.start()
        try:
            number = start_job(daemon, str(vm.vmx), "--pool", dir_pool.name, "--name", domain_name)
            wait_phase(bus.address, number, "copy")
            wait_for(lambda: asyncio.run(list_inhibitors(bus.address)) == one, 20, "the inhibitor")
            cancel_now(bus.address, number)
            props = wait_finished(bus.address, number)
            wait_for(lambda: asyncio.run(list_inhibitors(bus.address)) == [], 20, "no inhibitor")
            status, _ = daemon.terminate()
        finally:
            daemon.close()
        messages = received(sock)
    assert props["State"] == "cancelled"
    assert status == 0, daemon.logs()
    assert messages[0] == "READY=1\nSTATUS=idle"
    assert "STATUS=1 running, 0 queued" in messages
    assert messages[-2:] == ["STATUS=idle", "STOPPING=1\nSTATUS=stopping"]
    assert vm.unchanged()
