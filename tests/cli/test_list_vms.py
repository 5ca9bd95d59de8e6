"""``vm2kvmctl list-vms`` as a user runs it: the real CLI, the real daemon (in this process) on a
private bus, the vSphere simulator in ESX mode.  The password reaches the daemon only as a file
descriptor: from ``--password-file``, a 0600 ``~/.netrc``, never from argv; and it shows nowhere
(``/proc/*/cmdline``, the daemon's log, its D-Bus properties) while the call runs or after."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pty
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.signature import Variant

from testbed.vcsim import PASSWORD, USER, Vcsim, VcsimInfo
from tests.adapters.vsphere_support import direct, expected_summary, vms_under
from tests.cli.test_cli import REPO, Run, ctl_env, finish
from tests.service.support import serve_daemon
from tests.service.test_call_fds import everyone_else_closed
from vm2kvmd.constants import BUS_NAME, MANAGER_IFACE, MANAGER_PATH, OBJECT_MANAGER_IFACE, PROPERTIES_IFACE
from vm2kvmd.core.units import size_text

pytestmark = pytest.mark.slow  # the simulator (built once, about 20 s)


@pytest.fixture(scope="module")
def esx() -> Iterator[VcsimInfo]:
    with Vcsim("esx") as info:
        yield info


@pytest.fixture(scope="module")
def expected(esx: VcsimInfo) -> list[dict[str, Any]]:
    """Every VM of the simulator as list-vms should show it, read through pyvmomi directly."""
    with direct(esx) as content:
        vms = vms_under(content, content.rootFolder)
        return sorted((expected_summary(vm, 0) for vm in vms), key=lambda vm: vm["name"])


def uri_of(esx: VcsimInfo) -> str:
    return f"esx://{USER}@{esx.host}:{esx.port}/"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty HOME for the CLI: no ~/.netrc unless a test writes one."""
    path = tmp_path / "home"
    path.mkdir()
    return path


def password_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "password"
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


@pytest.fixture
def with_password(tmp_path: Path) -> list[str]:
    """The options that give the simulator's password: a 0600 file."""
    return ["--password-file", str(password_file(tmp_path, PASSWORD))]


async def start_list_vms(
    address: str, home: Path, *args: str, stdin: int = asyncio.subprocess.DEVNULL
) -> asyncio.subprocess.Process:
    """``vm2kvmctl list-vms ARGS`` with ``home`` as HOME, in a session of its own (so without a
    controlling terminal: a terminal it gets is only ``stdin``); never a password in ``args``."""
    assert PASSWORD not in args
    env = ctl_env(address)
    env["HOME"] = str(home)
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vm2kvmctl.main",
        "--bus",
        "session",
        "list-vms",
        *args,
        cwd=REPO,
        env=env,
        stdin=stdin,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )


async def list_vms(address: str, home: Path, *args: str) -> Run:
    return await finish(await start_list_vms(address, home, *args))


def error_line(run: Run) -> str:
    assert run.status != 0
    assert len(run.error_lines) == 1, run.err
    assert "Traceback" not in run.err and "org.vm2kvm.Error" not in run.err
    return run.error_lines[0]


# --- listing ---------------------------------------------------------------------------------


async def test_json_with_ca_file_matches_pyvmomi(
    private_bus: str, esx: VcsimInfo, expected: list[dict[str, Any]], home: Path, with_password: list[str]
) -> None:
    async with serve_daemon(private_bus):
        run = await list_vms(
            private_bus, home, uri_of(esx), "--json", "--ca-file", esx.ca_file, *with_password
        )
    assert run.status == 0, run.err
    vms = run.json()
    assert [vm["name"] for vm in vms] == ["ha-host_VM0", "ha-host_VM1"]
    assert vms == expected
    assert all(vm["power_state"] == "poweredOn" and vm["guest_os"] == "otherGuest" for vm in vms)


