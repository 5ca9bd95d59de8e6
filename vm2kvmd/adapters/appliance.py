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
from collections.abc import Sequence
from typing import Any, cast

from vm2kvmd.convert.guestfs_api import GuestFS
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
            if self._killed:
                raise _failed("the job was cancelled")
            g.launch()
        except RuntimeError as err:
            raise _failed(f"the libguestfs appliance did not start: {_first_line(err)}") from err
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


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _failed(message: str) -> Vm2kvmError:
    return Vm2kvmError(ErrorCode.CONVERSION_FAILED, message)
