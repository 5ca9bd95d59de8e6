"""The job store: every job, its log and what a running job created, in one SQLite file.

``<state_dir>/jobs.sqlite3`` (default ``/var/lib/vm2kvm``, ``vm2kvmd
--state-dir``), the directory created 0700 and the file 0600: source paths
and domain names are nobody else's business.  stdlib ``sqlite3``, in WAL mode
with ``synchronous=NORMAL``: a power loss may lose the last few progress
updates but never corrupts the file, and readers never wait for the writer.
Residue records are the exception: they are committed with a full sync, as
they must be on disk before the thing they describe is created.

Tables (``PRAGMA user_version`` = ``SCHEMA_VERSION``; ``application_id``
marks the file as ours):

* ``jobs``: one row per job (``JobRecord``); ``number`` is AUTOINCREMENT, so
  a number is never given out twice, even after its job was pruned (job
  object paths and ``RetryOf`` stay unambiguous);
* ``job_log``: the job's log lines (``GetLog``, ``vm2kvmctl logs``);
* ``residues``: what a queued or running job has created so far
  (``pipeline.rollback.Residue``), removed at the next start if the daemon
  dies (``service.recovery``).

One connection shared by all threads behind one lock: the daemon writes a
few rows a second (progress is batched by the job), far below what that
serialises.  Opening errors are ``StoreError``, whose text is the one line the
admin reads: the file, what is wrong, what to do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vm2kvmd.constants import DEFAULT_CONFIG_PATH
from vm2kvmd.core.residue import Residue, ResidueRecorder
from vm2kvmd.errors import ErrorCode, Vm2kvmError

__all__ = ["SCHEMA_VERSION", "STORE_FILE", "DiskRecord", "JobRecord", "JobStore", "StoreError", "now_us"]

STORE_FILE = "jobs.sqlite3"
SCHEMA_VERSION = 1
# PRAGMA application_id: "vm2k".  Tells our file from any other SQLite database.
APPLICATION_ID = 0x766D326B
FINISHED_STATES = ("completed", "failed", "cancelled")
STATES = ("queued", "running", *FINISHED_STATES)

_SCHEMA = """
CREATE TABLE jobs (
    number INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    options TEXT NOT NULL,               -- JSON object: MigrateOptions.to_mapping()
    user INTEGER NOT NULL,
    state TEXT NOT NULL,
    phase TEXT NOT NULL DEFAULT '',
    work_phase TEXT NOT NULL DEFAULT '',
    create_time INTEGER NOT NULL,        -- µs since the epoch, 0 = not yet
    start_time INTEGER NOT NULL DEFAULT 0,
    end_time INTEGER NOT NULL DEFAULT 0,
    error_name TEXT NOT NULL DEFAULT '',
    error_message TEXT NOT NULL DEFAULT '',
    domain TEXT NOT NULL DEFAULT '',
    outputs TEXT NOT NULL DEFAULT '[]',  -- JSON list of paths
    notes TEXT NOT NULL DEFAULT '[]',    -- JSON list of strings
    disks TEXT NOT NULL DEFAULT '[]',    -- JSON list of [key, target, total, done]
    report TEXT NOT NULL DEFAULT '',     -- JSON text or ''
    dismissed INTEGER NOT NULL DEFAULT 0,
    retry_of INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE job_log (
    id INTEGER PRIMARY KEY,
    job INTEGER NOT NULL,
    time INTEGER NOT NULL,
    phase TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX job_log_job ON job_log (job, id);
CREATE TABLE residues (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job INTEGER NOT NULL,
    residue TEXT NOT NULL                -- JSON object: the fields of a Residue
);
CREATE INDEX residues_job ON residues (job, id);
"""

_JOB_COLUMNS = (
    "number, source, options, user, state, phase, work_phase, create_time, start_time, end_time, "
    "error_name, error_message, domain, outputs, notes, disks, report, dismissed, retry_of"
)


def now_us() -> int:
    """Wall-clock time in µs since the epoch: the unit of every time in a record (and property)."""
    return time.time_ns() // 1000


class StoreError(Exception):
    """The job store cannot be used; the text is one line for the admin (file, problem, remedy)."""


@dataclass(frozen=True)
class DiskRecord:
    key: str
    target: str
    total: int
    done: int


@dataclass(frozen=True)
class JobRecord:
    number: int
    source: str
    options: Mapping[str, Any]  # MigrateOptions.to_mapping(), never secrets
    user: int
    state: str
    phase: str
    work_phase: str
    create_time: int  # µs since the epoch, 0 = not yet
    start_time: int
    end_time: int
    error: tuple[str, str]  # (D-Bus error name, message); ("", "") = none
    domain: str
    outputs: tuple[str, ...]
    notes: tuple[str, ...]
    disks: tuple[DiskRecord, ...]
    report: str  # JSON text or ""
    dismissed: bool
    retry_of: int


_UPDATABLE = frozenset(f.name for f in dataclasses.fields(JobRecord)) - {"number"}


class JobStore:
    """See the module docstring.  Every method is thread-safe and blocking (a few ms at most)."""

    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        """Use ``open``."""
        self._conn: sqlite3.Connection | None = conn
        self._lock = threading.RLock()
        self.path = path  # the file, or ":memory:"

    @classmethod
    def open(cls, state_dir: str | None) -> JobStore:
        """The store in ``state_dir`` (created 0700 if missing); ``None``: a fresh one in memory.

        Raises ``StoreError`` when the directory or file cannot be used.
        """
        if state_dir is None:
            conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
            _set_up(conn, ":memory:")
            return cls(conn, ":memory:")
        path = os.path.join(state_dir, STORE_FILE)
        _make_state_dir(state_dir)
        try:
            # Made 0600 before SQLite creates it with the umask's mode.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
            conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as err:
            raise _unusable(path, state_dir, err) from err
        try:
            _set_up(conn, path)
        except BaseException:
            conn.close()
            raise
        return cls(conn, path)

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # --- jobs ----------------------------------------------------------------------

    def create(
        self,
        source: str,
        options: Mapping[str, Any],
        user: int,
        *,
        retry_of: int = 0,
        now_us: int,
    ) -> JobRecord:
        """A new job, state "queued", numbered after every job this store ever held."""
        # Options are MigrateOptions.to_mapping(): strings, booleans and lists of strings.
        # They hold no secret today; a future secret (a password for a network source)
        # travels as a file descriptor and must never be put here.
        text = _json(dict(options), "options")
        with self._locked() as conn:
            cursor = conn.execute(
                "INSERT INTO jobs (source, options, user, state, create_time, retry_of) "
                "VALUES (?, ?, ?, 'queued', ?, ?)",
                (source, text, int(user), int(now_us), int(retry_of)),
            )
            number = cursor.lastrowid
        assert number is not None
        record = self.get(number)
        assert record is not None
        return record

    def update(self, number: int, **fields: Any) -> None:
        """Set ``fields`` (any ``JobRecord`` field but ``number``); nothing if there is no such job."""
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise TypeError(f"JobStore.update: no such field(s): {', '.join(sorted(unknown))}")
        if not fields:
            return
        columns: list[str] = []
        values: list[Any] = []
        for name, value in fields.items():
            for column, encoded in _encode(name, value):
                columns.append(f"{column} = ?")
                values.append(encoded)
        with self._transaction() as conn:
            conn.execute(f"UPDATE jobs SET {', '.join(columns)} WHERE number = ?", (*values, int(number)))
            if fields.get("state") == "completed":
                # In the same transaction: a completed job's outputs are its result, and a
                # crash between "forget what we made" and "completed" must not leave a job
                # that recovery would fail as interrupted (or worse, undo).  A failed or
                # cancelled job's rollback forgot what it removed; what it could not remove
                # (libvirtd away) stays for service.recovery.sweep_leftovers.
                conn.execute("DELETE FROM residues WHERE job = ?", (int(number),))

    def get(self, number: int) -> JobRecord | None:
        with self._locked() as conn:
            row = conn.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE number = ?", (int(number),)).fetchone()
        return _record(row) if row is not None else None

    def load(self) -> list[JobRecord]:
        """Every job, oldest first."""
        with self._locked() as conn:
            rows = conn.execute(f"SELECT {_JOB_COLUMNS} FROM jobs ORDER BY number").fetchall()
        return [_record(row) for row in rows]

    def delete(self, number: int) -> None:
        """The job's record, log and residue records."""
        with self._transaction() as conn:
            _delete(conn, [int(number)])

    def prune(self, keep: int) -> list[int]:
        """Keep the newest ``keep`` finished jobs (by end time); returns the numbers deleted, ascending.

        Queued and running jobs are never pruned.
        """
        if keep < 0:
            raise ValueError(f"JobStore.prune: keep must be >= 0, not {keep}")
        marks = ", ".join("?" * len(FINISHED_STATES))
        with self._transaction() as conn:
            rows = conn.execute(
                f"SELECT number FROM jobs WHERE state IN ({marks}) "
                "ORDER BY end_time DESC, number DESC LIMIT -1 OFFSET ?",
                (*FINISHED_STATES, int(keep)),
            ).fetchall()
            numbers = sorted(int(r[0]) for r in rows)
            _delete(conn, numbers)
        return numbers

    # --- the job's log ---------------------------------------------------------------

    def append_log(self, number: int, time_us: int, phase: str, message: str) -> None:
        with self._locked() as conn:
            conn.execute(
                "INSERT INTO job_log (job, time, phase, message) VALUES (?, ?, ?, ?)",
                (int(number), int(time_us), phase, message),
            )

    def log(self, number: int) -> list[tuple[int, str, str]]:
        """(time µs, phase, message), in the order they were appended."""
        with self._locked() as conn:
            rows = conn.execute(
                "SELECT time, phase, message FROM job_log WHERE job = ? ORDER BY id", (int(number),)
            ).fetchall()
        return [(int(t), str(p), str(m)) for t, p, m in rows]

    # --- residues ----------------------------------------------------------------------

    def recorder(self, number: int) -> ResidueRecorder:
        """Where job ``number``'s migration writes down what it creates (``pipeline.rollback``)."""
        return _Recorder(self, int(number))

    def residues(self, number: int) -> list[tuple[int, Residue]]:
        """(id, residue) of job ``number``, oldest first."""
        with self._locked() as conn:
            rows = conn.execute(
                "SELECT id, residue FROM residues WHERE job = ? ORDER BY id", (int(number),)
            ).fetchall()
        return [(int(rid), _residue(text)) for rid, text in rows]

    def jobs_with_residues(self) -> list[int]:
        """Numbers of the jobs that have residue records, oldest first."""
        with self._locked() as conn:
            rows = conn.execute("SELECT DISTINCT job FROM residues ORDER BY job").fetchall()
        return [int(row[0]) for row in rows]

    def add_residue(self, number: int, residue: Residue) -> int:
        """Write ``residue`` down for job ``number``, on disk when this returns; its id."""
        text = _json(dataclasses.asdict(residue), "residue")
        with self._locked() as conn:
            # Fully synced: the record must survive a power loss that the created thing survives.
            conn.execute("PRAGMA synchronous = FULL")
            try:
                cursor = conn.execute("INSERT INTO residues (job, residue) VALUES (?, ?)", (number, text))
            finally:
                conn.execute("PRAGMA synchronous = NORMAL")
        assert cursor.lastrowid is not None
        return int(cursor.lastrowid)

    def remove_residues(self, number: int, rid: int | None = None) -> None:
        """Forget residue ``rid`` of job ``number`` (all of them with ``None``)."""
        with self._locked() as conn:
            if rid is None:
                conn.execute("DELETE FROM residues WHERE job = ?", (number,))
            else:
                conn.execute("DELETE FROM residues WHERE job = ? AND id = ?", (number, int(rid)))

    # --- internals -------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn is None:
                raise StoreError(f"the job store {self.path} is closed")
            yield self._conn

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._locked() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")


class _Recorder:
    """``ResidueRecorder`` of one job; a ``Vm2kvmError`` when the store cannot write."""

    def __init__(self, store: JobStore, number: int) -> None:
        self._store = store
        self._number = number

    def record(self, residue: Residue) -> int:
        try:
            return self._store.add_residue(self._number, residue)
        except (sqlite3.Error, StoreError) as err:
            # Nothing is created that a crash could leave behind unrecorded: the job fails here.
            full = getattr(err, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
            raise Vm2kvmError(
                ErrorCode.NO_SPACE if full else ErrorCode.INTERNAL,
                f"cannot record {residue.describe()} in the job store before creating it: {err}",
                file=self._store.path,
            ) from err

    def forget(self, rid: int) -> None:
        self._store.remove_residues(self._number, rid)

    def forget_all(self) -> None:
        self._store.remove_residues(self._number)


# --- opening -----------------------------------------------------------------------------


def _make_state_dir(state_dir: str) -> None:
    if not os.path.lexists(state_dir):
        try:
            os.makedirs(state_dir, mode=0o700, exist_ok=True)
        except OSError as err:
            raise StoreError(
                f"cannot create the state directory {state_dir}: {err.strerror}; create it (owned by "
                f"root, mode 0700) or set state_dir in {DEFAULT_CONFIG_PATH} (vm2kvmd --state-dir) to a "
                "writable directory"
            ) from err
    if not os.path.isdir(state_dir):
        raise StoreError(
            f"the state directory {state_dir} is not a directory; move it aside or set state_dir in "
            f"{DEFAULT_CONFIG_PATH} (vm2kvmd --state-dir) to another directory"
        )


def _set_up(conn: sqlite3.Connection, path: str) -> None:
    """WAL, synchronous=NORMAL, the schema; refuses a file that is not ours or is newer."""
    state_dir = os.path.dirname(path)
    try:
        application_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        tables = int(conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0])
    except sqlite3.DatabaseError as err:
        if isinstance(err, sqlite3.OperationalError):
            raise _unusable(path, state_dir, err) from err
        raise _not_ours(path, str(err)) from err
    if tables and application_id != APPLICATION_ID:
        raise _not_ours(path, "an SQLite database of another program")
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"the job store {path} has schema version {version}, newer than this vm2kvmd knows "
            f"({SCHEMA_VERSION}): a newer vm2kvm wrote it; install that version again, or move the file "
            "aside (with its -wal and -shm files) to start with an empty job store"
        )
    try:
        if path != ":memory:":
            mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            if mode.lower() != "wal":
                raise sqlite3.OperationalError(f"the file system does not support WAL (journal mode {mode})")
        conn.execute("PRAGMA synchronous = NORMAL")
        # A write lock now: a read-only file or directory shows here, not at the first job.
        conn.execute("BEGIN IMMEDIATE")
        try:
            if version == 0:
                # One statement at a time: executescript would commit the write lock's transaction.
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        if conn.in_transaction:
            conn.execute("COMMIT")
    except sqlite3.DatabaseError as err:
        raise _unusable(path, state_dir, err) from err


def _not_ours(path: str, reason: str) -> StoreError:
    return StoreError(
        f"{path} is not a vm2kvm job store ({reason}); move it aside (with any -wal and -shm files next "
        "to it) and start vm2kvmd again to begin with an empty job store"
    )


def _unusable(path: str, state_dir: str, err: BaseException) -> StoreError:
    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    return StoreError(
        f"cannot write the job store {path}: {reason}; make {state_dir} and the files in it writable "
        f"for vm2kvmd (root), or set state_dir in {DEFAULT_CONFIG_PATH} (vm2kvmd --state-dir) to a "
        "writable directory"
    )


# --- rows ----------------------------------------------------------------------------------


def _json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as err:
        raise ValueError(f"the job's {what} cannot be stored as JSON: {err}") from err


def _encode(name: str, value: Any) -> list[tuple[str, Any]]:
    """(column, value) pairs of one ``JobRecord`` field."""
    if name == "error":
        error_name, message = value
        return [("error_name", str(error_name)), ("error_message", str(message))]
    if name == "options":
        return [("options", _json(dict(value), "options"))]
    if name in ("outputs", "notes"):
        return [(name, _json([str(v) for v in value], name))]
    if name == "disks":
        return [("disks", _json([list(dataclasses.astuple(_disk(d))) for d in value], name))]
    if name == "dismissed":
        return [(name, int(bool(value)))]
    if name in ("user", "create_time", "start_time", "end_time", "retry_of"):
        return [(name, int(value))]
    if name == "state" and value not in STATES:
        raise ValueError(f"JobStore.update: state {value!r} is not one of {', '.join(STATES)}")
    return [(name, str(value))]


def _disk(value: Any) -> DiskRecord:
    if isinstance(value, DiskRecord):
        return value
    if isinstance(value, Mapping):
        return DiskRecord(str(value["key"]), str(value["target"]), int(value["total"]), int(value["done"]))
    key, target, total, done = value
    return DiskRecord(str(key), str(target), int(total), int(done))


def _record(row: Sequence[Any]) -> JobRecord:
    (
        number,
        source,
        options,
        user,
        state,
        phase,
        work_phase,
        create_time,
        start_time,
        end_time,
        error_name,
        error_message,
        domain,
        outputs,
        notes,
        disks,
        report,
        dismissed,
        retry_of,
    ) = row
    return JobRecord(
        number=int(number),
        source=str(source),
        options=json.loads(options),
        user=int(user),
        state=str(state),
        phase=str(phase),
        work_phase=str(work_phase),
        create_time=int(create_time),
        start_time=int(start_time),
        end_time=int(end_time),
        error=(str(error_name), str(error_message)),
        domain=str(domain),
        outputs=tuple(json.loads(outputs)),
        notes=tuple(json.loads(notes)),
        disks=tuple(_disk(d) for d in json.loads(disks)),
        report=str(report),
        dismissed=bool(dismissed),
        retry_of=int(retry_of),
    )


def _residue(text: str) -> Residue:
    data = json.loads(text)
    known = {f.name for f in dataclasses.fields(Residue)}
    # Fields a newer version added are dropped; missing ones take their defaults.
    return Residue(**{k: str(v) for k, v in data.items() if k in known})


def _delete(conn: sqlite3.Connection, numbers: Sequence[int]) -> None:
    for number in numbers:
        conn.execute("DELETE FROM jobs WHERE number = ?", (number,))
        conn.execute("DELETE FROM job_log WHERE job = ?", (number,))
        conn.execute("DELETE FROM residues WHERE job = ?", (number,))
