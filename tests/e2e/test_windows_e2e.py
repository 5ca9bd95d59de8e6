"""A Windows migration end to end: vm2kvmctl -> D-Bus -> vm2kvmd -> libguestfs + libvirtd.

The source is a VMX whose disks are the cached phony Server 2019 images
(``testbed/guests/windows``, flat VMDK descriptors over sparse copies),
converted with the fake virtio-win tree (``testbed/virtio_win.py``).  The
job must complete, ``vm2kvmctl report`` (text and ``--json``) must list the
Windows facts and every change, and the defined domain must use what was
injected.  The refusals (hibernated Windows; a BitLocker volume whose key is
rejected) must be one named error with nothing left behind.

One vm2kvmd for the module, with its own work directory and debug logging (a
key must not reach even the debug log).  Each job launches one appliance
(about 20 s under TCG); the three jobs here are the whole cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dbus_fast.signature import Variant
from lxml import etree

from testbed.bus import PrivateBus
from testbed.guests.windows.build import WindowsImage, build_windows_images
from testbed.guests.windows.layout import win7_hibernated, win2019, win2019_bitlocker
from testbed.services import DirPool
from testbed.virtio_win import CURRENT_ISO, build_virtio_win
from tests.e2e.lifecycle_support import DBusCallError, ServiceDaemon, dbus_call
from tests.e2e.support import Run, VmxDisk, VmxNic, ctl, vmware_uuid
from tests.helpers.vmdk_factory import sha256_tree, write_descriptor
from vm2kvmd.constants import MANAGER_IFACE, MANAGER_PATH, error_name
from vm2kvmd.errors import ErrorCode

pytestmark = [pytest.mark.libvirt, pytest.mark.slow]

MIGRATE_TIMEOUT = 600
MAC = "00:50:56:b4:6e:91"


@pytest.fixture(scope="module")
def images() -> dict[str, WindowsImage]:
    return build_windows_images([win2019, win7_hibernated, win2019_bitlocker])


@pytest.fixture(scope="module")
def windows_daemon(libvirtd: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceDaemon]:
    with PrivateBus() as bus:
        daemon = ServiceDaemon(bus.address, tmp_path_factory.mktemp("windaemon"))
        daemon.start()
        try:
            yield daemon
        finally:
            status, _ = daemon.terminate()
            assert status == 0, f"vm2kvmd did not exit cleanly:\n{daemon.logs()}"


@pytest.fixture(scope="module")
def virtio_win(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_virtio_win(tmp_path_factory.mktemp("virtio") / "virtio-win", CURRENT_ISO)


def windows_vm(vmdir: Path, image: WindowsImage, guest_os: str) -> Path:
    """A VMX (ESXi style: pvscsi, vmxnet3) whose disks are flat VMDKs over copies of ``image``."""
    vmdir.mkdir()
    disks = []
    for n, raw in enumerate(image.disks):
        flat = vmdir / f"disk{n}-flat.vmdk"
        # A sparse copy: the images are cached read-only, and the VM directory is the "source".
        subprocess.run(["cp", "--sparse=always", str(raw), str(flat)], check=True)
        flat.chmod(0o644)
        sectors = flat.stat().st_size // 512
        write_descriptor(vmdir, f"disk{n}", [f'RW {sectors} FLAT "{flat.name}" 0'])
        disks.append(VmxDisk(f"scsi0:{n}", f"disk{n}.vmdk"))
    nic = VmxNic(0, MAC, "vmxnet3", "bridged")
    lines = [
        '.encoding = "UTF-8"',
        'config.version = "8"',
        'virtualHW.version = "19"',
        f'displayName = "{image.layout.name}"',
        f'guestOS = "{guest_os}"',
        'numvcpus = "2"',
        'memsize = "2048"',
        f'uuid.bios = "{vmware_uuid(uuid.uuid4())}"',
        'scsi0.present = "TRUE"',
        'scsi0.virtualDev = "pvscsi"',
    ]
    for d in disks:
        lines += [f'{d.key}.present = "TRUE"', f'{d.key}.fileName = "{d.file_name}"']
    lines += [
        'ethernet0.present = "TRUE"',
        f'ethernet0.virtualDev = "{nic.model}"',
        'ethernet0.networkName = "VM Network"',
        f'ethernet0.connectionType = "{nic.connection}"',
        'ethernet0.addressType = "static"',
        f'ethernet0.address = "{nic.mac}"',
    ]
    vmx = vmdir / f"{image.layout.name}.vmx"
    vmx.write_text("\n".join(lines) + "\n")
    return vmx


def migrate(daemon: ServiceDaemon, vmx: Path, pool: str, name: str, *extra: str) -> Run:
    args = ["migrate", str(vmx), "--pool", pool, "--name", name, "--domain-type", "qemu", *extra]
    return ctl(daemon.address, *args, timeout=MIGRATE_TIMEOUT, convert=True)


def nothing_left(daemon: ServiceDaemon, conn: Any, pool: DirPool, name: str) -> None:
    assert name not in conn.listDefinedDomains()
    conn.storagePoolLookupByName(pool.name).refresh(0)
    assert conn.storagePoolLookupByName(pool.name).listVolumes() == []
    assert list(Path(pool.path).iterdir()) == []
    assert list(daemon.work_dir.iterdir()) == [], "the job left files in the work directory"


def refused(run: Run, code: ErrorCode, *mentions: str) -> str:
    """The one-line CLI error of a failed job, checked to carry ``code`` and every mention."""
    errors = [line for line in run.err.splitlines() if line.startswith("vm2kvmctl: error:")]
    assert len(errors) == 1, run.err
    assert "Traceback" not in run.err
    assert run.json()["error"]["name"] == error_name(code), run.out
    for mention in mentions:
        assert mention in errors[0].lower(), errors[0]
    return errors[0]


def test_server_2019_migrates_and_reports_every_windows_change(
    images: dict[str, WindowsImage],
    windows_daemon: ServiceDaemon,
    virtio_win: Path,
    libvirt_conn: Any,
    dir_pool: DirPool,
    domain_name: str,
    tmp_path: Path,
) -> None:
    vmdir = tmp_path / "vm"
    vmx = windows_vm(vmdir, images["win2019"], "windows2019srv-64")
    before = sha256_tree(vmdir)
    run = migrate(windows_daemon, vmx, dir_pool.name, domain_name, "--virtio-win", str(virtio_win), "--json")
    assert run.status == 0, f"{run.err}\n{windows_daemon.logs()}"
    try:
        number = str(run.json()["number"])
        report = ctl(windows_daemon.address, "report", number, "--json")
        text = ctl(windows_daemon.address, "report", number)
        xml = etree.fromstring(libvirt_conn.lookupByName(domain_name).XMLDesc(0).encode())
    finally:
        libvirt_conn.lookupByName(domain_name).undefineFlags(0x4)  # VIR_DOMAIN_UNDEFINE_NVRAM
    assert sha256_tree(vmdir) == before, "the migration changed the source VM"
    assert report.status == 0 and text.status == 0, report.err + text.err
    print(text.out)
    data = report.json()

    # The Windows facts, as inspection read them from the hives.
    facts = {f["key"]: f["value"] for f in data["guest"]["facts"]}
    assert facts["product"] == "Windows Server 2019 Standard"
    assert facts["version"] == "10.0 build 17763"
    assert facts["arch"] == "x86_64"
    assert facts["hostname"] == "app01"
    assert facts["vmware-tools"].startswith("VMware Tools")
    assert facts["static-ip"] == "vmxnet3 Ethernet Adapter: 192.0.2.10"
    assert facts["rtc"] == "UTC"

    # Every kind of change, with the words a user reads.
    changes = {g["area"]: [c["summary"] for c in g["changes"]] for g in data["changes"]}
    assert {"drivers", "vmware-tools", "first-boot", "trim"} <= set(changes), changes
    drivers = "\n".join(changes["drivers"])
    assert "viostor.sys copied for the boot disk" in drivers
    assert "staged netkvm" in drivers.lower()
    first_boot = "\n".join(changes["first-boot"])
    assert "runs once at the first boot, as SYSTEM before logon" in first_boot
    # The static IP goes to the virtio NIC with the VMware NIC's MAC.
    assert f"static IP 192.0.2.10/255.255.255.0 on the NIC with MAC {MAC}" in first_boot, first_boot
    assert "SAN policy OnlineAll" in first_boot  # the second disk comes up online
    # Tools: its own uninstaller at first boot, and no VMware driver or service left active.
    assert "uninstall VMware Tools: msiexec.exe /x {" in first_boot, first_boot
    assert "install the QEMU guest agent" in first_boot
    assert "viostor registered as a boot-start driver" in drivers
    tools = changes["vmware-tools"]
    assert "vmxnet3ndis6 disabled (Start 3 -> 4)" in tools
    assert "pvscsi disabled (Start 0 -> 4)" in tools
    assert "virtio" in data["devices"]["reason"]

    # The text report says the same.
    for line in (
        "Windows Server 2019 Standard",
        "10.0 build 17763",
        "192.0.2.10",
        "drivers:",
        "vmware-tools:",
        "first-boot:",
        "viostor.sys copied for the boot disk",
        "Device choice",
    ):
        assert line in text.out, line

    # The domain drives what was injected, with Windows' clock and enlightenments.
    assert xml.xpath("devices/disk[@device='disk']/target/@bus") == ["virtio", "virtio"]
    assert xml.xpath("devices/interface/model/@type") == ["virtio"]
    assert xml.xpath("devices/interface/mac/@address") == [MAC]
    assert xml.xpath("features/hyperv/relaxed/@state") == ["on"]
    assert xml.xpath("features/hyperv/vapic/@state") == ["on"]
    # The phony Server 2019 sets RealTimeIsUniversal = 1: the one case where the RTC stays UTC.
    assert xml.xpath("clock/@offset") == ["utc"]
    assert list(windows_daemon.work_dir.iterdir()) == [], "the job left files in the work directory"


def test_hibernated_windows_is_refused_with_nothing_left(
    images: dict[str, WindowsImage],
    windows_daemon: ServiceDaemon,
    virtio_win: Path,
    libvirt_conn: Any,
    dir_pool: DirPool,
    domain_name: str,
    tmp_path: Path,
) -> None:
    vmdir = tmp_path / "vm"
    vmx = windows_vm(vmdir, images["win7-hibernated"], "windows7")
    before = sha256_tree(vmdir)
    run = migrate(windows_daemon, vmx, dir_pool.name, domain_name, "--virtio-win", str(virtio_win), "--json")
    assert run.status == 1, run.err
    refused(run, ErrorCode.GUEST_HIBERNATED, "hibernat", "shut")
    nothing_left(windows_daemon, libvirt_conn, dir_pool, domain_name)
    assert sha256_tree(vmdir) == before


# A recovery key as manage-bde prints it; unique enough to be searched for everywhere.
KEY = "424242-131313-575757-686868-797979-808080-919191-020202"


class ArgvWatch:
    """Every process's command line, sampled while a migration runs: the key must be in none."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="argv watch", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                with contextlib.suppress(OSError):
                    text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    if "vm2kvm" in text or "qemu" in text or "guestfs" in text:
                        self.seen.add(text)

    def __enter__(self) -> ArgvWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_bitlocker_key_travels_as_fd_and_a_rejected_key_is_named(
    images: dict[str, WindowsImage],
    windows_daemon: ServiceDaemon,
    virtio_win: Path,
    libvirt_conn: Any,
    dir_pool: DirPool,
    domain_name: str,
    tmp_path: Path,
) -> None:
    """The phony BitLocker volume is not a real BITLK volume (cryptsetup cannot make one, and
    no Windows may be downloaded): only its boot sector says ``-FVE-FS-``.  So this shows what
    can be shown here: ``--key-file`` reaches the appliance's ``cryptsetup_open`` (cryptsetup's
    refusal is quoted in the error), the refusal is ``KeyRejected`` naming the volume, nothing
    is left, and the key is in no argv, property, job store, log or message."""
    vmdir = tmp_path / "vm"
    vmx = windows_vm(vmdir, images["win2019-bitlocker"], "windows2019srv-64")
    key_file = tmp_path / "recovery.key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)
    before = sha256_tree(vmdir)
    with ArgvWatch() as argv:
        run = migrate(windows_daemon, vmx, dir_pool.name, domain_name, "--key-file", str(key_file), "--json")
    assert run.status == 1, run.err
    line = refused(run, ErrorCode.KEY_REJECTED, "bitlocker volume /dev/sda2", "bitlk")
    print(line)
    assert argv.seen, "the argv watch saw no process"
    number = str(run.json()["number"])
    nothing_left(windows_daemon, libvirt_conn, dir_pool, domain_name)
    assert sha256_tree(vmdir) == before

    # Where the key must not be: the CLI's output, every process's argv, the job's properties
    # and log, the daemon's (debug) log and its job store.
    status = ctl(windows_daemon.address, "status", number, "--json")
    log = ctl(windows_daemon.address, "logs", number)
    assert status.status == 0 and log.status == 0, status.err + log.err
    assert "bitlocker-key" not in status.json()["options"]
    places = {
        "migrate output": run.out + run.err,
        "argv": "\n".join(argv.seen),
        "job properties": status.out,
        "job log": log.out,
        "daemon log": windows_daemon.log.read_text(errors="replace"),
    }
    for root, _, files in os.walk(windows_daemon.state_dir):
        for name in files:
            places[f"store {name}"] = (Path(root) / name).read_bytes().decode(errors="replace")
    for where, text in places.items():
        for piece in (KEY, KEY.replace("-", "")):
            assert piece not in text, f"the BitLocker key appears in the {where}"
    assert KEY not in line


