"""The job store: a real SQLite file in a temp state directory (and the in-memory one)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.core.residue import Residue
from vm2kvmd.service.store import SCHEMA_VERSION, STORE_FILE, DiskRecord, JobRecord, JobStore, StoreError

REPO = Path(__file__).resolve().parents[2]
NOBODY = 65534


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


def _finished(store: JobStore, source: str, end: int, state: str = "completed") -> int:
    number = store.create(source, {}, 0, now_us=end - 10).number
    store.update(number, state=state, start_time=end - 5, end_time=end)
    return number


# --- round trips ---------------------------------------------------------------------------


def test_a_new_job_is_queued_and_reads_back_as_created() -> None:
    store = JobStore.open(None)
    options = MigrateOptions(
        name="web", pool="images", networks=(("VM Network", "br-lan"),), verify=True, guest_conversion=False
    ).to_mapping()
    created = store.create("/vms/web/web.vmx", options, 1000, retry_of=7, now_us=1_700_000_000_000_001)
    assert created == JobRecord(
        number=1,
        source="/vms/web/web.vmx",
        options=options,
        user=1000,
        state="queued",
        phase="",
        work_phase="",
        create_time=1_700_000_000_000_001,
        start_time=0,
        end_time=0,
        error=("", ""),
        domain="",
        outputs=(),
        notes=(),
        disks=(),
        report="",
        dismissed=False,
        retry_of=7,
    )
    assert store.get(1) == created
    # What Retry starts from: the same options.
    assert MigrateOptions.from_mapping(created.options) == MigrateOptions.from_mapping(options)
    store.close()


def test_every_field_round_trips_through_update() -> None:
    store = JobStore.open(None)
    number = store.create("/a.vmx", {"pool": "p"}, 0, now_us=1).number
    disks = (DiskRecord("scsi0:0", "/pool/a-sda.qcow2", 4 << 30, 1 << 30), DiskRecord("scsi0:1", "/b", 5, 5))
    fields: dict[str, Any] = dict(
        source="/b.vmx",
        options={"pool": "q", "network": ["a=b"], "verify": True},
        user=42,
        state="failed",
        phase="cleanup",
        work_phase="copy",
        create_time=2,
        start_time=3,
        end_time=4,
        error=("org.vm2kvm.Error.CopyFailed", "qemu-img: ünïcode 'quotes' \"and\" ; DROP TABLE jobs"),
        domain="web",
        outputs=("/pool/a-sda.qcow2", "/pool/a-sdb.qcow2"),
        notes=("note one", "note two"),
        disks=disks,
        report='{"a": 1}',
        dismissed=True,
        retry_of=3,
    )
    store.update(number, **fields)
    record = store.get(number)
    assert record is not None
    assert record == JobRecord(number=number, **fields)
    # A partial update leaves the rest alone.
    store.update(number, disks=(DiskRecord("scsi0:0", "/x", 10, 9),))
    again = store.get(number)
    assert again is not None and again.disks == (DiskRecord("scsi0:0", "/x", 10, 9),)
    assert again.error == record.error and again.dismissed


def test_update_refuses_unknown_fields_bad_states_and_options_that_are_not_json() -> None:
    store = JobStore.open(None)
    number = store.create("/a.vmx", {}, 0, now_us=1).number
    # Through a dict: mypy already rejects number= twice; this checks the refusal at run time.
    renumber: dict[str, Any] = {"number": 5}
    with pytest.raises(TypeError, match="number"):
        store.update(number, **renumber)
    with pytest.raises(TypeError, match="colour"):
        store.update(number, colour="red")
    with pytest.raises(ValueError, match="paused"):
        store.update(number, state="paused")
    with pytest.raises(ValueError, match="JSON"):
        store.create("/a.vmx", {"fd": object()}, 0, now_us=1)
    record = store.get(number)
    assert record is not None and record.state == "queued"
    # A job that is gone: nothing to update, no error (it was pruned meanwhile).
    store.update(999, state="failed")
    assert store.get(999) is None


def test_load_is_oldest_first_and_log_lines_keep_their_order() -> None:
    store = JobStore.open(None)
    numbers = [store.create(f"/vm{i}.vmx", {}, 0, now_us=100 - i).number for i in range(5)]
    assert [r.number for r in store.load()] == numbers == [1, 2, 3, 4, 5]
    assert [r.source for r in store.load()] == [f"/vm{i}.vmx" for i in range(5)]
    store.append_log(2, 20, "copy", "second")
    store.append_log(2, 10, "inspect", "first, older clock")
    store.append_log(3, 30, "copy", "another job")
    assert store.log(2) == [(20, "copy", "second"), (10, "inspect", "first, older clock")]
    assert store.log(3) == [(30, "copy", "another job")]
    assert store.log(9) == []


def test_in_memory_stores_are_separate() -> None:
    a, b = JobStore.open(None), JobStore.open(None)
    a.create("/a.vmx", {}, 0, now_us=1)
    assert [r.source for r in a.load()] == ["/a.vmx"]
    assert b.load() == []


# --- residues --------------------------------------------------------------------------------


def test_a_recorder_writes_residues_for_its_job_only() -> None:
    store = JobStore.open(None)
    one = store.create("/a.vmx", {}, 0, now_us=1).number
    two = store.create("/b.vmx", {}, 0, now_us=2).number
    rec1, rec2 = store.recorder(one), store.recorder(two)
    volume = Residue("volume", path="/pool/a.qcow2", pool="pool", name="a.qcow2", uri="qemu:///system")
    domain = Residue("domain", name="web", uri="qemu:///system", uuid="0e3b7a59-2a4d-4a5e-9a65-1d2c3b4a5f60")
    r1 = rec1.record(Residue("tree", path="/var/tmp/vm2kvm/job-1"))
    r2 = rec1.record(volume)
    r3 = rec1.record(domain)
    other = rec2.record(Residue("file", path="/out/b.xml"))
    assert store.residues(one) == [
        (r1, Residue("tree", path="/var/tmp/vm2kvm/job-1")),
        (r2, volume),
        (r3, domain),
    ]
    rec1.forget(r2)
    rec1.forget(other)  # not this job's: untouched
    assert store.residues(one) == [(r1, Residue("tree", path="/var/tmp/vm2kvm/job-1")), (r3, domain)]
    rec1.forget_all()
    assert store.residues(one) == []
    assert store.residues(two) == [(other, Residue("file", path="/out/b.xml"))]
    store.delete(two)
    assert store.residues(two) == [] and store.get(two) is None


# --- persistence -------------------------------------------------------------------------------


def test_jobs_logs_and_residues_survive_a_reopen(state_dir: Path) -> None:
    store = JobStore.open(str(state_dir))
    first = _finished(store, "/a.vmx", 100)
    running = store.create("/b.vmx", {"pool": "p"}, 1000, now_us=200).number
    store.update(
        running, state="running", phase="copy", work_phase="copy", disks=(DiskRecord("k", "/t", 9, 3),)
    )
    store.append_log(running, 201, "copy", "copying scsi0:0")
    rid = store.recorder(running).record(Residue("file", path="/out/b.raw"))
    before = store.load()
    store.close()

    store = JobStore.open(str(state_dir))
    try:
        assert store.load() == before
        assert store.log(running) == [(201, "copy", "copying scsi0:0")]
        assert store.residues(running) == [(rid, Residue("file", path="/out/b.raw"))]
        # Numbers are never given out twice, even after the newest job was deleted.
        store.delete(running)
        third = store.create("/c.vmx", {}, 0, now_us=300).number
        assert third == running + 1 and first == 1
    finally:
        store.close()


def test_the_file_is_in_wal_mode_with_our_schema_version_and_private(state_dir: Path) -> None:
    store = JobStore.open(str(state_dir))
    try:
        store.create("/a.vmx", {}, 0, now_us=1)
        path = state_dir / STORE_FILE
        assert store.path == str(path)
        assert (state_dir / f"{STORE_FILE}-wal").exists()  # written through the WAL while open
        assert os.stat(state_dir).st_mode & 0o777 == 0o700
        assert os.stat(path).st_mode & 0o777 == 0o600
        other = sqlite3.connect(path)
        try:
            assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert other.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            # A reader sees committed rows while the store stays open.
            assert other.execute("SELECT source FROM jobs").fetchall() == [("/a.vmx",)]
        finally:
            other.close()
    finally:
        store.close()


def test_prune_keeps_the_newest_finished_jobs_and_never_unfinished_ones() -> None:
    store = JobStore.open(None)
    old = _finished(store, "/old.vmx", 100)
    queued = store.create("/queued.vmx", {}, 0, now_us=150).number
    late_finisher = store.create("/late.vmx", {}, 0, now_us=160).number  # created early, finished last
    middle = _finished(store, "/middle.vmx", 300, state="failed")
    running = store.create("/running.vmx", {}, 0, now_us=350).number
    store.update(running, state="running")
    newest = _finished(store, "/newest.vmx", 400, state="cancelled")
    store.update(late_finisher, state="completed", end_time=500)
    store.append_log(old, 1, "copy", "old line")
    store.recorder(old).record(Residue("file", path="/x"))

    assert store.prune(2) == [old, middle]
    assert [r.number for r in store.load()] == [queued, late_finisher, running, newest]
    assert store.log(old) == [] and store.residues(old) == []
    assert store.prune(2) == []
    assert store.prune(0) == [late_finisher, newest]
    assert [r.number for r in store.load()] == [queued, running]
    with pytest.raises(ValueError):
        store.prune(-1)


def test_threads_write_concurrently_without_losing_anything(state_dir: Path) -> None:
    store = JobStore.open(str(state_dir))
    errors: list[BaseException] = []
    per_thread = 40

    def work(t: int) -> None:
        try:
            for i in range(per_thread):
                number = store.create(f"/t{t}/{i}.vmx", {"n": i}, t, now_us=i).number
                store.update(number, state="running", disks=(DiskRecord("k", "/x", 10, i),))
                store.append_log(number, i, "copy", f"thread {t} job {i}")
                rid = store.recorder(number).record(Residue("file", path=f"/t{t}/{i}"))
                assert store.residues(number) == [(rid, Residue("file", path=f"/t{t}/{i}"))]
                store.update(number, state="completed", end_time=i + 1)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    records = store.load()
    assert len(records) == 8 * per_thread
    assert len({r.number for r in records}) == 8 * per_thread
    assert all(r.state == "completed" for r in records)
    for record in records:
        t, i = record.user, record.options["n"]
        assert record.source == f"/t{t}/{i}.vmx"
        assert record.disks == (DiskRecord("k", "/x", 10, i),)
        assert store.log(record.number) == [(i, "copy", f"thread {t} job {i}")]
    store.close()


# --- errors opening the store ---------------------------------------------------------------------


def test_a_file_that_is_not_a_database_is_refused_with_what_to_do(state_dir: Path) -> None:
    state_dir.mkdir()
    path = state_dir / STORE_FILE
    path.write_bytes(b"this is not an SQLite file at all\n" * 200)
    with pytest.raises(StoreError) as exc:
        JobStore.open(str(state_dir))
    text = str(exc.value)
    assert str(path) in text and "not a vm2kvm job store" in text and "move it aside" in text
    assert "\n" not in text
    assert path.read_bytes().startswith(b"this is not")  # left as it was


def test_another_programs_sqlite_database_is_refused(state_dir: Path) -> None:
    state_dir.mkdir()
    other = sqlite3.connect(state_dir / STORE_FILE)
    other.execute("CREATE TABLE songs (title TEXT)")
    other.commit()
    other.close()
    with pytest.raises(StoreError, match=r"not a vm2kvm job store.*another program"):
        JobStore.open(str(state_dir))


def test_a_newer_schema_is_refused(state_dir: Path) -> None:
    JobStore.open(str(state_dir)).close()
    newer = sqlite3.connect(state_dir / STORE_FILE)
    newer.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    newer.commit()
    newer.close()
    with pytest.raises(StoreError) as exc:
        JobStore.open(str(state_dir))
    text = str(exc.value)
    assert str(state_dir / STORE_FILE) in text
    assert f"schema version {SCHEMA_VERSION + 1}, newer than this vm2kvmd knows ({SCHEMA_VERSION})" in text


def test_a_state_directory_that_cannot_be_made_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError) as exc:
        JobStore.open(str(blocker / "state"))
    assert f"cannot create the state directory {blocker / 'state'}" in str(exc.value)
    assert "--state-dir" in str(exc.value)
    with pytest.raises(StoreError, match="is not a directory"):
        JobStore.open(str(blocker))


def _open_as_nobody(state_dir: Path) -> str:
    """Open the store in a child running as an unprivileged user (root writes anywhere); its output."""
    code = (
        "import sys\n"
        "from vm2kvmd.service.store import JobStore, StoreError\n"
        "try:\n"
        "    JobStore.open(sys.argv[1]).close()\n"
        "except StoreError as exc:\n"
        "    print('StoreError:', exc)\n"
        "else:\n"
        "    print('opened')\n"
    )
    # root opens anything: run as nobody then
    nobody = NOBODY if os.geteuid() == 0 else None
    done = subprocess.run(
        [sys.executable, "-c", code, str(state_dir)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": os.environ.get("PATH", "")},
        check=True,
        timeout=60,
        user=nobody,
        group=nobody,
        extra_groups=None if nobody is None else [],
    )
    return done.stdout.strip()


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory others may enter (pytest's tmp_path sits in a root-only one)."""
    path = Path(tempfile.mkdtemp(prefix="vm2kvm-store-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def test_a_read_only_state_directory_is_refused(open_dir: Path) -> None:
    tmp_path = open_dir
    # No store yet: it cannot be created.
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o755)
    out = _open_as_nobody(empty)
    assert out.startswith("StoreError: cannot write the job store"), out
    assert str(empty / STORE_FILE) in out and "writable" in out
    # A store exists but cannot be written (nor its WAL made).
    full = tmp_path / "full"
    JobStore.open(str(full)).close()
    full.chmod(0o755)
    (full / STORE_FILE).chmod(0o644)
    out = _open_as_nobody(full)
    assert out.startswith("StoreError: cannot write the job store"), out
    assert str(full) in out
    # The file is writable but its directory is not: no WAL, no journal, no store.
    (full / STORE_FILE).chmod(0o666)
    out = _open_as_nobody(full)
    assert out.startswith("StoreError: cannot write the job store"), out
    assert "readonly database" in out or "unable to open" in out, out
    # The child could open a store it may write: the refusals above are about permissions.
    mine = tmp_path / "mine"
    mine.mkdir()
    if os.geteuid() == 0:
        os.chown(mine, NOBODY, NOBODY)
    assert _open_as_nobody(mine) == "opened"


def test_a_closed_store_says_so() -> None:
    store = JobStore.open(None)
    store.close()
    store.close()  # twice is fine
    with pytest.raises(StoreError, match="closed"):
        store.load()
