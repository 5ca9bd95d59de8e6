"""vm2kvmd --state-dir: an unusable job store and a state directory in use stop the start."""

from __future__ import annotations

from pathlib import Path

from tests.service.support import BusClient
from tests.service.test_daemon_process import finish, name_owner, running, spawn, wait_for_name


async def test_unusable_state_dir_is_one_line_and_exit_1(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "state"
    not_a_dir.write_text("")
    # The store is opened before the bus is touched: no bus needed.
    proc = await spawn("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent", "--state-dir", str(not_a_dir))
    status, err = await finish(proc)
    assert status == 1
    (line,) = err.splitlines()
    assert line.startswith(f"vm2kvmd: error: the state directory {not_a_dir} is not a directory")


async def test_the_state_dir_is_created_0700(private_bus: str, client: BusClient, tmp_path: Path) -> None:
    state = tmp_path / "a" / "state"
    async with running(
        "DBUS_SESSION_BUS_ADDRESS", private_bus, "--bus", "session", "--state-dir", str(state)
    ) as proc:
        await wait_for_name(client, proc)
        proc.terminate()
        status, _ = await finish(proc)
    assert status == 0
    assert state.stat().st_mode & 0o777 == 0o700
    assert (state / "jobs.sqlite3").exists()


async def test_a_second_daemon_on_the_same_state_dir_is_refused(
    private_bus: str, client: BusClient, tmp_path: Path
) -> None:
    """Recovery of one daemon must never undo the running jobs of another."""
    state = str(tmp_path / "state")
    async with running(
        "DBUS_SESSION_BUS_ADDRESS", private_bus, "--bus", "session", "--state-dir", state
    ) as first:
        await wait_for_name(client, first)
        second = await spawn(
            "DBUS_SESSION_BUS_ADDRESS", private_bus, "--bus", "session", "--state-dir", state
        )
        status, err = await finish(second)
        still_owned = await name_owner(client)
        first.terminate()
        first_status, _ = await finish(first)
    assert status == 1
    lock = f"{state}/vm2kvmd.lock"
    assert err.splitlines() == [
        f"vm2kvmd: error: {state} is in use by another vm2kvmd (lock {lock} is held); stop it first"
    ]
    assert still_owned and first_status == 0
