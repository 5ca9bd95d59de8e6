"""An ESXi disk qemu cannot read by itself, through vm2kvmctl → D-Bus → vm2kvmd, with --verify."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from testbed.services import DirPool
from tests.e2e.support import DaemonProcess, VmxDisk, ctl, write_vmx
from tests.helpers.vmdk_factory import (
    MiB,
    default_pattern,
    delta_offsets,
    images_equal,
    make_delta,
    make_vmdk,
    pattern_regions,
    qemu_info,
    rewrite_descriptor,
    sha256_tree,
    write_reference_raw,
)

pytestmark = pytest.mark.libvirt


def test_vmfs_thin_on_a_datastore_with_a_sesparse_snapshot_verified(
    daemon: DaemonProcess, libvirt_conn: Any, dir_pool: DirPool, domain_name: str, tmp_path: Path
) -> None:
    size = 24 * MiB
    vmdir, store = tmp_path / "vm", tmp_path / "datastore1"
    base = make_vmdk(vmdir, "app", "vmfs", size)
    snap = make_delta(vmdir, "app-000001", base, subformat="seSparse")
    # As ESXi can leave it: a vmfsThin base whose flat extent lives on another datastore.
    (store / "flats").mkdir(parents=True)
    (vmdir / "app-flat.vmdk").rename(store / "flats" / "app-flat.vmdk")
    rewrite_descriptor(
        base,
        lambda t: t.replace('createType="vmfs"', 'createType="vmfsThin"').replace(
            '"app-flat.vmdk"', '"[datastore1] flats/app-flat.vmdk"'
        ),
    )
    vmx = write_vmx(vmdir, "Thin App", [VmxDisk("scsi0:0", snap.name)])
    reference = write_reference_raw(
        tmp_path / "ref.raw",
        size,
        pattern_regions(size, default_pattern("app")),
        pattern_regions(size, default_pattern("app-000001"), delta_offsets(size)),
    )
    before = {d: sha256_tree(d) for d in (vmdir, store)}

    run = ctl(
        daemon.address,
        "migrate",
        str(vmx),
        "--pool",
        dir_pool.name,
        "--name",
        domain_name,
        "--datastore",
        f"datastore1={store}",
        "--verify",
    )
    assert run.status == 0, run.err
    try:
        assert any(line.endswith(": phase verify") for line in run.err.splitlines()), run.err
        assert "  scsi0:0: verified: identical to the source" in run.out.splitlines()
        root = etree.fromstring(libvirt_conn.lookupByName(domain_name).XMLDesc(0).encode())
        (target,) = root.xpath("/domain/devices/disk[@device='disk']/source/@file")
        assert qemu_info(Path(target))["virtual-size"] == size
        assert images_equal(reference, Path(target), fmt_a="raw", fmt_b="qcow2")
    finally:
        libvirt_conn.lookupByName(domain_name).undefine()
    assert {d: sha256_tree(d) for d in (vmdir, store)} == before
