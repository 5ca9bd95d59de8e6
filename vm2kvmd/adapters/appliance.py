"""The libguestfs appliance over a job's overlays: launched once, killable from another thread.

The handle is used from one worker thread only (libguestfs handles are not
thread-safe); ``kill`` is the exception: it only sends SIGKILL to the
appliance's QEMU, which makes the call that the worker is blocked in fail.
The backend comes from libguestfs' own environment (``LIBGUESTFS_BACKEND``,
``LIBGUESTFS_BACKEND_SETTINGS=force_tcg`` where KVM cannot be used).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any, cast

from vm2kvmd.adapters.guestfs_api import GuestFS
from vm2kvmd.errors import ErrorCode, Vm2kvmError

# The appliance's own memory: dracut and update-initramfs of a large kernel need room; 1 GiB is
# what virt-v2v gives it too.
MEMSIZE_MIB = 1024
# One vCPU.  The conversion's cost is the guest's own tools (update-initramfs, update-grub, dpkg):
# thousands of short processes, run one after another.  Under TCG each exec costs 74 ms with one
# vCPU and 139 ms with two (every address-space switch flushes the other vCPU's soft TLB too),
# and mkinitramfs of a Debian 12 kernel took 85 s against 95-117 s; end to end the benchmark guest's
# conversion took the same 176 s either way (bench/README.md), the rest being one-process steps.
SMP = 1


class Appliance:
    def __init__(self, drives: Sequence[str], *, drive_format: str = "qcow2") -> None:
        self._drives = tuple(drives)
        self._format = drive_format
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._killed = False
        self._launching = False
        self._handle: Any = None

    def launch(self) -> GuestFS:
        """Start the appliance with every drive writable (the overlays; their backings stay read-only)."""
        try:
            import guestfs
        except ImportError as err:
            raise Vm2kvmError(
                ErrorCode.CONVERSION_FAILED,
                "the libguestfs Python bindings are not installed",
                hint="install python3-guestfs, or migrate with --no-guest-conversion",
            ) from err
        g = guestfs.GuestFS(python_return_dict=True)
        self._handle = g
        try:
            g.set_memsize(MEMSIZE_MIB)
            g.set_smp(SMP)
            for path in self._drives:
                # cachemode=unsafe: the overlays are scratch files removed with the job; a crash
                # loses nothing that is not thrown away anyway, and flushes cost TCG time.
                g.add_drive_opts(path, format=self._format, readonly=False, cachemode="unsafe")
            with self._lock:
                if self._killed:
                    raise _failed("the job was cancelled")
                self._launching = True
            g.launch()
        except RuntimeError as err:
            raise _failed(f"the libguestfs appliance did not start: {_first_line(err)}") from err
        finally:
            with self._lock:
                self._launching = False
        with self._lock:
            self._pid = int(g.get_pid())
            if self._killed:
                self._send_kill()
        return cast(GuestFS, g)

    def kill(self) -> None:
        """Thread-safe: end the appliance now (a cancelled job); the blocked call then fails."""
        with self._lock:
            self._killed = True
            self._send_kill()

    @property
    def killed(self) -> bool:
        return self._killed

    def _send_kill(self) -> None:
        if self._pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGKILL)
        elif self._launching:
            # launch() takes 20 s under TCG and tells the PID only when it returns: find the
            # QEMU it started meanwhile (a thread: /proc is read off the event loop).
            threading.Thread(target=self._kill_launching, name="appliance kill", daemon=True).start()

    def _kill_launching(self) -> None:
        """Until launch() returns: SIGKILL every child QEMU of ours that has one of our drives."""
        while True:
            with self._lock:
                if not self._launching:
                    return
            for pid in _children_using(self._drives):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)

    def close(self) -> None:
        """Shut the appliance down (flushing the overlays) and free the handle; never raises."""
        g, self._handle = self._handle, None
        if g is None:
            return
        try:
            if not self._killed:
                g.shutdown()
        except RuntimeError:
            pass
        finally:
            g.close()


def _children_using(drives: Sequence[str]) -> list[int]:
    """PIDs of our child processes whose command line names one of ``drives`` (the appliance's QEMU)."""
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            if ppid != me:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        if any(drive in cmdline for drive in drives):
            found.append(int(entry))
    return found


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _failed(message: str) -> Vm2kvmError:
    return Vm2kvmError(ErrorCode.CONVERSION_FAILED, message)
