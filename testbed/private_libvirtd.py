"""A libvirtd of a test's own, which the test may stop and start again.

The shared libvirtd on ``qemu:///system`` serves every test session on the
machine; stopping it would fail other people's runs.  This one runs as root
in its own mount namespace (``unshare -m``) with ``/run/libvirt``,
``/etc/libvirt``, ``/var/lib/libvirt``, ``/var/cache/libvirt`` and
``/var/log/libvirt`` bind-mounted from a private directory, so its pools,
domains, pid locks and sockets are its own.  Clients reach it with
``qemu:///system?socket=<dir>/run/libvirt-sock``.  No virtlogd: nothing
here starts a guest.

``stop`` and ``start`` keep the directory: what was defined survives a
restart, as on a real host after ``apt upgrade`` restarted libvirtd.
Stopped by the PID it was started with, never by name.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import libvirt

from testbed.processes import register_service, stop_process, tail
from testbed.services import _quiet_libvirt, libvirt_answers

_MOUNTS = {
    "run": "/run/libvirt",
    "etc": "/etc/libvirt",
    "lib": "/var/lib/libvirt",
    "cache": "/var/cache/libvirt",
    "log": "/var/log/libvirt",
}


class PrivateLibvirtd:
    """libvirtd in a private mount namespace; ``uri`` reaches it."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="vm2kvm-plv-"))
        for name in _MOUNTS:
            (self.root / name).mkdir()
        # Its configuration files (qemu.conf, libvirtd.conf), without the host's pools,
        # networks and domains.
        shutil.copytree("/etc/libvirt", self.root / "etc", dirs_exist_ok=True, symlinks=True)
        for sub in ("storage", "qemu", "secrets", "nwfilter"):
            shutil.rmtree(self.root / "etc" / sub, ignore_errors=True)
        # QEMU's capabilities as the shared libvirtd probed them (about 4 s to probe afresh).
        if os.path.isdir("/var/cache/libvirt/qemu"):
            shutil.copytree("/var/cache/libvirt/qemu", self.root / "cache" / "qemu", symlinks=True)
        script = ["mount --make-rprivate /"]
        script += [f"mount --bind {self.root / name} {target}" for name, target in _MOUNTS.items()]
        script.append(f"exec libvirtd --pid-file {self.root / 'libvirtd.pid'}")
        (self.root / "start.sh").write_text("\n".join(script) + "\n")
        self.uri = f"qemu:///system?socket={self.root / 'run' / 'libvirt-sock'}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 30.0) -> PrivateLibvirtd:
        assert self.proc is None or self.proc.poll() is not None
        self.starts += 1
        log = (self.root / f"libvirtd-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(
            ["unshare", "-m", "sh", str(self.root / "start.sh")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        register_service(self.proc.pid)
        deadline = time.monotonic() + timeout
        while not libvirt_answers(self.uri):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                text = tail(self.root / f"libvirtd-{self.starts}.log")
                self.stop()
                raise RuntimeError(f"private libvirtd did not answer on {self.uri}: {text}")
            time.sleep(0.05)
        # The QEMU driver probes the emulator on its first real use and holds every define until
        # then: done here, so a test's own define does not race the job's behind that wait.
        _quiet_libvirt()
        conn = libvirt.open(self.uri)
        try:
            conn.getDomainCapabilities()
        finally:
            conn.close()
        return self

    def stop(self) -> None:
        """SIGTERM (what ``systemctl restart`` sends), reaped; the namespace goes with it."""
        if self.proc is not None:
            stop_process(self.proc, timeout=15)
            self.proc = None

    def restart_after(self, seconds: float) -> None:
        """Stop now and start again in ``seconds``, in the background (a thread); ``join`` waits."""
        import threading

        self.stop()

        def later() -> None:
            time.sleep(seconds)
            self.start()

        self._thread = threading.Thread(target=later, daemon=True)
        self._thread.start()

    def join(self) -> None:
        thread = getattr(self, "_thread", None)
        if thread is not None:
            thread.join()

    def close(self) -> None:
        self.join()
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PrivateLibvirtd:
        return self.start()

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()
