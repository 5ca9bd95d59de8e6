"""A private ``dbus-daemon`` for tests and the demo, stopped by its PID."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from xml.sax.saxutils import escape

from testbed.processes import register_service, stop_process, tail

_SESSION_POLICY = """
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>"""

# The default-deny policy of Debian's system.conf: services punch holes with
# their own policy files, which is what a test of our policy file needs.
_SYSTEM_POLICY = """
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Peer"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"
          send_member="UpdateActivationEnvironment"/>
  </policy>"""


class PrivateBus:
    """A ``dbus-daemon`` of our own, listening on a socket in a temp directory.

    ``kind="session"`` allows everything (like a session bus).  ``kind="system"``
    denies owning names and calling methods unless an included policy file
    allows it (like the system bus), for testing the project's bus policy:
    pass it in ``include_files`` or a directory of them in ``include_dirs``.
    """

    def __init__(
        self,
        *,
        kind: str = "session",
        include_files: Sequence[str | os.PathLike[str]] = (),
        include_dirs: Sequence[str | os.PathLike[str]] = (),
        start_timeout: float = 10.0,
    ) -> None:
        if kind not in ("session", "system"):
            raise ValueError(f"kind must be session or system, not {kind!r}")
        self.kind = kind
        self.include_files = [Path(p).resolve() for p in include_files]
        self.include_dirs = [Path(p).resolve() for p in include_dirs]
        self.start_timeout = start_timeout
        self.address = ""
        self.pid = 0
        self.tmpdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        assert self.tmpdir is not None
        return self.tmpdir / "bus"

    def config(self) -> str:
        includes = "".join(f"\n  <include>{escape(str(p))}</include>" for p in self.include_files)
        includes += "".join(f"\n  <includedir>{escape(str(p))}</includedir>" for p in self.include_dirs)
        policy = _SESSION_POLICY if self.kind == "session" else _SYSTEM_POLICY
        return f"""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>{self.kind}</type>
  <listen>unix:path={escape(str(self.socket_path))}</listen>
  <auth>EXTERNAL</auth>{policy}{includes}
</busconfig>
"""

    def start(self) -> PrivateBus:
        self.tmpdir = Path(tempfile.mkdtemp(prefix="vm2kvm-bus-"))
        conf = self.tmpdir / "bus.conf"
        conf.write_text(self.config())
        addr_r, addr_w = os.pipe()
        pid_r, pid_w = os.pipe()
        try:
            self._proc = subprocess.Popen(
                [
                    "dbus-daemon",
                    f"--config-file={conf}",
                    "--nofork",
                    "--nopidfile",
                    f"--print-address={addr_w}",
                    f"--print-pid={pid_w}",
                ],
                pass_fds=(addr_w, pid_w),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=(self.tmpdir / "dbus-daemon.log").open("wb"),
                start_new_session=True,
            )
        finally:
            os.close(addr_w)
            os.close(pid_w)
        register_service(self._proc.pid)
        try:
            self.address = self._read_line(addr_r)
            self.pid = int(self._read_line(pid_r))
        except BaseException:
            self.stop()
            raise
        finally:
            os.close(addr_r)
            os.close(pid_r)
        return self

    def _read_line(self, fd: int) -> str:
        deadline = time.monotonic() + self.start_timeout
        data = b""
        while not data.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"dbus-daemon did not start: {self._log()}")
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, 1024)
            if not chunk:
                raise RuntimeError(f"dbus-daemon exited: {self._log()}")
            data += chunk
        return data.decode().strip()

    def _log(self) -> str:
        return tail(self.tmpdir / "dbus-daemon.log") if self.tmpdir else ""

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc, timeout=5)
            self._proc = None
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    def __enter__(self) -> PrivateBus:
        return self.start()

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()


def ask_bus_driver(address: str, member: str, *args: str) -> list[str]:
    """Call ``org.freedesktop.DBus.<member>`` on ``address`` with ``dbus-send`` (for code without
    an event loop); ``args`` in dbus-send's spelling (``string:NAME``); the reply's words."""
    reply = subprocess.run(
        [
            "dbus-send",
            f"--bus={address}",
            "--print-reply=literal",
            "--dest=org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            f"org.freedesktop.DBus.{member}",
            *args,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    return reply.stdout.split()
