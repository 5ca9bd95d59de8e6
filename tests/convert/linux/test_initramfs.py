"""ensure_virtio_initramfs on phony guests, in one appliance (slow)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.guests.phony import centos6, debian11, rhel8, sles12, stub_calls
from tests.convert.steps_support import Appliance, context, guest, kernel, launch, text
from vm2kvmd.convert.context import GuestContext
from vm2kvmd.convert.linux.initramfs import ensure_virtio_initramfs
from vm2kvmd.core.guest.linux.initramfs import MARKER
from vm2kvmd.core.planning.guestcaps import GuestCaps

# A cold phony image build plus the launch can exceed the default 300 s on a loaded machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SCENARIOS = {
    "debian11": debian11,
    "debian11-fails": debian11,
    "rhel8": rhel8,
    "sles12": sles12,
    "centos6": centos6,
}
DEB_K = "5.10.0-28-amd64"
RHEL_K = "4.18.0-513.5.1.el8_9.x86_64"
SLES_K = "4.12.14-122.183-default"


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    pytest.importorskip("guestfs")
    yield from launch(SCENARIOS, tmp_path_factory.mktemp("initramfs"))


def _debian(appliance: Appliance, name: str, tmp_path: Path) -> GuestContext:
    disk = appliance.disk(name)
    k = kernel(DEB_K, f"/boot/vmlinuz-{DEB_K}", f"/boot/initrd.img-{DEB_K}")
    info = guest(f"{disk}1", "debian", initramfs_tool="initramfs-tools", kernels=(k,), default_kernel=DEB_K)
    return context(appliance.g, tmp_path, info, [("/", f"{disk}1")])


def test_debian11_initramfs_tools(appliance: Appliance, tmp_path: Path) -> None:
    ctx = _debian(appliance, "debian11", tmp_path)
    g = ctx.g
    ensure_virtio_initramfs(ctx)

    assert ["update-initramfs", "-u", "-k", DEB_K] in stub_calls(g)
    modules = text(g, "/etc/initramfs-tools/modules")
    assert modules.endswith(f"vmw_pvscsi\n{MARKER}\nvirtio_pci\nvirtio_blk\n")
    assert g.exists(f"/boot/initrd.img-{DEB_K}.vm2kvm-orig")
    assert ctx.caps.disk_bus == "virtio" and not ctx.notes
    assert [c.summary for c in ctx.changes] == [
        "/etc/initramfs-tools/modules: added virtio_pci, virtio_blk",
        f"rebuilt /boot/initrd.img-{DEB_K} with virtio_pci, virtio_blk (update-initramfs); "
        f"old image kept as /boot/initrd.img-{DEB_K}.vm2kvm-orig",
    ]


def test_debian11_failed_rebuild_falls_back_to_sata(appliance: Appliance, tmp_path: Path) -> None:
    ctx = _debian(appliance, "debian11-fails", tmp_path)
    g = ctx.g
    g.write("/etc/initramfs-tools/initramfs.conf", "MODULES=dep\nBUSYBOX=auto\n")
    g.write(
        "/usr/sbin/update-initramfs", "#!/bin/sh\necho 'E: mkinitramfs failure zstd -q -9 -T0 1'\nexit 1\n"
    )
    original = g.read_file(f"/boot/initrd.img-{DEB_K}")

    ensure_virtio_initramfs(ctx)  # does not raise

    assert ctx.caps.disk_bus == "sata"
    assert "mkinitramfs failure" in ctx.notes[0].message and "SATA" in ctx.notes[0].message
    assert g.read_file(f"/boot/initrd.img-{DEB_K}") == original
    assert text(g, "/etc/initramfs-tools/initramfs.conf").endswith("MODULES=most\nBUSYBOX=auto\n")


def test_virtio_off_or_builtin_does_nothing(appliance: Appliance, tmp_path: Path) -> None:
    ctx = _debian(appliance, "debian11", tmp_path)
    ctx.set_caps(GuestCaps(disk_bus="sata"))
    ensure_virtio_initramfs(ctx)
    assert not ctx.changes


def test_rhel8_dracut(appliance: Appliance, tmp_path: Path) -> None:
    disk = appliance.disk("rhel8")
    initrd = f"/boot/initramfs-{RHEL_K}.img"
    k = kernel(RHEL_K, f"/boot/vmlinuz-{RHEL_K}", initrd)
    info = guest("/dev/rhel/root", "rhel", initramfs_tool="dracut", kernels=(k,), default_kernel=RHEL_K)
    ctx = context(appliance.g, tmp_path, info, [("/", "/dev/rhel/root"), ("/boot", f"{disk}1")])
    ensure_virtio_initramfs(ctx)
    g = ctx.g
    # The stub logs "$*", so the quoted driver list comes back split: compare the joined line.
    calls = [" ".join(call) for call in stub_calls(g)]
    assert f"dracut -f --add-drivers virtio_pci virtio_blk {initrd} {RHEL_K}" in calls
    assert text(g, "/etc/dracut.conf.d/vm2kvm-virtio.conf").endswith(
        'add_drivers+=" virtio_pci virtio_blk "\n'
    )
    assert g.exists(initrd + ".vm2kvm-orig")


def test_sles_mkinitrd(appliance: Appliance, tmp_path: Path) -> None:
    disk = appliance.disk("sles12")
    initrd = f"/boot/initrd-{SLES_K}"
    k = kernel(SLES_K, f"/boot/vmlinuz-{SLES_K}", initrd)
    info = guest(f"{disk}2", "sles", initramfs_tool="mkinitrd", kernels=(k,), default_kernel=SLES_K)
    ctx = context(appliance.g, tmp_path, info, [("/", f"{disk}2")])
    ensure_virtio_initramfs(ctx)
    g = ctx.g
    assert ["mkinitrd", "-k", f"/boot/vmlinuz-{SLES_K}", "-i", initrd] in stub_calls(g)
    assert 'INITRD_MODULES="vmw_pvscsi virtio_pci virtio_blk"\n' in text(g, "/etc/sysconfig/kernel")


def test_kernel_without_virtio_stays_on_sata(appliance: Appliance, tmp_path: Path) -> None:
    disk = appliance.disk("centos6")
    k = kernel("2.6.32-754.35.1.el6.x86_64", "/boot/vmlinuz-2.6.32-754.35.1.el6.x86_64",
               "/boot/initramfs-2.6.32-754.35.1.el6.x86_64.img", frozenset({"ahci", "e1000"}))  # fmt: skip
    info = guest(f"{disk}2", "centos", initramfs_tool="dracut", kernels=(k,), default_kernel=k.version)
    ctx = context(appliance.g, tmp_path, info, [("/", f"{disk}2"), ("/boot", f"{disk}1")])
    ensure_virtio_initramfs(ctx)
    assert ctx.caps.disk_bus == "sata"
    assert ctx.notes[0].message == (
        f"disks stay on SATA: kernel {k.version} has no virtio_pci, virtio_blk driver"
    )
    assert not ctx.changes
