"""vm2kvmctl on a terminal: the Ctrl-C question, progress bars, polkit's password prompt.

Ctrl-C while vm2kvmctl follows a job it started: ask on a terminal, cancel without one.

The terminal is a real pseudo-terminal (``pty.openpty``) as vm2kvmctl's stdin;
Ctrl-C is a real SIGINT; the answer is typed into the pty.  The daemon runs in
this process (``serve_daemon``), as in ``test_cli.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from dbus_fast import Message, MessageFlag, MessageType

from tests.cli.test_cli import REPO, assert_one_error_line, ctl_env, finish, following, start_ctl
from tests.service.support import ScriptedRunner, serve_daemon
from vm2kvmctl.follow import QUESTION, Choice, decide
from vm2kvmd.service.jobs.state import JobState

ASKED = QUESTION.format(number=1)


@pytest.mark.parametrize(
    ("typed", "choice"),
    [
        ("c", Choice.CANCEL),
        ("Cancel ", Choice.CANCEL),
        ("d", Choice.DETACH),
        ("DETACH", Choice.DETACH),
        ("r", Choice.RESUME),
        ("resume", Choice.RESUME),
        ("", None),
        ("x", None),
        (None, Choice.CANCEL),  # end of input
    ],
)
def test_decide(typed: str | None, choice: Choice | None) -> None:
    assert decide(typed) is choice


@contextlib.asynccontextmanager
async def terminal() -> AsyncIterator[tuple[int, int]]:
    """(master, slave) of a new pseudo-terminal, both closed afterwards."""
    master, slave = pty.openpty()
    try:
        yield master, slave
    finally:
        os.close(master)
        with contextlib.suppress(OSError):
            os.close(slave)


async def until(proc: asyncio.subprocess.Process, text: str, within: float = 10.0) -> str:
    """Stderr read until ``text`` has appeared (the question ends without a newline)."""
    assert proc.stderr is not None
    seen = ""
    async with asyncio.timeout(within):
        while text not in seen:
            chunk = await proc.stderr.read(1024)
            assert chunk, f"vm2kvmctl ended early: {seen}"
            seen += chunk.decode()
    return seen


@contextlib.asynccontextmanager
async def question_up(
    address: str, runner: ScriptedRunner
) -> AsyncIterator[tuple[Any, int, asyncio.subprocess.Process, str]]:
    """(daemon, terminal master, vm2kvmctl, its stderr so far): ``vm2kvmctl migrate`` on a
    terminal, following job 1 of a daemon running ``runner``, after one Ctrl-C: the question is up."""
    async with serve_daemon(address, runner=runner) as daemon, terminal() as (master, slave):
        proc = await start_ctl(address, "migrate", "/vms/a.vmx", stdin=slave)
        os.close(slave)  # the child has its own copy
        err = await following(proc)
        proc.send_signal(signal.SIGINT)
        err += await until(proc, ASKED)
        yield daemon, master, proc, err


async def test_detach(private_bus: str) -> None:
    hold = asyncio.Event()
    async with question_up(private_bus, ScriptedRunner(hold=hold)) as (daemon, master, proc, err):
        os.write(master, b"d\n")
        run = await finish(proc, err_so_far=err)
        state = daemon.manager.jobs[0].state
        hold.set()
    assert run.status == 130, run.err
    assert state is JobState.RUNNING
    assert run.error_lines == []
    assert (
        "Detached from job 1; it goes on (running). vm2kvmctl watch 1 follows it again, "
        "vm2kvmctl cancel 1 stops it." in run.err
    )


async def test_cancel_by_answer(private_bus: str) -> None:
    runner = ScriptedRunner(hold=asyncio.Event())
    async with question_up(private_bus, runner) as (daemon, master, proc, err):
        os.write(master, b"x\n")  # not an answer: asked again
        err += await until(proc, ASKED)
        os.write(master, b"c\n")
        run = await finish(proc, err_so_far=err)
        state = daemon.manager.jobs[0].state
    assert run.status == 130, run.err
    assert state is JobState.CANCELLED
    assert runner.cleaned_up
    assert run.err.count(ASKED) == 2
    assert "job 1: Cancelling job 1 (Ctrl-C again to stop waiting)..." in run.err
    assert_one_error_line(run, "job 1 cancelled: cancelled by request")


async def test_second_ctrl_c_at_the_question_cancels(private_bus: str) -> None:
    async with question_up(private_bus, ScriptedRunner(hold=asyncio.Event())) as (daemon, _master, proc, err):
        proc.send_signal(signal.SIGINT)
        run = await finish(proc, err_so_far=err)
        state = daemon.manager.jobs[0].state
    assert run.status == 130, run.err
    assert state is JobState.CANCELLED
    assert_one_error_line(run, "job 1 cancelled: cancelled by request")


async def test_resume_then_the_job_completes(private_bus: str) -> None:
    hold = asyncio.Event()
    async with question_up(private_bus, ScriptedRunner(hold=hold)) as (daemon, master, proc, err):
        os.write(master, b"r\n")
        await asyncio.sleep(0.3)
        # A later Ctrl-C asks again; the job ending meanwhile ends the question.
        proc.send_signal(signal.SIGINT)
        err += await until(proc, ASKED)
        hold.set()
        run = await finish(proc, err_so_far=err)
        state = daemon.manager.jobs[0].state
    assert run.status == 0, run.err
    assert state is JobState.COMPLETED
    assert run.err.count(ASKED) == 2
    assert run.out.startswith("Job 1 completed: /vms/a.vmx -> domain vm")


async def test_end_of_input_cancels(private_bus: str) -> None:
    async with question_up(private_bus, ScriptedRunner(hold=asyncio.Event())) as (daemon, master, proc, err):
        os.write(master, b"\x04")  # Ctrl-D at the start of a line: end of input
        run = await finish(proc, err_so_far=err)
        state = daemon.manager.jobs[0].state
    assert run.status == 130, run.err
    assert state is JobState.CANCELLED


async def test_retry_asks_too(private_bus: str) -> None:
    hold = asyncio.Event()
    async with (
        serve_daemon(private_bus, runner=ScriptedRunner(hold=hold)) as daemon,
        terminal() as (
            master,
            slave,
        ),
    ):
        first = await start_ctl(private_bus, "migrate", "/vms/a.vmx", "--detach")
        await finish(first)
        await start_cancel(private_bus)
        proc = await start_ctl(private_bus, "retry", "1", stdin=slave)
        os.close(slave)
        err = await following(proc)
        proc.send_signal(signal.SIGINT)
        err += await until(proc, QUESTION.format(number=2))
        os.write(master, b"d\n")
        run = await finish(proc, err_so_far=err)
        state = daemon.manager.jobs[1].state
        hold.set()
    assert run.status == 130, run.err
    assert run.err.startswith("Retrying job 1 as job 2\n")
    assert state is JobState.RUNNING
    assert "Detached from job 2" in run.err


async def start_cancel(address: str) -> None:
    run = await finish(await start_ctl(address, "cancel", "1"))
    assert run.status == 0, run.err


async def test_on_a_terminal_with_progress_bars(private_bus: str) -> None:
    """stderr a terminal too: the bars stop for the question and come back after "resume"."""
    hold = asyncio.Event()
    async with serve_daemon(private_bus, runner=ScriptedRunner(hold=hold)), terminal() as (master, slave):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "vm2kvmctl.main",
            "--bus",
            "session",
            "migrate",
            "/vms/a.vmx",
            cwd=REPO,
            env={**ctl_env(private_bus), "COLUMNS": "100", "TERM": "xterm"},
            stdin=slave,
            stdout=asyncio.subprocess.PIPE,
            stderr=slave,
        )
        os.close(slave)
        screen = await read_terminal(master, "running, phase copy")
        proc.send_signal(signal.SIGINT)
        screen += await read_terminal(master, ASKED)
        os.write(master, b"r\n")
        hold.set()
        async with asyncio.timeout(20):
            out, _ = await proc.communicate()
        screen += await read_terminal(master, "")
    assert proc.returncode == 0, screen
    assert "Traceback" not in screen
    assert out.decode().startswith("Job 1 completed: /vms/a.vmx -> domain vm")


async def read_terminal(master: int, text: str, within: float = 10.0) -> str:
    """What the terminal shows until ``text`` (all there is now when ``text`` is empty)."""
    loop = asyncio.get_running_loop()
    seen = ""
    async with asyncio.timeout(within):
        while True:
            readable = asyncio.Event()
            loop.add_reader(master, readable.set)
            try:
                if text:
                    await readable.wait()
                else:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.2):
                            await readable.wait()
            finally:
                loop.remove_reader(master)
            if not readable.is_set():
                return seen
            try:
                seen += os.read(master, 65536).decode(errors="replace")
            except OSError:  # EIO: nobody has the terminal open any more
                return seen
            if text and text in seen:
                return seen


async def test_polkit_may_ask_only_on_a_terminal(private_bus: str) -> None:
    """Calls to vm2kvmd allow interactive authorization when stdin is a terminal, unless told not to."""
    seen: list[tuple[str, bool]] = []

    def record(msg: Message) -> None:
        if msg.message_type is MessageType.METHOD_CALL and msg.member == "ListJobs":
            seen.append((msg.member, bool(msg.flags & MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION)))

    async with serve_daemon(private_bus) as daemon, terminal() as (_master, slave):
        daemon.bus.add_message_handler(record)
        on_tty = await finish(await start_ctl(private_bus, "jobs", stdin=slave))
        told_not = await finish(await start_ctl(private_bus, "jobs", "--no-ask-password", stdin=slave))
        no_tty = await finish(await start_ctl(private_bus, "jobs"))
    assert (on_tty.status, told_not.status, no_tty.status) == (0, 0, 0)
    assert seen == [("ListJobs", True), ("ListJobs", False), ("ListJobs", False)]
