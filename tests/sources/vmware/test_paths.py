"""PathResolver on the host: every way a VMX or VMDK names a file, and the containment rule."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.sources.vmware.paths import local_resolver


@pytest.fixture
def root(tmp_path: Path) -> Path:
    # realpath: tmp_path may itself sit behind a symlink (macOS /tmp, some CI).
    return Path(os.path.realpath(tmp_path))


@pytest.fixture
def vm(root: Path) -> Path:
    d = root / "vm"
    (d / "sub").mkdir(parents=True)
    return d


def outside_error(fn: object, *args: object, **kwargs: object) -> Vm2kvmError:
    with pytest.raises(Vm2kvmError) as info:
        fn(*args, **kwargs)  # type: ignore[operator]
    assert info.value.code is ErrorCode.PATH_OUTSIDE_SOURCE, info.value.describe()
    return info.value


def test_relative_to_base_dir(vm: Path) -> None:
    r = local_resolver(str(vm))
    assert r.resolve("disk.vmdk").path == str(vm / "disk.vmdk")
    assert r.resolve("sub/disk.vmdk").path == str(vm / "sub" / "disk.vmdk")
    assert r.resolve("disk.vmdk").note is None


def test_relative_to_naming_file(vm: Path) -> None:
    # A VMDK's extents are relative to the descriptor, not to the VMX.
    r = local_resolver(str(vm))
    assert r.resolve("disk-flat.vmdk", relative_to=str(vm / "sub")).path == str(vm / "sub" / "disk-flat.vmdk")
    assert r.resolve("../disk.vmdk", relative_to=str(vm / "sub")).path == str(vm / "disk.vmdk")


def test_paths_are_normalised(vm: Path) -> None:
    r = local_resolver(str(vm))
    assert r.resolve("./sub/../disk.vmdk").path == str(vm / "disk.vmdk")
    assert r.resolve("sub//disk.vmdk").path == str(vm / "sub" / "disk.vmdk")


def test_dotdot_escape(vm: Path) -> None:
    err = outside_error(
        local_resolver(str(vm)).resolve, "../etc/passwd", key="scsi0:0.fileName", file="/x.vmx"
    )
    assert err.key == "scsi0:0.fileName" and err.file == "/x.vmx"
    assert "--allow-external-paths" in str(err) and "--datastore" in str(err)


def test_absolute_inside(vm: Path) -> None:
    r = local_resolver(str(vm))
    assert r.resolve(str(vm / "sub" / "d.vmdk")).path == str(vm / "sub" / "d.vmdk")
    assert r.resolve(str(vm)).path == str(vm)


def test_absolute_outside(vm: Path) -> None:
    outside_error(local_resolver(str(vm)).resolve, "/etc/shadow")


def test_sibling_with_common_prefix_is_outside(root: Path, vm: Path) -> None:
    (root / "vm2").mkdir()
    outside_error(local_resolver(str(vm)).resolve, str(root / "vm2" / "disk.vmdk"))
    outside_error(local_resolver(str(vm)).resolve, "../vm2/disk.vmdk")


def test_allow_external_gives_a_note(root: Path, vm: Path) -> None:
    r = local_resolver(str(vm), allow_external=True)
    resolved = r.resolve("../shared/base.vmdk", key="scsi0:0.fileName")
    assert resolved.path == str(root / "shared" / "base.vmdk")
    assert resolved.note is not None and resolved.note.key == "scsi0:0.fileName"
    assert str(root / "shared" / "base.vmdk") in resolved.note.message


def test_contained_false_skips_the_rule(vm: Path) -> None:
    resolved = local_resolver(str(vm)).resolve("/srv/iso/debian.iso", contained=False)
    assert resolved.path == "/srv/iso/debian.iso" and resolved.note is None


def test_datastore_mapped(root: Path, vm: Path) -> None:
    ds = root / "ds1"
    ds.mkdir()
    r = local_resolver(str(vm), datastores={"datastore1": str(ds)})
    assert r.resolve("[datastore1] vm/disk.vmdk").path == str(ds / "vm" / "disk.vmdk")
    assert r.resolve("[datastore1]vm/disk.vmdk").path == str(ds / "vm" / "disk.vmdk")
    assert r.resolve("[datastore1] my vm/my disk.vmdk").path == str(ds / "my vm" / "my disk.vmdk")
    assert r.resolve("[datastore1] vm/disk.vmdk").note is None


def test_datastore_with_spaces_in_name(root: Path, vm: Path) -> None:
    ds = root / "ds"
    ds.mkdir()
    r = local_resolver(str(vm), datastores={"SAN LUN 1": str(ds)})
    assert r.resolve("[SAN LUN 1] a/b.vmdk").path == str(ds / "a" / "b.vmdk")


def test_datastore_unmapped(vm: Path) -> None:
    with pytest.raises(Vm2kvmError) as info:
        local_resolver(str(vm)).resolve("[datastore2] vm/disk.vmdk", key="k", file="/f.vmx")
    err = info.value
    assert err.code is ErrorCode.INVALID_VALUE and err.key == "k" and err.file == "/f.vmx"
    assert "datastore2" in err.message and "--datastore 'datastore2=" in str(err)


def test_datastore_dotdot_escape(root: Path, vm: Path) -> None:
    ds = root / "ds1"
    ds.mkdir()
    r = local_resolver(str(vm), datastores={"datastore1": str(ds)})
    outside_error(r.resolve, "[datastore1] ../../etc/passwd")


def test_vmfs_volumes_mapped(root: Path, vm: Path) -> None:
    ds = root / "ds1"
    ds.mkdir()
    r = local_resolver(str(vm), datastores={"datastore1": str(ds)})
    assert r.resolve("/vmfs/volumes/datastore1/vm/vm.vmdk").path == str(ds / "vm" / "vm.vmdk")


def test_vmfs_volumes_unmapped(vm: Path) -> None:
    r = local_resolver(str(vm))
    outside_error(r.resolve, "/vmfs/volumes/5a1b2c3d-11223344-aabb-001122334455/vm/vm.vmdk")
    loose = local_resolver(str(vm), allow_external=True).resolve("/vmfs/volumes/datastore1/vm/vm.vmdk")
    assert loose.path == "/vmfs/volumes/datastore1/vm/vm.vmdk" and loose.note is not None


@pytest.mark.parametrize(
    "name",
    [
        "C:\\Users\\me\\Documents\\Virtual Machines\\web\\web.vmdk",
        "c:/Users/me/web/web.vmdk",
        "D:\\web.vmdk",
        "\\\\fileserver\\vms\\web\\web.vmdk",
    ],
)
def test_windows_path_looked_up_next_to_the_vm(vm: Path, name: str) -> None:
    resolved = local_resolver(str(vm)).resolve(name, key="scsi0:0.fileName")
    assert resolved.path == str(vm / "web.vmdk")
    assert resolved.note is not None and "Windows path" in resolved.note.message
    assert resolved.note.key == "scsi0:0.fileName"


def test_windows_path_next_to_naming_file(vm: Path) -> None:
    resolved = local_resolver(str(vm)).resolve("C:\\vms\\base.vmdk", relative_to=str(vm / "sub"))
    assert resolved.path == str(vm / "sub" / "base.vmdk")


def test_symlink_escaping(root: Path, vm: Path) -> None:
    secret = root / "secret.txt"
    secret.write_text("x")
    (vm / "disk-flat.vmdk").symlink_to(secret)
    (vm / "linkdir").symlink_to(root)
    r = local_resolver(str(vm))
    outside_error(r.resolve, "disk-flat.vmdk")
    outside_error(r.resolve, "linkdir/secret.txt")


def test_symlink_inside_resolves_to_target(vm: Path) -> None:
    (vm / "sub" / "real.vmdk").write_text("x")
    (vm / "alias.vmdk").symlink_to(vm / "sub" / "real.vmdk")
    assert local_resolver(str(vm)).resolve("alias.vmdk").path == str(vm / "sub" / "real.vmdk")


def test_base_dir_given_through_a_symlink(root: Path, vm: Path) -> None:
    (root / "link").symlink_to(vm)
    r = local_resolver(str(root / "link"))
    assert r.base_dir == str(vm)
    assert r.resolve("disk.vmdk", relative_to=str(root / "link" / "sub")).path == str(
        vm / "sub" / "disk.vmdk"
    )


def test_datastore_dirs_count_as_inside(root: Path, vm: Path) -> None:
    # A linked clone's base on another mapped datastore is expected, not external.
    ds = root / "golden"
    ds.mkdir()
    r = local_resolver(str(vm), datastores={"golden": str(ds)})
    resolved = r.resolve(str(ds / "base.vmdk"))
    assert resolved.path == str(ds / "base.vmdk") and resolved.note is None


@pytest.mark.parametrize("name", ["", "disk\x00.vmdk"])
def test_empty_or_nul(vm: Path, name: str) -> None:
    with pytest.raises(Vm2kvmError) as info:
        local_resolver(str(vm)).resolve(name, key="k")
    assert info.value.code is ErrorCode.INVALID_VALUE and info.value.key == "k"


@pytest.mark.parametrize("name", ["C:\\vms\\web\\", "C:\\vms\\..", "D:/."])
def test_windows_path_without_a_file(vm: Path, name: str) -> None:
    # These used to resolve to the VM directory (or its parent) instead of failing.
    with pytest.raises(Vm2kvmError) as info:
        local_resolver(str(vm)).resolve(name, key="k")
    assert info.value.code is ErrorCode.INVALID_VALUE and info.value.value == name
