"""Bringing a source VM down for ``--shutdown-source``: a guest shutdown through VMware Tools,
a hard power-off only when the caller forces it.

A migration reads the disks of a VM that no longer writes to them (static migration).  The clean
way down is the guest's own shutdown, which vSphere asks VMware Tools to start (``ShutdownGuest``
returns at once; the VM reaches ``poweredOff`` when the guest is done).  A hard power-off
(``PowerOffVM_Task``) is pulling the plug: the guest's file systems are left as after a crash, so
it happens only with ``force`` — when Tools are not running, the guest refused or ignored the
request within the timeout, or the VM is suspended.

Blocking (pyvmomi); async callers use ``asyncio.to_thread``.  Every step is told to ``on_log``
so the job log shows what was done to the source VM.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from pyVmomi import vim, vmodl

from vm2kvmd.adapters.vsphere import Session
from vm2kvmd.errors import ErrorCode, Vm2kvmError

SHUTDOWN_TIMEOUT = 300.0  # seconds a guest gets to shut down (virt-v2v users wait minutes too)
POWER_OFF_TIMEOUT = 120.0  # seconds a hard power-off task may take
POLL = 1.0  # seconds between looks at the power state
TOOLS_RUNNING = "guestToolsRunning"


def _ignore(_line: str) -> None:
    pass


def shut_down(
    session: Session,
    vm: vim.VirtualMachine,
    *,
    timeout: float = SHUTDOWN_TIMEOUT,
    force: bool = False,
    on_log: Callable[[str], None] = _ignore,
    poll: float = POLL,
) -> str:
    """Bring ``vm`` to ``poweredOff``; return how: "already off", "guest shutdown" or "power off".

    Raises ``ShutdownFailed`` naming the VM, its Tools state and the timeout when it is still on
    and ``force`` is not set.
    """
    with session.calling("reading the power state of a VM"):
        vm_any: Any = vm
        name = str(vm_any.name)
        state = str(vm_any.runtime.powerState)
        tools = str(vm_any.guest.toolsRunningStatus or "unknown") if vm_any.guest else "unknown"
    where = f"VM {name!r} on {session.where}"
    if state == "poweredOff":
        on_log(f"{where} is already powered off")
        return "already off"
    if state == "suspended":
        why = f"{where} is suspended: a guest shutdown needs it running"
        return _forced(session, vm, where, why, force, on_log)
    if tools != TOOLS_RUNNING:
        why = (
            f"VMware Tools are not running in {where} (Tools state {tools}), "
            "so the guest cannot be asked to shut down"
        )
        return _forced(session, vm, where, why, force, on_log)
    on_log(f"asking the guest of {where} to shut down (VMware Tools), waiting up to {timeout:.0f} s")
    try:
        # InvalidPowerState: it went off between our look and the call, which is what we want.
        with (
            session.calling(f"asking the guest of {name!r} to shut down"),
            contextlib.suppress(vim.fault.InvalidPowerState),
        ):
            vm_any.ShutdownGuest()
    except Vm2kvmError as exc:
        if exc.code is not ErrorCode.VSPHERE_ERROR:
            raise
        why = f"the guest shutdown of {where} failed: {exc.message}"
        return _forced(session, vm, where, why, force, on_log)
    if _wait_off(session, vm, timeout, poll):
        on_log(f"the guest of {where} shut down")
        return "guest shutdown"
    why = f"{where} is still powered on {timeout:.0f} s after the guest shutdown request (Tools {tools})"
    return _forced(session, vm, where, why, force, on_log)


def _forced(
    session: Session,
    vm: vim.VirtualMachine,
    where: str,
    why: str,
    force: bool,
    on_log: Callable[[str], None],
) -> str:
    if not force:
        raise Vm2kvmError(
            ErrorCode.SHUTDOWN_FAILED,
            why,
            hint="shut the guest down yourself, or add --force to power it off hard (as pulling the plug)",
        )
    on_log(f"{why}; powering it off hard (--force)")
    vm_any: Any = vm
    with session.calling(f"powering off {where}"):
        try:
            task = vm_any.PowerOffVM_Task()
        except vim.fault.InvalidPowerState:
            return "power off"  # it went off meanwhile
        deadline = time.monotonic() + POWER_OFF_TIMEOUT
        while str(task.info.state) in ("queued", "running"):
            if time.monotonic() > deadline:
                raise Vm2kvmError(
                    ErrorCode.SHUTDOWN_FAILED,
                    f"powering off {where} did not finish within {POWER_OFF_TIMEOUT:.0f} s",
                    hint="check the VM in the vSphere client, then retry the job",
                )
            time.sleep(0.2)
        if str(task.info.state) == "error":
            fault: vmodl.MethodFault | None = task.info.error
            words = getattr(fault, "msg", None) or type(fault).__name__
            raise Vm2kvmError(
                ErrorCode.SHUTDOWN_FAILED,
                f"powering off {where} failed: {words}",
                hint="check the VM in the vSphere client, then retry the job",
            )
    on_log(f"{where} is powered off")
    return "power off"


def _wait_off(session: Session, vm: vim.VirtualMachine, timeout: float, poll: float) -> bool:
    vm_any: Any = vm
    deadline = time.monotonic() + timeout
    while True:
        with session.calling("waiting for a VM to power off"):
            if str(vm_any.runtime.powerState) == "poweredOff":
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(poll, max(deadline - time.monotonic(), 0.0)))
