"""vm2kvmd as a process: name ownership, signals, start-up failures."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.service.support import BusClient
from vm2kvmd.constants import BUS_NAME, MANAGER_IFACE, MANAGER_PATH

REPO = Path(__file__).resolve().parents[2]
# Every daemon spawned here (other modules use ``spawn`` too) gets a job store of its own
# below this directory, which goes when the test process ends.
_STATE_ROOT = Path(tempfile.mkdtemp(prefix="vm2kvmd-test-states-"))
atexit.register(shutil.rmtree, _STATE_ROOT, True)


async def spawn(env_var: str, address: str, *args: str) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBUS_")}
    env[env_var] = address
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vm2kvmd.daemon",
        # An empty config: the host's /etc/vm2kvm/vm2kvmd.conf must not change what tests see
        # (a later --config in ``args`` wins).
        "--config",
        os.devnull,
        # Never the host's /var/lib/vm2kvm; a fresh job store per process (a later --state-dir wins).
        "--state-dir",
        tempfile.mkdtemp(prefix="state-", dir=_STATE_ROOT),
        *args,
        cwd=REPO,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish(proc: asyncio.subprocess.Process, within: float = 20.0) -> tuple[int, str]:
    """Exit status and stderr; the process is killed if it does not end in time."""
    try:
        async with asyncio.timeout(within):
            _, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.communicate()
        raise
    assert proc.returncode is not None
    return proc.returncode, err.decode()


@contextlib.asynccontextmanager
async def running(env_var: str, address: str, *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await spawn(env_var, address, *args)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()


async def name_owner(client: BusClient) -> bool:
    (has,) = await client.call_ok(
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "NameHasOwner",
        "s",
        [BUS_NAME],
    )
    return bool(has)


async def wait_for_name(client: BusClient, proc: asyncio.subprocess.Process) -> None:
    async with asyncio.timeout(20):
        while not await name_owner(client):
            assert proc.returncode is None, "vm2kvmd exited early"
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_serves_until_signalled(private_bus: str, client: BusClient, signum: int) -> None:
    async with running("DBUS_SESSION_BUS_ADDRESS", private_bus, "--bus", "session") as proc:
        await wait_for_name(client, proc)
        (jobs,) = await client.call_ok(BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "GetJobs")
        proc.send_signal(signum)
        status, err = await finish(proc)
    assert jobs == []
    assert status == 0, err
    assert f"serving {BUS_NAME} on the session bus" in err
    assert "Traceback" not in err
    assert not await name_owner(client)


async def test_system_bus_is_the_default(private_bus: str, client: BusClient) -> None:
    async with running("DBUS_SYSTEM_BUS_ADDRESS", private_bus) as proc:
        await wait_for_name(client, proc)
        proc.terminate()
        status, err = await finish(proc)
    assert status == 0, err
    assert "on the system bus" in err


async def test_second_daemon_exits_with_one_line(private_bus: str, client: BusClient) -> None:
    async with running("DBUS_SESSION_BUS_ADDRESS", private_bus, "--bus", "session") as first:
        await wait_for_name(client, first)
        second = await spawn("DBUS_SESSION_BUS_ADDRESS", private_bus, "--bus", "session")
        status, err = await finish(second)
        still_owned = await name_owner(client)
        first.terminate()
        first_status, _ = await finish(first)
    assert status == 1
    assert err.splitlines() == [
        f"vm2kvmd: error: {BUS_NAME} is already owned on the session bus (is another vm2kvmd running?)"
    ]
    assert still_owned
    assert first_status == 0


async def test_no_bus_exits_with_one_line(tmp_path: Path) -> None:
    proc = await spawn("DBUS_SESSION_BUS_ADDRESS", f"unix:path={tmp_path}/no-bus", "--bus", "session")
    status, err = await finish(proc)
    assert status == 1
    assert err.splitlines() == [
        "vm2kvmd: error: cannot connect to the session bus: No such file or directory"
    ]