async def test_table_with_pinned_thumbprint(
    private_bus: str, esx: VcsimInfo, expected: list[dict[str, Any]], home: Path, with_password: list[str]
) -> None:
    async with serve_daemon(private_bus):
        run = await list_vms(private_bus, home, uri_of(esx), "--thumbprint", esx.thumbprint, *with_password)
    assert run.status == 0, run.err
    header, *rows = run.out.splitlines()
    assert header.split() == [
        "NAME", "POWER", "GUEST", "OS", "CPUS", "MEMORY", "DISKS", "NICS", "SNAPSHOTS", "CBT", "TOOLS",
    ]  # fmt: skip
    assert len(rows) == 2
    for row, vm in zip(rows, expected, strict=True):
        (disk,) = vm["disks"]
        (nic,) = vm["nics"]
        cells = [
            vm["name"],
            "poweredOn",
            "otherGuest",
            str(vm["cpus"]),
            size_text(vm["memory_mib"] << 20),
            f"{size_text(disk['capacity_bytes'])} {disk['datastore']} thin",
            nic["network"],
            "0",
            "off",
            vm["tools_state"],
        ]
        assert row.split() == " ".join(cells).split(), row


async def test_password_from_a_0600_netrc(
    private_bus: str, esx: VcsimInfo, expected: list[dict[str, Any]], home: Path
) -> None:
    netrc = home / ".netrc"
    netrc.write_text(f"machine {esx.host} login {USER} password {PASSWORD}\n")
    netrc.chmod(0o600)
    async with serve_daemon(private_bus):
        run = await list_vms(private_bus, home, uri_of(esx), "--json", "--ca-file", esx.ca_file)
    assert run.status == 0, run.err
    assert run.json() == expected


async def test_password_typed_at_the_prompt(
    private_bus: str, esx: VcsimInfo, expected: list[dict[str, Any]], home: Path
) -> None:
    """stdin a terminal (a pty; the CLI in a new session has no /dev/tty, so getpass uses stdin):
    the prompt names user and host, and the password typed logs in."""
    controller, terminal = pty.openpty()
    async with serve_daemon(private_bus):
        proc = await start_list_vms(
            private_bus, home, uri_of(esx), "--json", "--thumbprint", esx.thumbprint, stdin=terminal
        )
        os.close(terminal)
        try:
            assert proc.stderr is not None
            prompt = await asyncio.wait_for(proc.stderr.readuntil(b": "), 20)
            await asyncio.to_thread(os.write, controller, PASSWORD.encode() + b"\n")
            run = await finish(proc, err_so_far=prompt.decode())
        finally:
            os.close(controller)
    assert prompt.decode() == f"Password for {USER}@{esx.host}:{esx.port}: "
    assert run.status == 0, run.err
    assert run.json() == expected
    assert PASSWORD not in run.err.split()


async def test_password_from_stdin_with_password_file_dash(
    private_bus: str, esx: VcsimInfo, expected: list[dict[str, Any]], home: Path
) -> None:
    """``--password-file -`` (how the Cockpit page gives it): stdin to its end, one trailing newline
    dropped by the daemon; an empty stdin is exit 2 before anything is called."""
    async with serve_daemon(private_bus):
        common = (uri_of(esx), "--json", "--thumbprint", esx.thumbprint, "--password-file", "-")
        proc = await start_list_vms(private_bus, home, *common, stdin=asyncio.subprocess.PIPE)
        assert proc.stdin is not None
        proc.stdin.write(PASSWORD.encode() + b"\n")
        proc.stdin.close()
        run = await finish(proc)
        empty = await list_vms(private_bus, home, *common)  # stdin /dev/null
    assert run.status == 0, run.err
    assert run.json() == expected
    assert error_line(empty) == "vm2kvmctl: error: --password-file -: stdin holds no password"
    assert empty.status == 2


async def test_a_netrc_others_can_read_is_refused(private_bus: str, esx: VcsimInfo, home: Path) -> None:
    netrc = home / ".netrc"
    netrc.write_text(f"machine {esx.host} login {USER} password {PASSWORD}\n")
    netrc.chmod(0o644)
    async with serve_daemon(private_bus):
        run = await list_vms(private_bus, home, uri_of(esx), "--ca-file", esx.ca_file)
    assert error_line(run) == (
        f"vm2kvmctl: error: {netrc}: mode 0644 lets other users read or change it; "
        f"its passwords are not used; chmod 600 {netrc}"
    )
    assert run.out == ""


