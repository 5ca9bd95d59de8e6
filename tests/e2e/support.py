"""The real thing, end to end: a ``vm2kvmd`` process on a private bus with the
real pipeline, the real ``vm2kvmctl``, the real libvirtd and qemu-img.

``DaemonProcess`` runs ``python -m vm2kvmd.daemon --bus session`` with its job
store in a test directory (never ``/var/lib/vm2kvm``); it can be stopped
(SIGTERM) and started again on the same store.  ``ctl`` runs
``python -m vm2kvmctl.main --bus session``.
``write_vmx`` writes a Workstation-style VMX for disks made with
``tests.helpers.vmdk_factory``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid as uuid_module
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.processes import forget_service, register_service, stop_process, tail

REPO = Path(__file__).resolve().parents[2]


def bus_env(address: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBUS_")}
    env["DBUS_SESSION_BUS_ADDRESS"] = address
    env["PYTHONPATH"] = str(REPO)
    return env


class DaemonProcess:
    """``vm2kvmd --bus session`` as a child process; stopped with SIGTERM.

    Its job store is ``state_dir`` (``LOG_DIR/state``), kept across
    ``start`` after ``stop``.  Every run appends to the same log file.  (The service
    lifecycle tests, which kill vm2kvmd too, use ``lifecycle_support.ServiceDaemon``.)
    """

    def __init__(self, address: str, log_dir: Path) -> None:
        self.address = address
        self.log = log_dir / "vm2kvmd.log"
        self.state_dir = log_dir / "state"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> DaemonProcess:
        if self.alive:
            raise RuntimeError("vm2kvmd is already running")
        command = [sys.executable, "-m", "vm2kvmd.daemon", "--bus", "session", "--config", os.devnull]
        command += ["--state-dir", str(self.state_dir)]
        with self.log.open("ab") as log_file:
            self.proc = subprocess.Popen(
                command,
                cwd=REPO,
                env=bus_env(self.address),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
            )
        register_service(self.proc.pid)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vm2kvmd exited at start:\n{tail(self.log)}")
            if ctl(self.address, "jobs").status == 0:
                return self
            time.sleep(0.1)
        raise RuntimeError(f"vm2kvmd did not answer within 30 s:\n{tail(self.log)}")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        finally:
            stop_process(self.proc)
            forget_service(self.proc.pid)
        return self.proc.returncode


@dataclass(frozen=True)
class Run:
    status: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def ctl(address: str, *args: str, timeout: float = 120, convert: bool = False) -> Run:
    """``vm2kvmctl --bus session ARGS``.

    ``migrate`` gets ``--no-guest-conversion`` unless ``convert``: the test VMs'
    disks are blank (no OS to convert, which a converting job refuses), and an
    appliance launch costs 20 s.  The boot tests convert real guests.
    """
    if args and args[0] == "migrate" and not convert and "--no-guest-conversion" not in args:
        args = (*args, "--no-guest-conversion")
    proc = subprocess.run(
        [sys.executable, "-m", "vm2kvmctl.main", "--bus", "session", *args],
        cwd=REPO,
        env=bus_env(address),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    return Run(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


@dataclass(frozen=True)
class VmxDisk:
    key: str  # scsi0:0, sata0:0, nvme0:0, ide0:0
    file_name: str


@dataclass(frozen=True)
class VmxNic:
    index: int
    mac: str
    model: str = "e1000"
    connection: str = "nat"


def write_vmx(
    directory: Path,
    name: str,
    disks: Sequence[VmxDisk],
    nics: Sequence[VmxNic] = (VmxNic(0, "00:0c:29:aa:bb:01"),),
    *,
    extra: str = "",
    uuid: str | None = None,
    vcpus: int = 2,
    memsize: int = 512,
) -> Path:
    # A fresh UUID per VM: a fixed one would clash with domains of other runs on a shared libvirtd.
    uuid = uuid or vmware_uuid(uuid_module.uuid4())
    lines = [
        '.encoding = "UTF-8"',
        'config.version = "8"',
        'virtualHW.version = "19"',
        f'displayName = "{name}"',
        'guestOS = "debian11-64"',
        f'numvcpus = "{vcpus}"',
        'cpuid.coresPerSocket = "1"',
        f'memsize = "{memsize}"',
        f'uuid.bios = "{uuid}"',
    ]
    controllers = sorted({d.key.split(":")[0] for d in disks})
    for ctrl in controllers:
        lines.append(f'{ctrl}.present = "TRUE"')
        if ctrl.startswith("scsi"):
            lines.append(f'{ctrl}.virtualDev = "lsilogic"')
    for d in disks:
        lines += [f'{d.key}.present = "TRUE"', f'{d.key}.fileName = "{d.file_name}"']
    for n in nics:
        prefix = f"ethernet{n.index}"
        lines += [
            f'{prefix}.present = "TRUE"',
            f'{prefix}.virtualDev = "{n.model}"',
            f'{prefix}.connectionType = "{n.connection}"',
            f'{prefix}.addressType = "generated"',
            f'{prefix}.generatedAddress = "{n.mac}"',
        ]
    path = directory / f"{name}.vmx"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def vmware_uuid(value: uuid_module.UUID) -> str:
    """VMware's spelling of a UUID: ``56 4d 11 22 33 44 55 66-77 88 ...``."""
    pairs = [value.hex[i : i + 2] for i in range(0, 32, 2)]
    return " ".join(pairs[:8]) + "-" + " ".join(pairs[8:])


def migrate_for_boot(address: str, vmx: Path, pool: str, name: str, *, convert: bool, timeout: float) -> Run:
    """``vm2kvmctl migrate --json`` of a guest the test will boot (TCG: domain type qemu)."""
    args = ["migrate", str(vmx), "--pool", pool, "--name", name, "--domain-type", "qemu", "--json"]
    if not convert:
        args.append("--no-guest-conversion")
    return ctl(address, *args, timeout=timeout, convert=convert)
