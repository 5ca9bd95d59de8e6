"""Following a job on screen: rich bars on a terminal, plain lines otherwise."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Protocol

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from vm2kvmd.core.units import size_text


class JobView(Protocol):
    def update(self, props: Mapping[str, Any]) -> None: ...
    def note(self, text: str) -> None: ...
    def pause(self) -> None: ...  # a question is asked on the terminal: stop drawing
    def resume(self) -> None: ...
    def close(self) -> None: ...


def state_text(props: Mapping[str, Any]) -> str:
    """ "running, phase copy", "queued, position 2", or the state alone."""
    state, phase = props.get("State", ""), props.get("Phase", "")
    if state == "running" and phase:
        return f"{state}, phase {phase}"
    if state == "queued" and props.get("QueuePosition"):
        return f"{state}, position {props['QueuePosition']}"
    return str(state)


class PlainView:
    """For logs and pipes: a line per phase, per disk, and per 10% of copying."""

    def __init__(self, console: Console, label: str) -> None:
        self._console = console
        self._label = label
        self._phase = ""
        self._disks = 0
        self._decile = -1
        self._queued = 0

    def _line(self, text: str) -> None:
        self._console.print(f"{self._label}: {text}", highlight=False, markup=False, soft_wrap=True)

    def update(self, props: Mapping[str, Any]) -> None:
        position = props.get("QueuePosition", 0) if props.get("State") == "queued" else 0
        if position and position != self._queued:
            self._line(state_text(props))
        self._queued = position
        # One PropertiesChanged can carry the end of a phase (disks, progress) and
        # the next phase, which the daemon flushes at once: report in that order.
        disks = props.get("Disks", [])
        for key, target, total, _done in disks[self._disks :]:
            self._line(f"disk {key} -> {target} ({size_text(total)})")
        self._disks = max(self._disks, len(disks))
        if props.get("ProgressValid") and props.get("State") == "running":
            decile = int(props.get("Progress", 0.0) * 10)
            if decile > self._decile:
                self._decile = decile
                done, total = size_text(props.get("BytesDone")), size_text(props.get("Bytes"))
                self._line(f"copied {decile * 10}% ({done} of {total})")
        phase = props.get("Phase", "")
        if phase and phase != self._phase:
            self._phase = phase
            self._line(f"phase {phase}")

    def note(self, text: str) -> None:
        self._line(text)

    def pause(self) -> None:
        pass

    def resume(self) -> None:
        pass

    def close(self) -> None:
        pass


class _BinarySpeedColumn(ProgressColumn):
    """Rate in KiB/MiB per second, like the sizes beside it (rich's own column is decimal)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("?" if speed is None else f"{size_text(speed)}/s", style="progress.data.speed")


class _Status:
    """The line above the bars; re-rendered on every refresh."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.text = "waiting"

    def __rich__(self) -> RenderableType:
        return Text.assemble((self.label, "bold"), ": ", self.text)


class BarsView:
    """For a terminal: the phase, then one bar per disk with size, rate and time left."""

    def __init__(self, console: Console, label: str) -> None:
        self._status = _Status(label)
        self._progress = Progress(
            TextColumn("  {task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            DownloadColumn(binary_units=True),
            _BinarySpeedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self._tasks: list[TaskID] = []
        self._live = Live(Group(self._status, self._progress), console=console, refresh_per_second=8)
        self._live.start()

    def update(self, props: Mapping[str, Any]) -> None:
        self._status.text = state_text(props)
        for index, (key, target, total, done) in enumerate(props.get("Disks", [])):
            if index == len(self._tasks):
                name = f"{key} -> {os.path.basename(target)}"
                self._tasks.append(self._progress.add_task(name, total=total))
            self._progress.update(self._tasks[index], completed=done, total=total)
        self._live.refresh()

    def note(self, text: str) -> None:
        self._live.console.print(text, highlight=False, markup=False)

    def pause(self) -> None:
        self._live.stop()

    def resume(self) -> None:
        self._live.start()

    def close(self) -> None:
        self._live.stop()


def job_view(console: Console, label: str) -> JobView:
    if console.is_terminal:
        return BarsView(console, label)
    return PlainView(console, label)
