"""One job's log lines: from journald, or from the daemon's job store.

The journal has everything vm2kvmd logged about the job (with its
``VM2KVM_JOB_ID`` field); the store keeps the same lines as long as the job is
kept, and is what is left when there is no journald (containers, a daemon
started by hand) or the caller may not read the system journal.  Reading the
journal is blocking: callers run it in a thread.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from vm2kvmd.constants import FIELD_JOB_ID, FIELD_PHASE

SYSLOG_IDENTIFIER: Final = "vm2kvmd"


@dataclass(frozen=True)
class LogLine:
    time: int  # µs since the epoch
    phase: str
    message: str

    def text(self) -> str:
        """``YYYY-mm-dd HH:MM:SS [phase] message`` in local time."""
        when = dt.datetime.fromtimestamp(self.time / 1_000_000).strftime("%Y-%m-%d %H:%M:%S")
        return f"{when} [{self.phase or '-'}] {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {"time": self.time, "phase": self.phase, "message": self.message}


class JournalUnavailable(Exception):
    """The journal cannot be read here; the message says why (one line)."""


def from_store(lines: Iterable[tuple[int, str, str]]) -> list[LogLine]:
    return [LogLine(int(t), phase, message) for t, phase, message in lines]


def _message(number: int, text: str) -> str:
    # The daemon's log lines say which job they are about; here that is known.
    prefix = f"job {number}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def entry_line(number: int, entry: dict[str, Any]) -> LogLine:
    return LogLine(
        int(entry["__REALTIME_TIMESTAMP"]),
        str(entry.get(FIELD_PHASE, "")),
        _message(number, str(entry.get("MESSAGE", ""))),
    )


def open_journal(number: int, since: int, namespace: str | None = None) -> Any:
    """A ``systemd.journal.Reader`` at the job's first entry: on the system journal, or on the
    journal namespace vm2kvmd logs to (its unit's ``LogNamespace=``)."""
    try:
        from systemd import journal
    except ImportError:
        raise JournalUnavailable("python3-systemd is not installed") from None
    where: dict[str, Any] = {"namespace": namespace} if namespace else {"flags": journal.SYSTEM}
    try:
        reader = journal.Reader(converters={"__REALTIME_TIMESTAMP": int}, **where)
    except OSError as exc:
        what = f"journal namespace {namespace}" if namespace else "system journal"
        raise JournalUnavailable(f"cannot open the {what}: {exc.strerror or exc}") from None
    reader.add_match(SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER, **{FIELD_JOB_ID: str(number)})
    if since:
        # Job numbers start again at 1 when the state directory is wiped: an older
        # job of the same number is in the journal before this one was created.
        reader.seek_realtime((since - 1_000_000) / 1_000_000)  # float seconds; exact filter below
    return reader


def read_entries(reader: Any, number: int, since: int) -> list[LogLine]:
    """The entries from the reader's position on (blocking)."""
    lines = []
    for entry in reader:
        line = entry_line(number, entry)
        if line.time >= since:
            lines.append(line)
    return lines
