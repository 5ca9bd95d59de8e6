"""Child processes of the test session: the service registry, stopping by PID, leak checks."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterable
from pathlib import Path

_service_pids: set[int] = set()


def service_pids() -> frozenset[int]:
    """PIDs of the long-lived services this process started (bus, virtlogd, libvirtd)."""
    return frozenset(_service_pids)


def register_service(pid: int) -> None:
    _service_pids.add(pid)


def forget_service(pid: int) -> None:
    _service_pids.discard(pid)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; always reaped."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
    _service_pids.discard(proc.pid)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def child_pids(parent: int | None = None) -> set[int]:
    """Direct children of ``parent`` (default: this process), zombies included."""
    parent = os.getpid() if parent is None else parent
    children: set[int] = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # The command name is in parentheses and may contain spaces or ")".
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == parent:
            children.add(int(entry.name))
    return children


def describe_pids(pids: Iterable[int]) -> str:
    out = []
    for pid in sorted(pids):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            cmd, state = "?", "?"
        out.append(f"{pid} [{state}] {cmd or '(zombie)'}")
    return "; ".join(out)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` exists (a zombie counts: it has not been reaped)."""
    return Path(f"/proc/{pid}").exists()
