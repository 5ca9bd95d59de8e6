"""PathResolver's rules over a made-up host (the real one: tests/sources/vmware/test_paths.py)."""

from __future__ import annotations

import pytest

from tests.core.vmware.fake_host import FakeHost
from vm2kvmd.core.vmware.paths import PathResolver
from vm2kvmd.errors import ErrorCode, Vm2kvmError


def test_relative_absolute_and_windows_names() -> None:
    r = PathResolver("/vms/web", host=FakeHost())
    assert r.resolve("disk.vmdk").path == "/vms/web/disk.vmdk"
    assert r.resolve("/vms/web/sub/d.vmdk").path == "/vms/web/sub/d.vmdk"
    windows = r.resolve("C:\\VMs\\web\\disk.vmdk", key="k")
    assert windows.path == "/vms/web/disk.vmdk" and windows.note is not None


def test_a_symlink_leading_out_is_refused_by_what_the_host_says() -> None:
    host = FakeHost(links={"/vms/web/alias.vmdk": "/etc/shadow"})
    with pytest.raises(Vm2kvmError) as info:
        PathResolver("/vms/web", host=host).resolve(
            "alias.vmdk", key="scsi0:0.fileName", file="/vms/web/w.vmx"
        )
    assert info.value.code is ErrorCode.PATH_OUTSIDE_SOURCE and info.value.key == "scsi0:0.fileName"
    assert "/vms/web/alias.vmdk" in host.asked
    followed = PathResolver("/vms/web", host=host, allow_external=True).resolve("alias.vmdk")
    assert followed.path == "/etc/shadow" and followed.note is not None


def test_base_and_datastores_are_resolved_through_the_host() -> None:
    host = FakeHost(links={"/mnt/ds1": "/srv/san01", "/vms": "/data/vms"})
    r = PathResolver("/vms/web", host=host, datastores={"datastore1": "/mnt/ds1"})
    assert r.base_dir == "/data/vms/web"
    assert r.resolve("[datastore1] web/disk.vmdk").path == "/srv/san01/web/disk.vmdk"
    assert r.resolve("/vmfs/volumes/datastore1/web/disk.vmdk").path == "/srv/san01/web/disk.vmdk"
    with pytest.raises(Vm2kvmError) as info:
        r.resolve("[datastore2] web/disk.vmdk", key="k")
    assert info.value.code is ErrorCode.INVALID_VALUE


def test_an_image_never_read_is_not_contained() -> None:
    r = PathResolver("/vms/web", host=FakeHost())
    assert r.resolve("/srv/iso/debian.iso", contained=False).path == "/srv/iso/debian.iso"
