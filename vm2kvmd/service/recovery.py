"""At start: the jobs an earlier daemon left queued or running (SIGKILL, power loss) fail as interrupted.

A running migration writes down everything it creates before creating it
(``pipeline.rollback``); a daemon that died ran no rollback, so the records
are all that is left of its work.  ``recover`` undoes them newest first
(``undo_residue``: what is already gone is fine, a domain whose UUID is no
longer ours is left alone), clears them, and marks the job failed with
``org.vm2kvm.Error.Interrupted``.  Queued jobs fail the same way: they are not
restarted behind the admin's back, ``vm2kvmctl retry N`` starts one again.

Blocking; vm2kvmd runs it before it owns its bus name, so no caller sees a
job that is still being recovered.  The daemon's state-directory lock keeps a
second vm2kvmd from running it under a live one.

A job that failed while libvirtd was away past its bound may have left what
only libvirt can remove (a domain, a logical volume): its rollback kept those
records.  ``sweep_leftovers`` tries them again, at start and whenever a
Migrate finds libvirtd reachable; each success is written to that job's log.
"""

from __future__ import annotations

from vm2kvmd.constants import error_name
from vm2kvmd.errors import ErrorCode
from vm2kvmd.service.store import JobRecord, JobStore, now_us

__all__ = ["recover", "sweep_leftovers"]

_UNFINISHED = ("queued", "running")


def recover(store: JobStore) -> list[str]:
    """Fail every queued or running job of ``store`` as interrupted, removing what it created.

    Returns log lines for the daemon's log ("job N: ..."); the job's own log
    gets the same lines.
    """
    lines: list[str] = []
    for record in store.load():
        if record.state in _UNFINISHED:
            lines += _recover_job(store, record)
    return lines + sweep_leftovers(store)


def sweep_leftovers(store: JobStore) -> list[str]:
    """Remove what finished jobs could not remove (blocking); returns log lines, as ``recover``."""
    numbers = store.jobs_with_residues()
    if not numbers:
        return []
    from vm2kvmd.pipeline.rollback import remove_residue

    lines: list[str] = []
    for number in numbers:
        record = store.get(number)
        if record is None or record.state not in ("failed", "cancelled"):
            continue  # a running job's records are its own; a completed job's outputs its result
        for rid, residue in reversed(store.residues(number)):
            ok, line = remove_residue(residue)
            if ok:
                store.remove_residues(number, rid)
                store.append_log(number, now_us(), "cleanup", line)
            lines.append(f"job {number}: {line}")
    return lines


def _recover_job(store: JobStore, record: JobRecord) -> list[str]:
    # Only here, when there is something to undo: the pipeline (and libvirt) cost a daemon
    # that has nothing to recover 20 MiB of memory.
    from vm2kvmd.pipeline.rollback import remove_residue

    number = record.number
    lines: list[str] = []
    complete = True
    for _rid, residue in reversed(store.residues(number)):
        ok, line = remove_residue(residue)
        complete = complete and ok
        lines.append(line)
        store.append_log(number, now_us(), "cleanup", line)
    store.remove_residues(number)
    message = _message(record, complete=complete)
    end = now_us()
    store.update(number, state="failed", error=(error_name(ErrorCode.INTERRUPTED), message), end_time=end)
    store.append_log(number, end, record.phase, message)
    return [f"job {number}: {line}" for line in lines] + [f"job {number}: marked failed: {message}"]


def _message(record: JobRecord, *, complete: bool) -> str:
    retry = f"vm2kvmctl retry {record.number} starts it again"
    if record.state == "queued":
        return f"interrupted before it started: vm2kvmd stopped while the job was queued; {retry}"
    phase = record.work_phase or record.phase
    where = f"in phase {phase}" if phase else "starting"
    if complete:
        cleaned = "everything it created was removed"
    else:
        cleaned = f"some of what it created could not be removed (vm2kvmctl logs {record.number} says what)"
    return f"interrupted: vm2kvmd stopped while the job was {where}; {cleaned}; {retry}"
