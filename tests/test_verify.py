"""--verify: the target is compared with what it should hold; a difference fails and rolls back."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import vm2kvmd.pipeline.copy as copy_module
import vm2kvmd.pipeline.strategies.flatten as flatten_module
from tests.cli.test_cli import assert_one_error_line, ctl
from tests.helpers.vmdk_factory import (
    MiB,
    default_pattern,
    make_vmdk,
    pattern_regions,
    sha256_tree,
    write_reference_raw,
)
from tests.pipeline.support import RecordingEvents as Events
from tests.service.support import ScriptedRunner, serve_daemon
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.core.planning.blockdev import Node, target_node
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.pipeline import run_migration
from vm2kvmd.pipeline.verify import VERIFIED, verify_disk

SIZE = 16 * MiB


def vmdk_node(path: Path) -> Node:
    return {"driver": "vmdk", "read-only": True, "file": {"driver": "file", "filename": str(path)}}


def write_vmx(directory: Path, disk: Path) -> Path:
    lines = [
        'config.version = "8"',
        'virtualHW.version = "19"',
        'guestOS = "debian12-64"',
        'memsize = "256"',
        'scsi0.present = "TRUE"',
        'scsi0:0.present = "TRUE"',
        f'scsi0:0.fileName = "{disk.name}"',
    ]
    vmx = directory / "Verify.vmx"
    vmx.write_text("\n".join(lines) + "\n")
    return vmx


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return make_vmdk(tmp_path / "vm", "disk", "monolithicSparse", SIZE)


@pytest.fixture
def reference(tmp_path: Path) -> Path:
    return write_reference_raw(tmp_path / "ref.raw", SIZE, pattern_regions(SIZE, default_pattern("disk")))


def options(tmp_path: Path, **kw: Any) -> MigrateOptions:
    return MigrateOptions(
        name="verified",
        output_dir=str(tmp_path / "out"),
        format="raw",
        domain_type="qemu",
        work_dir=str(tmp_path / "work"),
        **kw,
    )


# --- verify_disk ----------------------------------------------------------------------


async def test_identical_copy_is_verified(source: Path, reference: Path) -> None:
    seen: list[float] = []
    note = await verify_disk(
        vmdk_node(source),
        str(reference),
        "raw",
        size=SIZE,
        key="scsi0:0",
        label=str(source),
        on_progress=seen.append,
    )
    assert note.key == "scsi0:0" and note.message == VERIFIED
    assert str(note) == "scsi0:0: verified: identical to the source"
    assert seen and seen == sorted(seen)


async def test_difference_is_verify_failed_naming_the_offset(source: Path, reference: Path) -> None:
    await asyncio.to_thread(_poke, reference, 3 * MiB + 5)
    with pytest.raises(Vm2kvmError) as exc:
        await verify_disk(
            vmdk_node(source), str(reference), "raw", size=SIZE, key="scsi0:0", label=str(source)
        )
    assert exc.value.code is ErrorCode.VERIFY_FAILED
    assert exc.value.file == str(reference)
    message = str(exc.value)
    assert "disk scsi0:0: verification failed: the copy differs from the source" in message
    assert str(source) in message
    # qemu-img reports the first differing sector.
    assert f"at byte {3 * MiB}" in message
    assert "driver=" not in message


async def test_wrong_size_is_verify_failed(source: Path, tmp_path: Path) -> None:
    bigger = write_reference_raw(
        tmp_path / "big.raw", SIZE + MiB, pattern_regions(SIZE, default_pattern("disk"))
    )
    with pytest.raises(Vm2kvmError) as exc:
        await verify_disk(vmdk_node(source), str(bigger), "raw", size=SIZE, key="scsi0:0", label=str(source))
    assert exc.value.code is ErrorCode.VERIFY_FAILED
    assert f"virtual size of {SIZE + MiB} bytes, the source {SIZE}" in str(exc.value)


async def test_unreadable_target_is_copy_failed(source: Path, tmp_path: Path) -> None:
    gone = tmp_path / "gone.qcow2"
    with pytest.raises(Vm2kvmError) as exc:
        await verify_disk(vmdk_node(source), str(gone), "qcow2", size=SIZE, key="scsi0:0", label=str(source))
    assert exc.value.code is ErrorCode.COPY_FAILED
    assert str(gone) in str(exc.value)


async def test_what_the_target_should_equal_is_any_node(
    source: Path, reference: Path, tmp_path: Path
) -> None:
    # Later steps change a disk on the way (an overlay over the source); verify takes that node.
    changed = tmp_path / "changed.raw"
    await asyncio.to_thread(lambda: changed.write_bytes(reference.read_bytes()))
    await asyncio.to_thread(_poke, changed, 5 * MiB)
    expected = target_node(str(changed), "raw")
    note = await verify_disk(expected, str(changed), "raw", size=SIZE, key="sata0:1", label="the overlay")
    assert note.message == VERIFIED
    with pytest.raises(Vm2kvmError) as exc:
        await verify_disk(expected, str(reference), "raw", size=SIZE, key="sata0:1", label="the overlay")
    assert exc.value.code is ErrorCode.VERIFY_FAILED
    assert "differs from the source the overlay" in str(exc.value)


def _poke(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(b"\xee")


# --- in a migration ---------------------------------------------------------------------


async def test_migration_with_verify(source: Path, tmp_path: Path) -> None:
    vmx = await asyncio.to_thread(write_vmx, source.parent, source)
    before = await asyncio.to_thread(sha256_tree, source.parent)
    events = Events()
    result = await run_migration(str(vmx), options(tmp_path, verify=True), events)
    assert events.phases == ["inspect", "prepare", "copy", "verify", "define"]
    assert [str(n) for n in result.notes if n.message == VERIFIED] == [
        "scsi0:0: verified: identical to the source"
    ]
    assert any(line.startswith("verifying scsi0:0: comparing ") for line in events.logs)
    assert "scsi0:0: verified: identical to the source" in events.logs
    assert await asyncio.to_thread(sha256_tree, source.parent) == before


async def test_migration_without_verify_has_no_verify_phase(source: Path, tmp_path: Path) -> None:
    vmx = await asyncio.to_thread(write_vmx, source.parent, source)
    events = Events()
    result = await run_migration(str(vmx), options(tmp_path), events)
    assert "verify" not in events.phases
    assert not any(n.message == VERIFIED for n in result.notes)


async def test_mismatch_fails_the_job_and_rolls_back(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vmx = await asyncio.to_thread(write_vmx, source.parent, source)
    before = await asyncio.to_thread(sha256_tree, source.parent)
    real_copy = copy_module.copy_disks

    async def copy_then_corrupt(copies: Sequence[Any], *args: Any, **kwargs: Any) -> None:
        await real_copy(copies, *args, **kwargs)
        for copy in copies:  # as a bad disk or a buggy copy would
            await asyncio.to_thread(_poke, Path(copy.target), 1 * MiB + 100)

    monkeypatch.setattr(flatten_module, "copy_disks", copy_then_corrupt)
    events = Events()
    with pytest.raises(Vm2kvmError) as exc:
        await run_migration(str(vmx), options(tmp_path, verify=True), events)
    assert exc.value.code is ErrorCode.VERIFY_FAILED
    assert "disk scsi0:0: verification failed" in str(exc.value)
    assert f"at byte {1 * MiB}" in str(exc.value)
    assert events.phases[-2:] == ["verify", "cleanup"]
    assert not (tmp_path / "out").exists()  # the output directory was ours: gone with its files
    assert await asyncio.to_thread(os.listdir, tmp_path / "work") == []
    assert await asyncio.to_thread(sha256_tree, source.parent) == before


# --- options, D-Bus and CLI --------------------------------------------------------------


def test_verify_option() -> None:
    assert MigrateOptions.from_mapping({"verify": True}).verify is True
    assert MigrateOptions.from_mapping({}).verify is False
    assert MigrateOptions(verify=True).to_mapping() == {"verify": True}
    assert "verify" not in MigrateOptions().to_mapping()
    with pytest.raises(Vm2kvmError) as exc:
        MigrateOptions.from_mapping({"verify": "yes"})
    assert exc.value.code is ErrorCode.INVALID_OPTION
    assert exc.value.key == "verify"


async def test_cli_sends_verify(private_bus: str) -> None:
    runner = ScriptedRunner()
    async with serve_daemon(private_bus, runner=runner):
        run = await ctl(private_bus, "migrate", "/vms/a.vmx", "--verify")
        plain = await ctl(private_bus, "migrate", "/vms/a.vmx")
    assert run.status == 0 and plain.status == 0, run.err + plain.err
    assert [options.verify for _, options in runner.calls] == [True, False]


async def test_verify_failure_over_dbus_and_cli(private_bus: str) -> None:
    failure = Vm2kvmError(
        ErrorCode.VERIFY_FAILED,
        "disk scsi0:0: verification failed: the copy differs from the source /vms/a.vmdk at byte 512",
        file="/pool/a-disk1.qcow2",
    )
    async with serve_daemon(private_bus, runner=ScriptedRunner(fail=failure, fail_phase="define")):
        run = await ctl(private_bus, "migrate", "/vms/a.vmx", "--verify")
        as_json = await ctl(private_bus, "migrate", "/vms/a.vmx", "--verify", "--json")
    assert run.status == 1
    assert_one_error_line(run, str(failure))
    assert as_json.json()["error"] == {"name": "org.vm2kvm.Error.VerifyFailed", "message": str(failure)}
