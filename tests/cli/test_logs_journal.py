"""``vm2kvmctl logs --source journal`` against a real journald.

There is no system journald in the test container, and the tests must not start
one (every vm2kvmd started meanwhile would log to it).  So each test runs its
own journald *namespace* instance (``systemd-journald NAMESPACE``, as systemd
runs one for ``LogNamespace=``): it has its own socket and journal files, which
are removed afterwards.  The in-process daemon's log records go to it with the
fields the installed daemon's ``JournalHandler`` sends, and vm2kvmctl reads it
with ``--journal-namespace``: journald, the reader, the matches and the time
filter are all real.  Skipped, with the reason, where journald or
python3-systemd are missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import struct
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_cli import ctl, first_line_then_finish, start_ctl
from tests.service.support import ScriptedRunner, serve_daemon

JOURNALD = Path("/lib/systemd/systemd-journald")
MACHINE_ID = Path("/etc/machine-id")


def native_datagram(fields: dict[str, str]) -> bytes:
    """journald's native protocol: ``KEY=value`` lines, or a length-prefixed value when it has a newline."""
    out = bytearray()
    for key, value in fields.items():
        data = value.encode()
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


class NamespaceHandler(logging.Handler):
    """What ``systemd.journal.JournalHandler`` sends, to a journald namespace's socket."""

    def __init__(self, socket_path: str) -> None:
        super().__init__()
        self._path = socket_path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        # Records come from the event loop: never block it (a full journald queue drops one).
        self._sock.setblocking(False)

    def emit(self, record: logging.LogRecord) -> None:
        fields = {
            "MESSAGE": self.format(record),
            "PRIORITY": "6",
            "SYSLOG_IDENTIFIER": "vm2kvmd",
            "LOGGER": record.name,
        }
        fields.update({k: str(v) for k, v in record.__dict__.items() if k.isupper()})
        try:
            self._sock.sendto(native_datagram(fields), self._path)
        except OSError:
            self.handleError(record)

    def close(self) -> None:
        self._sock.close()
        super().close()


@pytest.fixture
def journal_namespace() -> Iterator[str]:
    """A running journald namespace instance of our own; its name."""
    try:
        from systemd import journal  # noqa: F401
    except ImportError:
        pytest.skip("python3-systemd is not installed: vm2kvmctl cannot read a journal here")
    if not JOURNALD.exists() or not MACHINE_ID.exists():
        pytest.skip(f"no journald to start here ({JOURNALD} or {MACHINE_ID} missing)")
    if os.geteuid() != 0:
        pytest.skip("starting a journald namespace instance needs root")
    namespace = f"vm2kvmtest{uuid.uuid4().hex[:10]}"
    run_dir = Path(f"/run/systemd/journal.{namespace}")
    machine = MACHINE_ID.read_text().strip()
    stores = [
        Path(f"/var/log/journal/{machine}.{namespace}"),
        Path(f"/run/log/journal/{machine}.{namespace}"),
    ]
    proc = subprocess.Popen(
        [str(JOURNALD), namespace], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        socket_path = run_dir / "socket"
        for _attempt in range(100):
            if socket_path.exists() or proc.poll() is not None:
                break
            time.sleep(0.05)
        if not socket_path.exists():
            why = proc.stderr.read() if proc.stderr else ""
            pytest.skip(f"journald did not start a namespace instance here: {why}")
        yield namespace
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
        for path in (run_dir, *stores):
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def daemon_logs_to(journal_namespace: str) -> Iterator[str]:
    """vm2kvmd's records (INFO and up) go to the namespace journald; its name."""
    handler = NamespaceHandler(f"/run/systemd/journal.{journal_namespace}/socket")
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("vm2kvmd")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield journal_namespace
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        handler.close()


async def journal_run(address: str, namespace: str, *args: str) -> list[str]:
    """``logs ... --source journal`` until journald has written what was sent (it is asynchronous)."""
    for _attempt in range(50):
        run = await ctl(address, "logs", *args, "--source", "journal", "--journal-namespace", namespace)
        if run.status == 0 and run.out:
            return run.out.splitlines()
        await asyncio.sleep(0.2)
    raise AssertionError(f"nothing from the journal: {run.err}")


async def test_logs_from_a_real_journal(private_bus: str, daemon_logs_to: str) -> None:
    namespace = daemon_logs_to
    # An older "job 1" (numbers start again when the state directory is wiped): not this job's.
    logging.getLogger("vm2kvmd.service.jobs.log").info(
        "job 1: from an earlier life", extra={"VM2KVM_JOB_ID": "1", "VM2KVM_PHASE": "copy"}
    )
    await asyncio.sleep(0.5)  # received (and so timed by journald) before job 1 is created
    async with serve_daemon(private_bus, runner=ScriptedRunner(steps=2)):
        await ctl(private_bus, "migrate", "/vms/a.vmx")
        await ctl(private_bus, "migrate", "/vms/b.vmx")
        lines = await journal_run(private_bus, namespace, "1")
        second = await journal_run(private_bus, namespace, "2", "--json")
        store = await ctl(private_bus, "logs", "1", "--source", "store")
        auto = await ctl(private_bus, "logs", "1", "--journal-namespace", namespace)
    # The same "[phase] message" as the store has (the times differ by microseconds).
    assert [line.split(" ", 2)[2] for line in lines] == [
        line.split(" ", 2)[2] for line in store.out.splitlines()
    ]
    assert not any("earlier life" in line for line in lines)
    assert any(line.endswith("[copy] copying") for line in lines)
    assert any("migrating /vms/b.vmx" in line for line in second)
    assert auto.out == "\n".join(lines) + "\n"  # auto: the journal, as it has the job's lines


async def test_follow_the_journal(private_bus: str, daemon_logs_to: str) -> None:
    namespace = daemon_logs_to
    hold = asyncio.Event()
    runner = ScriptedRunner(hold=hold, steps=2)
    async with serve_daemon(private_bus, runner=runner):
        await ctl(private_bus, "migrate", "/vms/a.vmx", "--detach")
        await runner.copying.wait()
        before = await journal_run(private_bus, namespace, "1")
        proc = await start_ctl(
            private_bus, "logs", "1", "-f", "--source", "journal", "--journal-namespace", namespace
        )
        first, run = await first_line_then_finish(proc, hold)
    assert run.status == 0, run.err
    lines = [first.rstrip("\n"), *run.out.splitlines()]
    assert lines[: len(before)] == before
    assert any(line.endswith("[define] phase define") for line in lines[len(before) :])
    assert len(lines) == len(set(lines))
