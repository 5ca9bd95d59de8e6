"""A job's log lines: "job N: ..." in the daemon's log (journal fields of the job and its phase,
MESSAGE_IDs for its start and end), and the same line without "job N: " in the job's log in
the store (``GetLog``, ``vm2kvmctl logs``).
"""

from __future__ import annotations

import logging
from typing import Final

from vm2kvmd.constants import (
    FIELD_JOB_ID,
    FIELD_PHASE,
    MESSAGE_ID_JOB_CANCELLED,
    MESSAGE_ID_JOB_FAILED,
    MESSAGE_ID_JOB_FINISHED,
    MESSAGE_ID_JOB_STARTED,
)
from vm2kvmd.service.jobs.persistence import JobPersistence
from vm2kvmd.service.jobs.state import JobState, JobStatus
from vm2kvmd.service.store import now_us

log = logging.getLogger(__name__)

END_MESSAGE_IDS: Final = {
    JobState.COMPLETED: MESSAGE_ID_JOB_FINISHED,
    JobState.FAILED: MESSAGE_ID_JOB_FAILED,
    JobState.CANCELLED: MESSAGE_ID_JOB_CANCELLED,
}


class JobLog:
    """Log lines about the job whose status is ``status``."""

    def __init__(self, status: JobStatus, persistence: JobPersistence) -> None:
        self.status = status
        self.persistence = persistence

    def line(self, level: int, fmt: str, *args: object, message_id: str | None = None) -> None:
        status = self.status
        extra = {FIELD_JOB_ID: str(status.number), FIELD_PHASE: status.phase}
        if message_id is not None:
            extra["MESSAGE_ID"] = message_id
        log.log(level, "job %d: " + fmt, status.number, *args, extra=extra)
        self.persistence.log_line(now_us(), status.phase, fmt % args)

    def started(self) -> None:
        self.line(logging.INFO, "migrating %s", self.status.source, message_id=MESSAGE_ID_JOB_STARTED)

    def finished(self) -> None:
        status = self.status
        message_id = END_MESSAGE_IDS[status.state]
        if status.state is JobState.COMPLETED:
            self.line(logging.INFO, "%s", status.end_message(), message_id=message_id)
        else:
            level = logging.WARNING if status.state is JobState.FAILED else logging.INFO
            self.line(level, "%s: %s", status.state.value, status.end_message(), message_id=message_id)
