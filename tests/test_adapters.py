"""The libvirt and qemu-img adapters against a real libvirtd and real qemu-img."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from testbed.disks import (
    MiB,
    images_equal,
    make_delta,
    make_unreadable_vmdk,
    make_vmdk,
    set_immutable,
    sha256_files,
    virtual_size,
)
from testbed.services import DirPool, child_pids, pid_alive
from vm2kvmd.adapters import qemu_img
from vm2kvmd.adapters.libvirt_host import LibvirtHost
from vm2kvmd.core.planning.blockdev import Node
from vm2kvmd.errors import ErrorCode, Vm2kvmError

URI = "qemu:///system"


@pytest.fixture
def host(libvirt_conn: Any) -> Any:
    libvirt_conn.current()  # a libvirtd answers
    with LibvirtHost(URI) as h:
        yield h


# --- LibvirtHost: pools and volumes ------------------------------------------


def test_pool_info(host: LibvirtHost, dir_pool: DirPool) -> None:
    info = host.pool(dir_pool.name)
    assert info.name == dir_pool.name
    assert info.type == "dir"
    assert info.path == str(dir_pool.path)
    assert info.available > 0


def test_missing_pool_names_it_and_lists_existing(host: LibvirtHost, dir_pool: DirPool) -> None:
    with pytest.raises(Vm2kvmError) as exc:
        host.pool("vm2kvm-no-such-pool")
    assert exc.value.code is ErrorCode.POOL_NOT_FOUND
    assert "'vm2kvm-no-such-pool'" in exc.value.message
    assert dir_pool.name in exc.value.message  # the pools that do exist


def test_inactive_pool_is_a_clear_error(host: LibvirtHost, dir_pool: DirPool) -> None:
    dir_pool.pool.destroy()
    with pytest.raises(Vm2kvmError) as exc:
        host.pool(dir_pool.name)
    assert exc.value.code is ErrorCode.POOL_NOT_FOUND
    assert "not active" in exc.value.message
    assert f"virsh pool-start {dir_pool.name}" in str(exc.value)


@pytest.mark.parametrize("fmt", ["qcow2", "raw"])
def test_create_and_delete_volume(host: LibvirtHost, dir_pool: DirPool, fmt: str) -> None:
    path = host.create_volume(dir_pool.name, f"disk.{fmt}", 48 * MiB, fmt)
    assert path == str(dir_pool.path / f"disk.{fmt}")
    assert virtual_size(path) == 48 * MiB
    assert host.volume_exists(dir_pool.name, f"disk.{fmt}")
    if fmt == "qcow2":  # qcow2 v3: zero clusters, so written zeroes stay sparse
        info = json.loads(
            subprocess.run(
                ["qemu-img", "info", "--output=json", path], capture_output=True, check=True
            ).stdout
        )
        assert info["format-specific"]["data"]["compat"] == "1.1"

    with pytest.raises(Vm2kvmError) as exc:
        host.create_volume(dir_pool.name, f"disk.{fmt}", 48 * MiB, fmt)
    assert exc.value.code is ErrorCode.VOLUME_EXISTS
    assert dir_pool.name in exc.value.message

    host.delete_volume(dir_pool.name, f"disk.{fmt}")
    assert not Path(path).exists()
    assert not host.volume_exists(dir_pool.name, f"disk.{fmt}")
    with pytest.raises(Vm2kvmError) as exc:
        host.delete_volume(dir_pool.name, f"disk.{fmt}")
    assert exc.value.code is ErrorCode.LIBVIRT_ERROR


def test_refresh_pool_finds_files_written_behind_libvirts_back(host: LibvirtHost, dir_pool: DirPool) -> None:
    (dir_pool.path / "stray.raw").write_bytes(b"\0" * 4096)
    host.refresh_pool(dir_pool.name)
    assert host.volume_exists(dir_pool.name, "stray.raw")


# --- LibvirtHost: networks and domains ----------------------------------------


def _domain_xml(name: str, dom_uuid: str) -> str:
    return (
        f"<domain type='qemu'><name>{name}</name><uuid>{dom_uuid}</uuid>"
        "<memory unit='MiB'>64</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64' machine='q35'>hvm</type></os></domain>"
    )


def test_define_and_undefine_domain(host: LibvirtHost, domain_name: str) -> None:
    dom_uuid = str(uuid.uuid4())
    assert not host.domain_exists(domain_name)
    assert not host.uuid_in_use(dom_uuid)
    assert host.define_domain(_domain_xml(domain_name, dom_uuid)) == domain_name
    try:
        assert host.domain_exists(domain_name)
        assert host.uuid_in_use(dom_uuid)
    finally:
        host.undefine_domain(domain_name)
    assert not host.domain_exists(domain_name)
    with pytest.raises(Vm2kvmError) as exc:
        host.undefine_domain(domain_name)
    assert exc.value.code is ErrorCode.LIBVIRT_ERROR


def test_define_rejects_same_name_other_uuid(host: LibvirtHost, domain_name: str) -> None:
    host.define_domain(_domain_xml(domain_name, str(uuid.uuid4())))
    try:
        with pytest.raises(Vm2kvmError) as exc:
            host.define_domain(_domain_xml(domain_name, str(uuid.uuid4())))
        assert exc.value.code is ErrorCode.DOMAIN_EXISTS
    finally:
        host.undefine_domain(domain_name)


def test_invalid_domain_xml_is_libvirt_error_with_libvirts_words(host: LibvirtHost, domain_name: str) -> None:
    with pytest.raises(Vm2kvmError) as exc:
        host.define_domain(f"<domain type='qemu'><name>{domain_name}</name></domain>")
    assert exc.value.code is ErrorCode.LIBVIRT_ERROR
    assert "libvirt refused the domain" in exc.value.message
    assert not host.domain_exists(domain_name)


def test_network_exists(host: LibvirtHost, test_network: str) -> None:
    assert host.network_exists(test_network)
    assert not host.network_exists("vm2kvm-no-such-network")


def test_unreachable_libvirt_is_libvirt_unavailable_at_once(tmp_path: Path) -> None:
    begin = time.monotonic()
    with LibvirtHost(f"qemu:///system?socket={tmp_path}/nothing") as bad, pytest.raises(Vm2kvmError) as exc:
        bad.domain_exists("x")
    assert time.monotonic() - begin < 1  # no patience given: no waiting
    assert exc.value.code is ErrorCode.LIBVIRT_UNAVAILABLE
    assert "cannot connect to libvirt" in exc.value.message
    assert "is libvirtd running?" in str(exc.value)


# --- qemu-img -----------------------------------------------------------------


def vmdk(path: Path | str, *parents: Path | str) -> Node:
    """A VMDK (and its explicit parents, nearest first) as a read-only source node."""
    node: Node = {"driver": "vmdk", "read-only": True, "file": {"driver": "file", "filename": str(path)}}
    if parents:
        node["backing"] = vmdk(*parents)
    return node


async def test_info_and_measure(tmp_path: Path) -> None:
    src = make_vmdk(tmp_path, "a.vmdk", 64 * MiB, writes=[(0, 8 * MiB, 0xAB)])
    info = await qemu_img.info(str(src))
    assert info["format"] == "vmdk"
    assert info["virtual-size"] == 64 * MiB
    required = await qemu_img.measure(vmdk(src), "qcow2")
    assert 8 * MiB <= required < 64 * MiB  # data plus qcow2 metadata, not the whole disk
    assert await qemu_img.measure(vmdk(src), "raw") == 64 * MiB


async def test_measure_of_a_missing_file_is_copy_failed(tmp_path: Path) -> None:
    with pytest.raises(Vm2kvmError) as exc:
        await qemu_img.measure(vmdk(tmp_path / "gone.vmdk"), "qcow2")
    assert exc.value.code is ErrorCode.COPY_FAILED
    assert exc.value.file == str(tmp_path / "gone.vmdk")
    assert "driver=" not in exc.value.message  # our --image-opts string is not shown


async def test_convert_reports_monotonic_progress_to_100(tmp_path: Path) -> None:
    src = make_vmdk(tmp_path, "src.vmdk", 64 * MiB, writes=[(0, 8 * MiB, 0xAB), (40 * MiB, 4 * MiB, 0x5A)])
    dst = tmp_path / "dst.qcow2"
    seen: list[float] = []
    await qemu_img.convert(
        vmdk(src), str(dst), dst_format="qcow2", on_progress=seen.append, target_exists=False
    )
    assert len(seen) > 2
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    assert seen[-1] == 100.0
    assert images_equal(src, dst, "vmdk", "qcow2")


async def test_convert_into_existing_libvirt_volume(
    host: LibvirtHost, dir_pool: DirPool, tmp_path: Path
) -> None:
    src = make_vmdk(tmp_path, "src.vmdk", 32 * MiB, writes=[(MiB, 2 * MiB, 0x11)])
    for fmt in ("qcow2", "raw"):
        path = host.create_volume(dir_pool.name, f"v.{fmt}", 32 * MiB, fmt)
        await qemu_img.convert(
            vmdk(src), path, dst_format=fmt, on_progress=lambda _p: None, target_exists=True
        )
        assert images_equal(src, path, "vmdk", fmt)
        assert virtual_size(path) == 32 * MiB


async def test_convert_delta_with_explicit_parent(tmp_path: Path) -> None:
    base = make_vmdk(tmp_path, "base.vmdk", 16 * MiB, writes=[(0, 4 * MiB, 0x01)])
    delta = make_delta(tmp_path, "delta.vmdk", base, writes=[(MiB, MiB, 0x02)])
    # The parent lives elsewhere under another name: only the explicit path finds it.
    moved = tmp_path / "elsewhere, with comma"
    moved.mkdir()
    base.rename(moved / "renamed.vmdk")
    dst = tmp_path / "out.raw"
    await qemu_img.convert(
        vmdk(delta, moved / "renamed.vmdk"),
        str(dst),
        dst_format="raw",
        on_progress=lambda _p: None,
        target_exists=False,
    )
    data = dst.read_bytes()
    assert data[:MiB] == b"\x01" * MiB
    assert data[MiB : 2 * MiB] == b"\x02" * MiB
    assert data[4 * MiB : 5 * MiB] == b"\0" * MiB


async def test_convert_opens_the_source_read_only(tmp_path: Path) -> None:
    src = make_vmdk(tmp_path, "src.vmdk", 16 * MiB)
    # Immutable: even root cannot open it for writing.
    if not set_immutable(src, True):
        pytest.skip("chattr +i not supported here")
    try:
        before = sha256_files(tmp_path)
        await qemu_img.convert(
            vmdk(src),
            str(tmp_path / "o.qcow2"),
            dst_format="qcow2",
            on_progress=lambda _p: None,
            target_exists=False,
        )
        assert {k: v for k, v in sha256_files(tmp_path).items() if k == "src.vmdk"} == {
            "src.vmdk": before["src.vmdk"]
        }
    finally:
        set_immutable(src, False)


async def test_convert_of_a_bad_file_is_copy_failed_naming_it(tmp_path: Path) -> None:
    src = tmp_path / "broken.vmdk"
    src.write_bytes(b"KDMV" + b"\xff" * 1020)  # sparse magic, garbage header
    with pytest.raises(Vm2kvmError) as exc:
        await qemu_img.convert(
            vmdk(src),
            str(tmp_path / "o.qcow2"),
            dst_format="qcow2",
            on_progress=lambda _p: None,
            target_exists=False,
        )
    assert exc.value.code is ErrorCode.COPY_FAILED
    assert exc.value.file == str(src)
    assert str(src) in str(exc.value)
    assert "driver=" not in str(exc.value)


async def test_read_error_in_the_middle_of_a_copy_is_copy_failed(tmp_path: Path) -> None:
    src = make_unreadable_vmdk(tmp_path, "bad-grain.vmdk")
    assert await qemu_img.measure(vmdk(src), "qcow2") > 0  # it opens fine
    seen: list[float] = []
    with pytest.raises(Vm2kvmError) as exc:
        await qemu_img.convert(
            vmdk(src),
            str(tmp_path / "o.qcow2"),
            dst_format="qcow2",
            on_progress=seen.append,
            target_exists=False,
        )
    assert exc.value.code is ErrorCode.COPY_FAILED
    assert exc.value.file == str(src)
    assert "error while reading" in exc.value.message
    assert seen and 0 < seen[-1] < 100


def _qemu_img_children() -> set[int]:
    out = set()
    for pid in child_pids():
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "qemu-img":
                out.add(pid)
        except OSError:
            pass
    return out


@pytest.mark.allow_blocking  # the progress callback lists /proc
async def test_cancel_kills_and_reaps_qemu_img(tmp_path: Path) -> None:
    src = make_vmdk(tmp_path, "big.vmdk", 512 * MiB, writes=[(0, 256 * MiB, 0xAB)])
    started = asyncio.Event()
    running: set[int] = set()

    def progress(_pct: float) -> None:
        running.update(_qemu_img_children())
        started.set()

    task = asyncio.create_task(
        qemu_img.convert(
            vmdk(src),
            str(tmp_path / "o.qcow2"),
            dst_format="qcow2",
            on_progress=progress,
            target_exists=False,
        )
    )
    await started.wait()
    assert running  # qemu-img was running when we cancelled
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not _qemu_img_children()
    assert not any(pid_alive(pid) for pid in running)


async def test_exception_in_progress_callback_kills_qemu_img(tmp_path: Path) -> None:
    src = make_vmdk(tmp_path, "src.vmdk", 64 * MiB)

    def progress(_pct: float) -> None:
        raise RuntimeError("consumer broke")

    with pytest.raises(RuntimeError, match="consumer broke"):
        await qemu_img.convert(
            vmdk(src),
            str(tmp_path / "o.qcow2"),
            dst_format="qcow2",
            on_progress=progress,
            target_exists=False,
        )
    assert not _qemu_img_children()
