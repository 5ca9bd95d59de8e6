"""Following a job until it ends, and what Ctrl-C does meanwhile.

``migrate`` and ``retry`` own the job they follow: on a terminal Ctrl-C asks
whether to cancel it or detach from it; without one (scripts, CI) it cancels,
so nothing is left running that nobody watches.  ``watch`` only stops watching.
"""

from __future__ import annotations

import asyncio
import enum
import os
import signal
import sys
from dataclasses import dataclass
from typing import Any, Final

from vm2kvmctl import output
from vm2kvmctl.client import (
    Answer,
    Changed,
    Client,
    Completed,
    DaemonGone,
    Interrupted,
    JobEvent,
    JobSignals,
    Unreachable,
    job_number,
)
from vm2kvmctl.common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, Context, error_line
from vm2kvmctl.progress import JobView, job_view


class OnInterrupt(enum.Enum):
    """What the first Ctrl-C does while a job is followed."""

    CANCEL = "cancel"  # cancel the job and wait for it (a second Ctrl-C stops waiting)
    ASK = "ask"  # ask: cancel, detach or resume
    STOP = "stop"  # stop waiting; the job goes on


class Choice(enum.Enum):
    CANCEL = "cancel"
    DETACH = "detach"
    RESUME = "resume"


QUESTION: Final = "Cancel job {number} or detach from it? [c]ancel / [d]etach / [r]esume waiting: "

_ANSWERS: Final = {
    "c": Choice.CANCEL,
    "cancel": Choice.CANCEL,
    "d": Choice.DETACH,
    "detach": Choice.DETACH,
    "r": Choice.RESUME,
    "resume": Choice.RESUME,
}


def decide(answer: str | None) -> Choice | None:
    """The choice a line typed at the question makes; ``None``: ask again.

    End of input (Ctrl-D, the terminal gone) cancels, as without a terminal.
    """
    if answer is None:
        return Choice.CANCEL
    return _ANSWERS.get(answer.strip().lower())


def interactive() -> bool:
    """Someone can answer the question: stdin is a terminal."""
    try:
        return os.isatty(sys.stdin.fileno())
    except (AttributeError, ValueError, OSError):
        return False


def ctrl_c_policy() -> OnInterrupt:
    """For a job this command started: ask on a terminal, else cancel."""
    return OnInterrupt.ASK if interactive() else OnInterrupt.CANCEL


class CtrlC:
    """While a job is started or followed, SIGINT becomes an ``Interrupted`` job event.

    A second Ctrl-C before there is a job to follow cancels the command.
    """

    def __init__(self, signals: JobSignals) -> None:
        self._signals = signals
        self._task = asyncio.current_task()
        self._loop = asyncio.get_running_loop()

    def _handler(self) -> None:
        if not self._signals.interrupt() and self._task is not None:
            self._task.cancel()

    def __enter__(self) -> CtrlC:
        self._loop.add_signal_handler(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._loop.remove_signal_handler(signal.SIGINT)


class Question:
    """The Ctrl-C question on stderr; typed lines become ``Answer`` events.

    stdin is watched with ``loop.add_reader`` rather than read in a thread: the
    SIGINT handler stays in charge (a second Ctrl-C is an ``Interrupted`` event
    like the first), and nothing is left blocked in ``read`` when we are done.
    """

    def __init__(self, queue: asyncio.Queue[JobEvent], number: int) -> None:
        self._queue = queue
        self._text = QUESTION.format(number=number)
        self._fd = sys.stdin.fileno()
        self._buffer = b""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._fd, self._readable)
        self.ask()

    def ask(self) -> None:
        sys.stderr.write(self._text)
        sys.stderr.flush()

    def _readable(self) -> None:
        try:
            chunk = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._loop.remove_reader(self._fd)
            self._queue.put_nowait(Answer(None))
            return
        self._buffer += chunk
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            self._queue.put_nowait(Answer(line.decode(errors="replace")))

    def close(self, *, newline: bool = False) -> None:
        self._loop.remove_reader(self._fd)
        if newline:  # the question was not answered: end its line
            sys.stderr.write("\n")
            sys.stderr.flush()


