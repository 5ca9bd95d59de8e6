"""Callers may only make vm2kvmd read files they could read themselves.

``check_readable`` is tested directly (the daemon is root, the caller
``nobody``), then through the bus: ``nobody``, allowed by polkit to inspect
and migrate, asks the daemon (root, the real inspection) to read files it
may not read.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.bus import PrivateBus
from tests.helpers.vmdk_factory import make_flat_file, write_descriptor
from tests.service import test_auth
from tests.service.support import BusClient
from tests.service.test_auth import (
    NOBODY,
    PolkitMock,
    as_nobody,
    daemon_on,
    inspect_call,
    migrate_call,
    needs_root,
)
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.daemon import Daemon
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.pipeline import preflight as migrate_preflight
from vm2kvmd.pipeline.planning import inspect_source
from vm2kvmd.service.access import SourceFiles, check_readable, read_checked, source_files, vet_failure
from vm2kvmd.service.auth import ACTION_INSPECT, ACTION_MIGRATE
from vm2kvmd.service.caller import DAEMON, Caller

pytestmark = needs_root

# The bus, polkit mock and caller fixtures of test_auth, shared.
system_bus = test_auth.system_bus
client = test_auth.client
polkit = test_auth.polkit
public_dir = test_auth.public_dir

USER = Caller(bus_name=":1.99", uid=NOBODY, gids=(NOBODY,), pid=0)
PERMISSION_DENIED = "org.vm2kvm.Error.PermissionDenied"

VMX = """.encoding = "UTF-8"
config.version = "8"
virtualHW.version = "14"
displayName = "access"
guestOS = "debian10-64"
memSize = "512"
numvcpus = "1"
scsi0.present = "TRUE"
scsi0.virtualDev = "lsilogic"
scsi0:0.present = "TRUE"
scsi0:0.fileName = "disk.vmdk"
"""


def make_vm(directory: Path) -> dict[str, Path]:
    """A VMX with one monolithicFlat disk, everything readable by anyone."""
    directory.mkdir(mode=0o755, exist_ok=True)
    directory.chmod(0o755)
    vmx = directory / "vm.vmx"
    vmx.write_text(VMX)
    descriptor = write_descriptor(directory, "disk", ['RW 2048 FLAT "disk-flat.vmdk" 0'])
    extent = make_flat_file(directory, "disk-flat.vmdk")
    for path in (vmx, descriptor, extent):
        path.chmod(0o644)
    return {"vmx": vmx, "descriptor": descriptor, "extent": extent}


def real_inspector(source: str, options: MigrateOptions) -> Any:
    return inspect_source(source, options, None)


async def refused(caller: Caller, paths: list[str] | SourceFiles) -> Vm2kvmError:
    with pytest.raises(Vm2kvmError) as info:
        await check_readable(caller, paths)
    return info.value


# --- check_readable --------------------------------------------------------------------------------


async def test_readable_files_pass(public_dir: Path) -> None:
    vm = make_vm(public_dir / "vm")
    await check_readable(USER, [str(p) for p in vm.values()])


async def test_a_root_only_file_is_refused(public_dir: Path) -> None:
    vm = make_vm(public_dir / "vm")
    vm["extent"].chmod(0o600)
    err = await refused(USER, [str(vm["vmx"]), str(vm["extent"])])
    assert err.code is ErrorCode.PERMISSION_DENIED
    assert err.file == str(vm["extent"])
    assert f"uid {NOBODY} cannot read this file (Permission denied)" in err.describe()


async def test_a_symlink_into_a_closed_directory_is_refused(public_dir: Path) -> None:
    vm = make_vm(public_dir / "secret")
    (public_dir / "secret").chmod(0o700)  # its files stay 0644: only the directory keeps nobody out
    link = public_dir / "link.vmx"
    link.symlink_to(vm["vmx"])
    err = await refused(USER, [str(link)])
    assert (err.code, err.file) == (ErrorCode.PERMISSION_DENIED, str(link))


async def test_group_membership_counts(public_dir: Path) -> None:
    vm = make_vm(public_dir / "vm")
    os.chown(vm["vmx"], 0, 100)
    vm["vmx"].chmod(0o640)
    await check_readable(Caller(":1.98", NOBODY, (NOBODY, 100)), [str(vm["vmx"])])
    err = await refused(USER, [str(vm["vmx"])])
    assert err.code is ErrorCode.PERMISSION_DENIED


async def test_missing_files(public_dir: Path) -> None:
    missing = str(public_dir / "absent.vmx")
    err = await refused(USER, [missing])
    assert (err.code, err.file) == (ErrorCode.SOURCE_NOT_FOUND, missing)
    assert "does not exist" in err.describe()
    # Optional files may be absent, but not unreadable.
    await check_readable(USER, SourceFiles([missing], optional=[missing]))
    vm = make_vm(public_dir / "vm")
    vm["vmx"].chmod(0o600)
    err = await refused(USER, SourceFiles([str(vm["vmx"])], optional=[str(vm["vmx"])]))
    assert err.code is ErrorCode.PERMISSION_DENIED


async def test_a_fifo_does_not_hang_the_check(public_dir: Path) -> None:
    fifo = public_dir / "pipe.vmx"
    os.mkfifo(fifo, 0o644)
    started = time.monotonic()
    await check_readable(USER, [str(fifo)])
    assert time.monotonic() - started < 10


async def test_root_is_not_checked() -> None:
    await check_readable(DAEMON, ["/nonexistent/file"])


async def test_source_files_of_an_inspection(public_dir: Path) -> None:
    vm = make_vm(public_dir / "vm")
    result = await asyncio.to_thread(inspect_source, str(vm["vmx"]), MigrateOptions(), None)
    files = source_files(result)
    vmsd = str(public_dir / "vm" / "vm.vmsd")
    assert files == [str(vm["vmx"]), str(vm["descriptor"]), str(vm["extent"]), vmsd]
    assert files.optional == {vmsd}
    assert source_files(object()) == []


async def test_a_missing_image_in_a_closed_directory_is_refused_not_missing(public_dir: Path) -> None:
    """Whether a file exists where the caller cannot look is not for it to learn."""
    vm = make_vm(public_dir / "vm")
    (public_dir / "secret").mkdir(mode=0o700)
    iso = public_dir / "secret" / "absent.iso"
    with vm["vmx"].open("a") as vmx:
        vmx.write(f'ide1:0.present = "TRUE"\nide1:0.deviceType = "cdrom-image"\nide1:0.fileName = "{iso}"\n')
    result = await asyncio.to_thread(inspect_source, str(vm["vmx"]), MigrateOptions(), None)
    assert result.vm.cdroms[0].missing
    err = await refused(USER, source_files(result))
    assert (err.code, err.file) == (ErrorCode.PERMISSION_DENIED, str(iso))


async def test_an_error_naming_a_closed_file_in_its_text_is_not_shown(public_dir: Path) -> None:
    vm = make_vm(public_dir / "secret")
    (public_dir / "secret").chmod(0o700)
    error = Vm2kvmError(ErrorCode.INVALID_DISK, f"disk scsi0:0: {vm['descriptor']}: line 1 (value 'root:x')")
    with pytest.raises(Vm2kvmError) as info:
        await vet_failure(USER, error)
    assert (info.value.code, info.value.file) == (ErrorCode.PERMISSION_DENIED, str(vm["descriptor"]))
    # Errors about files the caller may read, or cannot even find, pass unchanged.
    open_vm = make_vm(public_dir / "vm")
    await vet_failure(USER, Vm2kvmError(ErrorCode.INVALID_DISK, "bad", file=str(open_vm["descriptor"])))
    await vet_failure(USER, Vm2kvmError(ErrorCode.SOURCE_NOT_FOUND, f"{public_dir}/absent: no such file"))


async def test_an_inspection_error_about_a_closed_file_is_not_shown(public_dir: Path) -> None:
    vm = make_vm(public_dir / "secret")
    (public_dir / "secret").chmod(0o700)
    error = Vm2kvmError(ErrorCode.INVALID_DISK, "line 1: root:x:0:0", file=f"{vm['vmx']} member disk1.vmdk")
    with pytest.raises(Vm2kvmError) as info:
        await vet_failure(USER, error)
    assert info.value.code is ErrorCode.PERMISSION_DENIED
    assert "root:x" not in info.value.describe()
    await vet_failure(DAEMON, error)  # root sees the original error


# --- through the bus -----------------------------------------------------------------------------


@pytest.fixture
async def inspecting_daemon(system_bus: PrivateBus) -> AsyncIterator[Daemon]:
    """vm2kvmd with the real inspection as inspector and as Migrate's preflight."""
    async with daemon_on(system_bus.address, inspector=real_inspector, preflight=real_inspector) as served:
        yield served


