"""Bad input over D-Bus: each case gets a named ``org.vm2kvm.Error.*`` whose message
names the file, key or value, never a traceback; the daemon keeps serving and the
source files stay as they were.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.signature import Variant

from tests.e2e.support import DaemonProcess, VmxDisk, write_vmx
from tests.helpers.vmdk_factory import make_vmdk, rewrite_descriptor, sha256_tree
from vm2kvmd.constants import BUS_NAME, MANAGER_IFACE, MANAGER_PATH, error_name
from vm2kvmd.errors import ErrorCode

pytestmark = pytest.mark.libvirt

MiB = 1 << 20


@dataclass(frozen=True)
class Case:
    """``build(vmdir)`` writes the bad VM and returns the source path to send."""

    build: Callable[[Path], str]
    code: ErrorCode
    mentions: tuple[str, ...]  # every one must appear in the message
    method: str = "Migrate"
    options: dict[str, Variant] = field(default_factory=dict)


def vmx_text(vmdir: Path, text: str | bytes, name: str = "bad.vmx") -> str:
    path = vmdir / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return str(path)


GOOD = 'displayName = "ok"\nguestOS = "other-64"\nnumvcpus = "1"\nmemsize = "256"\n'


def with_disk(vmdir: Path, extra: str = "", subformat: str = "monolithicSparse") -> Path:
    disk = make_vmdk(vmdir, "disk", subformat, 8 * MiB)
    return Path(write_vmx(vmdir, "bad", [VmxDisk("scsi0:0", disk.name)], extra=extra))


def descriptor_case(transform: Callable[[str], str]) -> Callable[[Path], str]:
    def build(vmdir: Path) -> str:
        vmx = with_disk(vmdir, subformat="monolithicFlat")
        rewrite_descriptor(vmdir / "disk.vmdk", transform)
        return str(vmx)

    return build


def cyclic(vmdir: Path) -> str:
    for me, other in (("a", "b"), ("b", "a")):
        (vmdir / f"{me}.vmdk").write_text(
            "# Disk DescriptorFile\nversion=1\nCID=11111111\nparentCID=11111111\n"
            f'createType="monolithicFlat"\nparentFileNameHint="{other}.vmdk"\n'
            f'RW 2048 FLAT "{me}-flat.vmdk" 0\n'
        )
        (vmdir / f"{me}-flat.vmdk").write_bytes(b"\0" * 2048 * 512)
    return write_vmx_disk(vmdir, "a.vmdk")


def write_vmx_disk(vmdir: Path, file_name: str, key: str = "scsi0:0") -> str:
    return str(write_vmx(vmdir, "bad", [VmxDisk(key, file_name)]))


def missing_extent(vmdir: Path) -> str:
    vmx = with_disk(vmdir, subformat="monolithicFlat")
    (vmdir / "disk-flat.vmdk").unlink()
    return str(vmx)


def missing_parent(vmdir: Path) -> str:
    make_vmdk(vmdir, "base", "monolithicSparse", 8 * MiB)
    from tests.helpers.vmdk_factory import make_delta

    child = make_delta(vmdir, "child", vmdir / "base.vmdk")
    (vmdir / "base.vmdk").unlink()
    return write_vmx_disk(vmdir, child.name)


def cid_mismatch(vmdir: Path) -> str:
    make_vmdk(vmdir, "base", "monolithicFlat", 8 * MiB)
    from tests.helpers.vmdk_factory import make_delta

    child = make_delta(vmdir, "child", vmdir / "base.vmdk")
    rewrite_descriptor(vmdir / "base.vmdk", lambda t: re.sub(r"(?m)^CID=\w+", "CID=0badc1d0", t))
    return write_vmx_disk(vmdir, child.name)


def symlink_out(vmdir: Path) -> str:
    outside = vmdir.parent / "elsewhere"
    outside.mkdir()
    make_vmdk(outside, "secret", "monolithicSparse", 8 * MiB)
    os.symlink(outside / "secret.vmdk", vmdir / "link.vmdk")
    return write_vmx_disk(vmdir, "link.vmdk")


def dotdot(vmdir: Path) -> str:
    outside = vmdir.parent / "up"
    outside.mkdir()
    make_vmdk(outside, "d", "monolithicSparse", 8 * MiB)
    return write_vmx_disk(vmdir, "../up/d.vmdk")


CASES: dict[str, Case] = {
    "missing vmx": Case(lambda d: str(d / "nope.vmx"), ErrorCode.SOURCE_NOT_FOUND, ("nope.vmx",)),
    "directory": Case(lambda d: str(d), ErrorCode.SOURCE_NOT_FOUND, ("vm",)),
    "empty file": Case(lambda d: vmx_text(d, ""), ErrorCode.INVALID_SOURCE, ("bad.vmx",)),
    "binary garbage": Case(
        lambda d: vmx_text(d, bytes(range(256)) * 64), ErrorCode.INVALID_SOURCE, ("bad.vmx",)
    ),
    "nul bytes": Case(
        lambda d: vmx_text(d, GOOD.encode() + b"\0\0\0"), ErrorCode.INVALID_SOURCE, ("bad.vmx",)
    ),
    "truncated": Case(
        lambda d: vmx_text(d, GOOD + 'memsize = "10'), ErrorCode.INVALID_SOURCE, ("bad.vmx", "memsize")
    ),
    "huge file": Case(lambda d: vmx_text(d, GOOD + "#" * (5 * MiB)), ErrorCode.INVALID_SOURCE, ("bad.vmx",)),
    "huge memsize": Case(
        lambda d: vmx_text(d, GOOD + 'memsize = "1000000000000000000000000000000"'),
        ErrorCode.INVALID_VALUE,
        ("memsize",),
    ),
    "zero vcpus": Case(
        lambda d: vmx_text(d, GOOD + 'numvcpus = "0"'), ErrorCode.INVALID_VALUE, ("numvcpus", "0")
    ),
    "negative vcpus": Case(
        lambda d: vmx_text(d, GOOD + 'numvcpus = "-4"'), ErrorCode.INVALID_VALUE, ("numvcpus",)
    ),
    "word vcpus": Case(
        lambda d: vmx_text(d, GOOD + 'numvcpus = "two"'), ErrorCode.INVALID_VALUE, ("numvcpus", "two")
    ),
    "bad mac": Case(
        lambda d: vmx_text(
            d,
            GOOD + 'ethernet0.present = "TRUE"\nethernet0.addressType = "static"\n'
            'ethernet0.address = "00:50:56:zz:00:01"\n',
        ),
        ErrorCode.INVALID_VALUE,
        ("ethernet0.address", "00:50:56:zz:00:01"),
    ),
    "bad uuid": Case(
        lambda d: vmx_text(d, GOOD + 'uuid.bios = "56 4d xx"'), ErrorCode.INVALID_VALUE, ("uuid.bios",)
    ),
    "not utf-8 without encoding": Case(
        lambda d: vmx_text(d, GOOD.encode() + b'annotation = "caf\xe9"\n'),
        ErrorCode.INVALID_SOURCE,
        ("bad.vmx", ".encoding"),
    ),
    "missing disk": Case(lambda d: write_vmx_disk(d, "gone.vmdk"), ErrorCode.DISK_MISSING, ("gone.vmdk",)),
    "missing extent": Case(missing_extent, ErrorCode.DISK_MISSING, ("disk-flat.vmdk",)),
    "cyclic parents": Case(cyclic, ErrorCode.DISK_CHAIN_BROKEN, ("a.vmdk",)),
    "missing parent": Case(missing_parent, ErrorCode.DISK_CHAIN_BROKEN, ("base.vmdk",)),
    "cid mismatch": Case(cid_mismatch, ErrorCode.DISK_CHAIN_BROKEN, ("CID",)),
    "unknown createType": Case(
        descriptor_case(lambda t: t.replace('createType="monolithicFlat"', 'createType="wobbly"')),
        ErrorCode.UNSUPPORTED_DISK,
        ("wobbly", "disk.vmdk"),
    ),
    "rdm": Case(
        descriptor_case(lambda t: t.replace('createType="monolithicFlat"', 'createType="vmfsRawDeviceMap"')),
        ErrorCode.UNSUPPORTED_DISK,
        ("vmfsRawDeviceMap",),
    ),
    "huge extent": Case(
        descriptor_case(lambda t: t.replace("RW 16384 FLAT", "RW 99999999999999999999999 FLAT")),
        ErrorCode.INVALID_DISK,
        ("disk.vmdk",),
    ),
    "garbage descriptor": Case(
        lambda d: (write_vmx_disk(d, "g.vmdk"), (d / "g.vmdk").write_bytes(os.urandom(4096)))[0],
        ErrorCode.INVALID_DISK,
        ("g.vmdk",),
    ),
    "dotdot path": Case(dotdot, ErrorCode.PATH_OUTSIDE_SOURCE, ("../up/d.vmdk", "--allow-external-paths")),
    "symlink out": Case(symlink_out, ErrorCode.PATH_OUTSIDE_SOURCE, ("link.vmdk",)),
    "unmapped datastore": Case(
        lambda d: write_vmx_disk(d, "[datastore9] vm/disk.vmdk"), ErrorCode.INVALID_VALUE, ("datastore9",)
    ),
    "non-utf-8 file name": Case(
        lambda d: vmx_text(
            d,
            b'.encoding = "windows-1252"\n'
            + GOOD.encode()
            + b'scsi0.present = "TRUE"\nscsi0:0.present = "TRUE"\nscsi0:0.fileName = "d\xe9.vmdk"\n',
        ),
        ErrorCode.DISK_MISSING,
        ("dé.vmdk",),
    ),
    "unknown option": Case(
        lambda d: str(with_disk(d)),
        ErrorCode.INVALID_OPTION,
        ("frobnicate",),
        options={"frobnicate": Variant("s", "yes")},
    ),
    "bad format": Case(
        lambda d: str(with_disk(d)),
        ErrorCode.INVALID_OPTION,
        ("format", "vdi"),
        options={"format": Variant("s", "vdi")},
    ),
    "wrong option type": Case(
        lambda d: str(with_disk(d)), ErrorCode.INVALID_OPTION, ("name",), options={"name": Variant("u", 7)}
    ),
    "relative source": Case(lambda d: "vm/bad.vmx", ErrorCode.INVALID_OPTION, ("vm/bad.vmx",)),
    "missing pool": Case(
        lambda d: str(with_disk(d)),
        ErrorCode.POOL_NOT_FOUND,
        ("no-such-pool",),
        options={"pool": Variant("s", "no-such-pool")},
    ),
    "missing network": Case(
        lambda d: str(with_disk(d, 'ethernet0.present = "TRUE"\nethernet0.connectionType = "nat"\n')),
        ErrorCode.NETWORK_NOT_FOUND,
        ("no-such-net",),
        options={"network": Variant("as", ["nat=no-such-net"])},
    ),
    "inspect missing vmx": Case(
        lambda d: str(d / "nope.vmx"), ErrorCode.SOURCE_NOT_FOUND, ("nope.vmx",), method="Inspect"
    ),
    "inspect garbage": Case(
        lambda d: vmx_text(d, os.urandom(3000)), ErrorCode.INVALID_SOURCE, ("bad.vmx",), method="Inspect"
    ),
}


async def call(address: str, method: str, source: str, options: dict[str, Variant]) -> Message:
    bus = await MessageBus(bus_address=address).connect()
    try:
        return await bus.call(
            Message(
                destination=BUS_NAME,
                path=MANAGER_PATH,
                interface=MANAGER_IFACE,
                member=method,
                signature="sa{sv}",
                body=[source, options],
            )
        )
    finally:
        bus.disconnect()
        await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]


@pytest.mark.parametrize("case_name", list(CASES))
def test_bad_input_gets_a_named_error(
    case_name: str, daemon: DaemonProcess, dir_pool: Any, domain_name: str, tmp_path: Path
) -> None:
    case = CASES[case_name]
    vmdir = tmp_path / "vm"
    vmdir.mkdir()
    source = case.build(vmdir)
    before = sha256_tree(tmp_path)
    options = {"pool": Variant("s", dir_pool.name), "name": Variant("s", domain_name), **case.options}
    if case.method == "Inspect":
        options = dict(case.options)

    reply = asyncio.run(call(daemon.address, case.method, source, options))
    if case.method == "Migrate" and reply.message_type == MessageType.METHOD_RETURN:
        pytest.fail(f"{case_name}: Migrate accepted the job; errors must come before a job starts")
    assert reply.message_type == MessageType.ERROR, reply.body
    message = reply.body[0] if reply.body else ""
    assert reply.error_name == error_name(case.code), f"{case_name}: {reply.error_name}: {message}"
    for needle in case.mentions:
        assert needle in message, f"{case_name}: {needle!r} not in {message!r}"
    assert "Traceback" not in message and "\n" not in message
    assert sha256_tree(tmp_path) == before
    assert list(Path(dir_pool.path).iterdir()) == []
    assert daemon.alive


def test_there_are_at_least_25_bad_inputs() -> None:
    assert len(CASES) >= 25