async def test_a_password_file_others_can_read_is_refused(
    private_bus: str, esx: VcsimInfo, home: Path, tmp_path: Path
) -> None:
    secret = password_file(tmp_path, PASSWORD, mode=0o640)
    async with serve_daemon(private_bus):
        run = await list_vms(private_bus, home, uri_of(esx), "--password-file", str(secret))
    assert "mode 0640 lets other users read or change it" in error_line(run)


async def test_no_password_anywhere_says_the_three_ways(private_bus: str, esx: VcsimInfo, home: Path) -> None:
    async with serve_daemon(private_bus):
        run = await list_vms(private_bus, home, uri_of(esx))  # stdin is not a terminal
    assert error_line(run) == (
        f"vm2kvmctl: error: no password for {USER}@{esx.host}: give --password-file FILE, add "
        f"'machine {esx.host} login {USER} password ...' to ~/.netrc (mode 0600), "
        "or run vm2kvmctl on a terminal to be asked"
    )
    assert run.status == 2


async def test_a_password_in_the_uri_is_refused_and_not_repeated(private_bus: str, home: Path) -> None:
    async with serve_daemon(private_bus):
        run = await list_vms(private_bus, home, "esx://root:Hunter2-in-uri@esx1.example.com/")
    line = error_line(run)
    assert "Hunter2" not in run.err + run.out
    assert line.startswith(
        "vm2kvmctl: error: source URI 'esx://root:***@esx1.example.com/': a password in the URI is refused"
    )
    assert run.status == 2


async def test_thumbprint_mismatch_shows_the_real_one(
    private_bus: str, esx: VcsimInfo, home: Path, with_password: list[str]
) -> None:
    async with serve_daemon(private_bus):
        run = await list_vms(private_bus, home, uri_of(esx), "--thumbprint", "ab" * 32, *with_password)
    line = error_line(run)
    assert "thumbprint" in line and f"--thumbprint {esx.thumbprint}" in line, line
    assert run.status == 1


async def test_the_system_store_refuses_the_simulator(
    private_bus: str, esx: VcsimInfo, home: Path, with_password: list[str]
) -> None:
    async with serve_daemon(private_bus):
        run = await list_vms(private_bus, home, uri_of(esx), *with_password)
    line = error_line(run)
    assert "not trusted by the system CA store" in line and esx.thumbprint in line, line


# --- secrets -----------------------------------------------------------------------------------


def wrong_password() -> str:
    return f"Wr0ng-{secrets.token_hex(8)}-xyzzy"


def process_arguments() -> list[list[str]]:
    """Every process's argv (those we may read)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                raw = (entry / "cmdline").read_bytes()
            except OSError:
                continue  # gone, or not ours to read
            found.append(raw.decode(errors="replace").split("\0"))
    return found


async def daemon_properties(address: str) -> str:
    """Every property of every object of the daemon, as text."""
    bus = await MessageBus(bus_address=address).connect()
    try:
        texts = []
        for interface, member, signature, body in (
            (PROPERTIES_IFACE, "GetAll", "s", [MANAGER_IFACE]),
            (OBJECT_MANAGER_IFACE, "GetManagedObjects", "", []),
        ):
            reply = await bus.call(
                Message(
                    destination=BUS_NAME,
                    path=MANAGER_PATH,
                    interface=interface,
                    member=member,
                    signature=signature,
                    body=body,
                )
            )
            assert reply is not None and reply.message_type is MessageType.METHOD_RETURN
            texts.append(repr(reply.body))
        return "\n".join(texts)
    finally:
        bus.disconnect()
        await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]


def log_text(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(
        f"{record.name} {record.getMessage()} {record.exc_text or ''}" for record in caplog.records
    )


def assert_nowhere(password: str, *texts: str) -> None:
    for argv in process_arguments():
        assert not any(password in arg for arg in argv), argv
        assert PASSWORD not in argv, argv
    for text in texts:
        assert password not in text


async def test_a_wrong_password_is_login_failed_and_shows_nowhere(
    private_bus: str, esx: VcsimInfo, home: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The password file is a FIFO the test holds open: the daemon has the fd and waits for end
    of file while we look everywhere; then it logs in, is refused, and we look again."""
    caplog.set_level(logging.DEBUG)
    password = wrong_password()
    fifo = tmp_path / "password"
    os.mkfifo(fifo, 0o600)
    async with serve_daemon(private_bus):
        proc = await start_list_vms(
            private_bus, home, uri_of(esx), "--ca-file", esx.ca_file, "--password-file", str(fifo)
        )
        # Opening for writing waits for the CLI to open the FIFO for reading.
        writer = await asyncio.wait_for(asyncio.to_thread(os.open, fifo, os.O_WRONLY), 20)
        try:
            os.write(writer, password.encode() + b"\n")
            await asyncio.sleep(0.5)  # the CLI's call reaches the daemon, which reads the fd
            assert proc.returncode is None  # still waiting for the end of file
            during = await daemon_properties(private_bus)
            await asyncio.to_thread(assert_nowhere, password, during, log_text(caplog))
        finally:
            os.close(writer)
        run = await finish(proc)
        after = await daemon_properties(private_bus)
    line = error_line(run)
    assert f"refused the login of user {USER!r}: wrong user name or password" in line, line
    assert run.status == 1
    await asyncio.to_thread(assert_nowhere, password, run.out, run.err, after, log_text(caplog))