async def call(daemon: ServiceDaemon, member: str, options: dict[str, Variant], fds: Any = None) -> Any:
    source = "/nonexistent/vm.vmx"
    body = [source, options]
    return await dbus_call(daemon.address, MANAGER_PATH, MANAGER_IFACE, member, "sa{sv}", body, unix_fds=fds)


def test_bitlocker_key_option_only_as_fd(windows_daemon: ServiceDaemon) -> None:
    """The key itself as an option value is refused without being repeated; an fd sent to a
    method that has no use for it (Inspect) is closed by vm2kvmd, not kept."""
    with pytest.raises(DBusCallError) as err:
        asyncio.run(call(windows_daemon, "Migrate", {"bitlocker-key": Variant("s", KEY)}))
    assert err.value.name == error_name(ErrorCode.INVALID_OPTION)
    assert "file descriptor" in err.value.text and KEY not in err.value.text

    read_end, write_end = os.pipe()
    try:
        options = {"bitlocker-key": Variant("h", 0)}
        with pytest.raises(DBusCallError) as err:
            asyncio.run(call(windows_daemon, "Inspect", options, [read_end]))
        assert "bitlocker-key" in err.value.text  # no option of Inspect
        os.close(read_end)
        read_end = -1
        # vm2kvmd closed its copy too: no reader is left on the pipe.
        with pytest.raises(BrokenPipeError):
            os.write(write_end, b"x")
    finally:
        os.close(write_end)
        if read_end >= 0:
            os.close(read_end)