@dataclass(frozen=True)
class Follow:
    """Where following a job ended: its last properties, whether Ctrl-C cancelled or stopped it,
    and whether we detached."""

    props: dict[str, Any]
    interrupted: bool
    detached: bool = False


async def wait_job(
    client: Client,
    path: str,
    *,
    view: JobView | None,
    on_interrupt: OnInterrupt,
) -> Follow:
    """Follow ``path`` until it has finished, Ctrl-C stops waiting, or we detach.

    Once the job is being cancelled (by Ctrl-C or the answer ``c``), another
    Ctrl-C stops waiting; during the question, Ctrl-C cancels.
    """
    signals = await client.subscribe()
    queue = signals.follow(path)
    number = job_number(path)
    cancelling = False
    question: Question | None = None

    async def cancel() -> None:
        nonlocal cancelling
        cancelling = True
        if view:
            view.note(f"Cancelling job {number} (Ctrl-C again to stop waiting)...")
        await client.cancel(path)

    def close_question(*, newline: bool) -> None:
        nonlocal question
        if question is not None:
            question.close(newline=newline)
            question = None
            if view:
                view.resume()
                view.update(props)

    props: dict[str, Any] = {}
    try:
        props = await client.job(path)
        if view:
            view.update(props)
        while props.get("State") not in output.FINISHED:
            event = await queue.get()
            if isinstance(event, Changed):
                props.update(event.properties)
                if view and question is None:
                    view.update(props)
            elif isinstance(event, Completed):
                break
            elif isinstance(event, DaemonGone):
                raise Unreachable(f"vm2kvmd stopped while job {number} was running")
            elif isinstance(event, Interrupted):
                if question is not None:  # Ctrl-C at the question: cancel
                    close_question(newline=True)
                    await cancel()
                elif cancelling or on_interrupt is OnInterrupt.STOP:
                    return Follow(props, True)
                elif on_interrupt is OnInterrupt.ASK:
                    if view:
                        view.pause()
                    question = Question(queue, number)
                else:
                    await cancel()
            elif isinstance(event, Answer) and question is not None:
                choice = decide(event.text)
                if choice is None:
                    question.ask()
                    continue
                close_question(newline=event.text is None)
                if choice is Choice.CANCEL:
                    await cancel()
                elif choice is Choice.DETACH:
                    return Follow(props, True, detached=True)
        close_question(newline=True)
        props = await client.job(path)
        if view:
            view.update(props)
        return Follow(props, cancelling)
    finally:
        if question is not None:
            question.close(newline=True)
        if view:
            view.close()


async def follow_and_report(ctx: Context, client: Client, path: str, *, on_interrupt: OnInterrupt) -> int:
    number = job_number(path)
    view = None if ctx.json else job_view(ctx.err, f"job {number}")
    followed = await wait_job(client, path, view=view, on_interrupt=on_interrupt)
    props = followed.props
    state = props.get("State", "")
    if followed.detached:
        ctx.err.print(
            f"Detached from job {number}; it goes on ({state}). vm2kvmctl watch {number} follows it again, "
            f"vm2kvmctl cancel {number} stops it.",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        return EXIT_INTERRUPTED
    if state not in output.FINISHED:  # we stopped waiting
        ctx.err.print(f"Job {number} is still {state}; vm2kvmctl watch {number} follows it again.")
        return EXIT_INTERRUPTED
    if ctx.json:
        ctx.print_json(output.job_json(path, props))
    if state == "completed":
        if not ctx.json:
            output.job_result(ctx.out, path, props)
        return EXIT_OK
    message = (props.get("Error") or ["", ""])[1] or f"job {number} {state}"
    if state == "cancelled":
        message = f"job {number} cancelled: {message}"
    error_line(message)
    return EXIT_INTERRUPTED if followed.interrupted else EXIT_FAILED