@pytest.fixture
async def allowed(polkit: PolkitMock, client: BusClient) -> PolkitMock:
    await polkit.allow(client, ACTION_INSPECT, ACTION_MIGRATE)
    return polkit


@pytest.fixture
def vm(public_dir: Path) -> Iterator[dict[str, Path]]:
    yield make_vm(public_dir / "vm")


async def inspect_and_migrate(address: str, source: Path) -> list[dict[str, Any]]:
    _, replies = await as_nobody(address, inspect_call(str(source)), migrate_call(str(source)))
    return replies


async def test_caller_cannot_inspect_a_root_only_vmx(
    system_bus: PrivateBus,
    inspecting_daemon: Daemon,
    allowed: PolkitMock,
    vm: dict[str, Path],
) -> None:
    vm["vmx"].chmod(0o600)
    for reply in await inspect_and_migrate(system_bus.address, vm["vmx"]):
        assert reply["error"] == PERMISSION_DENIED, reply
        assert str(vm["vmx"]) in reply["text"]
    assert inspecting_daemon.manager.jobs == []


async def test_caller_cannot_inspect_through_a_symlink_into_a_closed_directory(
    system_bus: PrivateBus,
    inspecting_daemon: Daemon,
    allowed: PolkitMock,
    public_dir: Path,
) -> None:
    secret = make_vm(public_dir / "secret")
    (public_dir / "secret").chmod(0o700)
    link = public_dir / "link.vmx"
    link.symlink_to(secret["vmx"])
    for reply in await inspect_and_migrate(system_bus.address, link):
        assert reply["error"] == PERMISSION_DENIED, reply
        assert str(link) in reply["text"]
    assert inspecting_daemon.manager.jobs == []