async def test_a_wrong_password_from_netrc_shows_nowhere(
    private_bus: str, esx: VcsimInfo, home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The CLI reads ~/.netrc itself and hands the daemon a pipe: the same guarantees."""
    caplog.set_level(logging.DEBUG)
    password = wrong_password()
    netrc = home / ".netrc"
    netrc.write_text(f'machine {esx.host}\n  login {USER}\n  password "{password}"\n')
    netrc.chmod(0o600)
    async with serve_daemon(private_bus):
        run = await list_vms(private_bus, home, uri_of(esx), "--thumbprint", esx.thumbprint)
        after = await daemon_properties(private_bus)
    assert "wrong user name or password" in error_line(run)
    await asyncio.to_thread(assert_nowhere, password, run.out, run.err, after, log_text(caplog))


# --- the fd in the daemon ------------------------------------------------------------------------


async def call_list_vms(address: str, uri: str, options: dict[str, Any], fds: list[int]) -> Message:
    bus = await MessageBus(bus_address=address, negotiate_unix_fd=True).connect()
    try:
        reply = await bus.call(
            Message(
                destination=BUS_NAME,
                path=MANAGER_PATH,
                interface=MANAGER_IFACE,
                member="ListVms",
                signature="sa{sv}h",
                body=[uri, options, 0],
                unix_fds=fds,
            )
        )
        assert reply is not None
        return reply
    finally:
        bus.disconnect()
        await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]


async def test_the_daemon_closes_every_fd_of_the_call(private_bus: str, esx: VcsimInfo) -> None:
    """The password fd and an extra one the call carries are closed, when the call succeeds and
    when it fails after reading the password (an unknown option)."""
    for options, expect_error in (
        ({}, None),
        ({"colour": Variant("s", "blue")}, "org.vm2kvm.Error.InvalidOption"),
    ):
        pipes = [os.pipe(), os.pipe()]
        read_ends = [r for r, _ in pipes]
        os.write(pipes[0][1], PASSWORD.encode())
        os.close(pipes[0][1])  # the password pipe: written and closed, as the CLI does
        extra_write = pipes[1][1]
        uri = f"esx://{USER}@{esx.host}:{esx.port}/?no_verify=1"
        async with serve_daemon(private_bus):
            reply = await call_list_vms(private_bus, uri, options, read_ends)
        for fd in read_ends:
            os.close(fd)
        try:
            if expect_error is None:
                assert reply.message_type is MessageType.METHOD_RETURN, reply.body
                assert [vm["name"] for vm in json.loads(reply.body[0])] == ["ha-host_VM0", "ha-host_VM1"]
            else:
                assert reply.error_name == expect_error
                assert "colour" in reply.body[0]
            assert everyone_else_closed(extra_write)
        finally:
            os.close(extra_write)


async def test_a_call_whose_h_names_no_fd_is_refused(private_bus: str, esx: VcsimInfo) -> None:
    async with serve_daemon(private_bus):
        reply = await call_list_vms(private_bus, uri_of(esx), {}, [])
    assert reply.error_name == "org.vm2kvm.Error.InvalidOption"
    assert "names no file descriptor" in reply.body[0]
