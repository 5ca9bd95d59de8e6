"""``vm2kvmctl migrate --snapshots keep`` through D-Bus and vm2kvmd; refusals answer ``Migrate``."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import Any

import libvirt
import pytest

from testbed.services import DirPool
from tests.e2e.support import DaemonProcess, VmxDisk, ctl, write_vmx
from tests.helpers.vmdk_factory import images_equal, make_delta, make_vmdk, sha256_tree

pytestmark = pytest.mark.libvirt

MiB = 1 << 20


def _vm(tmp_path: Path) -> tuple[Path, Path, list[Path]]:
    vmdir = tmp_path / "Kept"
    vmdir.mkdir()
    base = make_vmdk(vmdir, "kept", "monolithicSparse", 32 * MiB)
    d1 = make_delta(vmdir, "kept-000001", base)
    vmx = write_vmx(vmdir, "Kept", [VmxDisk("scsi0:0", d1.name)], nics=())
    vmx.with_suffix(".vmsd").write_text(
        '.encoding = "UTF-8"\nsnapshot.lastUID = "1"\nsnapshot.current = "1"\nsnapshot.numSnapshots = "1"\n'
        'snapshot0.uid = "1"\nsnapshot0.filename = "Kept-Snapshot1.vmsn"\n'
        'snapshot0.displayName = "Base line"\n'
        'snapshot0.createTimeHigh = "398532"\nsnapshot0.createTimeLow = "-1583618570"\n'
        'snapshot0.numDisks = "1"\nsnapshot0.disk0.fileName = "kept.vmdk"\nsnapshot0.disk0.node = "scsi0:0"\n'
    )
    return vmdir, vmx, [base, d1]


def _remove(conn: Any, name: str) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        conn.lookupByName(name).undefineFlags(
            libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        )


def test_keep_over_dbus(
    daemon: DaemonProcess, libvirt_conn: Any, dir_pool: DirPool, domain_name: str, tmp_path: Path
) -> None:
    vmdir, vmx, layers = _vm(tmp_path)
    before = sha256_tree(vmdir)
    run = ctl(
        daemon.address,
        "migrate",
        str(vmx),
        "--pool",
        dir_pool.name,
        "--name",
        domain_name,
        "--snapshots",
        "keep",
    )
    try:
        assert run.status == 0, run.err
        assert "kept as libvirt disk-only snapshots" in run.out + run.err
        pool = Path(dir_pool.path)
        assert dir_pool.volume_names() == [f"{domain_name}-disk1-kept.qcow2", f"{domain_name}-disk1.qcow2"]
        assert images_equal(layers[0], pool / f"{domain_name}-disk1-kept.qcow2", fmt_a="vmdk", fmt_b="qcow2")
        assert images_equal(layers[1], pool / f"{domain_name}-disk1.qcow2", fmt_a="vmdk", fmt_b="qcow2")
        listing = subprocess.run(
            ["virsh", "-c", "qemu:///system", "snapshot-list", domain_name, "--name"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        assert [line for line in listing if line.strip()] == ["Base line"]
    finally:
        _remove(libvirt_conn, domain_name)
    assert sha256_tree(vmdir) == before


def test_keep_refusals_answer_migrate(
    daemon: DaemonProcess, dir_pool: DirPool, domain_name: str, tmp_path: Path
) -> None:
    _, vmx, _ = _vm(tmp_path)
    vmx.with_suffix(".vmsd").write_text(
        vmx.with_suffix(".vmsd").read_text().replace('"kept.vmdk"', '"gone-000009.vmdk"')
    )
    run = ctl(
        daemon.address,
        "migrate",
        str(vmx),
        "--pool",
        dir_pool.name,
        "--name",
        domain_name,
        "--snapshots",
        "keep",
    )
    assert run.status == 1
    assert "gone-000009.vmdk" in run.err and "snapshot0.disk0.fileName" in run.err
    assert len(run.err.strip().splitlines()) == 1, run.err
    assert dir_pool.volume_names() == []

    run = ctl(
        daemon.address, "migrate", str(vmx), "--pool", dir_pool.name, "--snapshots", "keep", "--format", "raw"
    )
    assert run.status == 1
    assert "needs --format qcow2" in run.err