@pytest.mark.parametrize("closed", ["descriptor", "extent"])
async def test_caller_cannot_inspect_a_vm_whose_disk_it_cannot_read(
    system_bus: PrivateBus,
    inspecting_daemon: Daemon,
    allowed: PolkitMock,
    vm: dict[str, Path],
    closed: str,
) -> None:
    vm[closed].chmod(0o600)
    for reply in await inspect_and_migrate(system_bus.address, vm["vmx"]):
        assert reply["error"] == PERMISSION_DENIED, reply
        assert str(vm[closed]) in reply["text"]
    assert inspecting_daemon.manager.jobs == []


async def test_caller_may_inspect_and_migrate_what_it_can_read(
    system_bus: PrivateBus,
    inspecting_daemon: Daemon,
    allowed: PolkitMock,
    vm: dict[str, Path],
) -> None:
    inspected, migrated = await inspect_and_migrate(system_bus.address, vm["vmx"])
    assert inspected["error"] == "", inspected
    assert '"name": "access"' in inspected["body"][0]
    assert migrated["error"] == "", migrated
    assert [job.user for job in inspecting_daemon.manager.jobs] == [NOBODY]


async def test_read_checked_vets_a_failed_preflight(public_dir: Path) -> None:
    vm = make_vm(public_dir / "vm")
    out = public_dir / "out"
    out.mkdir()
    vm["descriptor"].write_text("root:$6$SECRETHASH:19000:0:99999:7:::\n")
    options = MigrateOptions(output_dir=str(out))
    # Root sees the preflight's own error, quoting the file.
    with pytest.raises(Vm2kvmError, match="SECRETHASH"):
        await read_checked(DAEMON, asyncio.to_thread(migrate_preflight, str(vm["vmx"]), options))
    vm["descriptor"].chmod(0o600)
    with pytest.raises(Vm2kvmError) as info:
        await read_checked(USER, asyncio.to_thread(migrate_preflight, str(vm["vmx"]), options))
    assert (info.value.code, info.value.file) == (ErrorCode.PERMISSION_DENIED, str(vm["descriptor"]))
    # A good source: the result, once its files are checked.
    vm["descriptor"].unlink()
    write_descriptor(public_dir / "vm", "disk", ['RW 2048 FLAT "disk-flat.vmdk" 0']).chmod(0o644)
    result = await read_checked(USER, asyncio.to_thread(migrate_preflight, str(vm["vmx"]), options))
    assert result.vm.source_path == str(vm["vmx"])


async def test_a_failed_preflight_does_not_quote_a_file_the_caller_cannot_read(
    system_bus: PrivateBus,
    allowed: PolkitMock,
    vm: dict[str, Path],
    public_dir: Path,
) -> None:
    """A VMX the caller wrote naming a root-only file as its disk: the real preflight's error
    (broken disks refused) quotes the file's first line."""
    out = public_dir / "out"
    out.mkdir()

    def preflight(source: str, options: MigrateOptions) -> Any:
        return migrate_preflight(source, dataclasses.replace(options, output_dir=str(out)))

    vm["descriptor"].write_text("root:$6$SECRETHASH:19000:0:99999:7:::\n")
    vm["descriptor"].chmod(0o600)
    async with daemon_on(system_bus.address, inspector=real_inspector, preflight=preflight):
        _, (reply,) = await as_nobody(system_bus.address, migrate_call(str(vm["vmx"])))
    assert "SECRETHASH" not in reply.get("text", ""), reply
    assert reply["error"] == PERMISSION_DENIED, reply
