"""load_source_vm: a VMX and its disks read from the host (building the SourceVM: tests/core/vmware)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.core.vmware.vmx_support import BASE, DATA
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.sources.vmware.vm import load_source_vm


def test_every_data_file_loads_with_the_real_disk_loader() -> None:
    files = sorted(DATA.glob("*.vmx"))
    assert len(files) >= 8
    for path in files:
        vm = load_source_vm(str(path))
        assert vm.disks, path
        for disk in vm.disks:
            assert disk.chain is None and disk.problem
            assert disk.problem_code in (ErrorCode.DISK_MISSING, ErrorCode.PATH_OUTSIDE_SOURCE)


def test_load_source_vm_with_a_real_flat_disk(tmp_path: Path) -> None:
    (tmp_path / "disk-flat.vmdk").write_bytes(b"\0" * 2048 * 512)
    (tmp_path / "disk.vmdk").write_text(
        '# Disk DescriptorFile\nversion=1\nCID=1a2b3c4d\nparentCID=ffffffff\ncreateType="monolithicFlat"\n'
        'RW 2048 FLAT "disk-flat.vmdk" 0\nddb.adapterType = "buslogic"\n'
    )
    (tmp_path / "vm.vmx").write_text(
        BASE + 'scsi0.present = "TRUE"\nscsi0:0.present = "TRUE"\nscsi0:0.fileName = "disk.vmdk"\n'
        'scsi0:1.present = "TRUE"\nscsi0:1.fileName = "absent.vmdk"\n'
    )
    vm = load_source_vm(str(tmp_path / "vm.vmx"))
    ok, absent = vm.disks
    assert ok.chain is not None and ok.chain.virtual_size == 2048 * 512 and ok.problem is None
    assert vm.controllers[0].model == "buslogic"
    assert absent.chain is None and absent.problem_code is ErrorCode.DISK_MISSING


@pytest.mark.parametrize(
    ("content", "code", "key"),
    [
        (b"", ErrorCode.INVALID_SOURCE, None),
        (b'displayName = "x"\nmemsize = "10', ErrorCode.INVALID_SOURCE, "memsize"),
        (b"\x7fELF\x02\x01\x01\x00\x00\x00", ErrorCode.INVALID_SOURCE, None),
        (bytes(range(128, 256)) * 8, ErrorCode.INVALID_SOURCE, None),
        (
            b'displayName = "x"\nscsi0:0.fileName = "d\xe4.vmdk"\n',
            ErrorCode.INVALID_SOURCE,
            "scsi0:0.fileName",
        ),
        (b'.encoding = "EBCDIC-MARS"\ndisplayName = "\xff"\n', ErrorCode.INVALID_VALUE, ".encoding"),
        (b'memsize = "1000000000000000000000000000000"\n', ErrorCode.INVALID_VALUE, "memsize"),
    ],
    ids=["empty", "truncated", "binary", "garbage", "non-utf8-file-name", "unknown-encoding", "huge-memsize"],
)
def test_load_source_vm_rejects(tmp_path: Path, content: bytes, code: ErrorCode, key: str | None) -> None:
    path = tmp_path / "bad.vmx"
    path.write_bytes(content)
    with pytest.raises(Vm2kvmError) as info:
        load_source_vm(str(path))
    assert (info.value.code, info.value.key) == (code, key)
    assert str(path) in info.value.describe()


def test_load_source_vm_missing_and_directory(tmp_path: Path) -> None:
    for target in (tmp_path / "nope.vmx", tmp_path):
        with pytest.raises(Vm2kvmError) as info:
            load_source_vm(str(target))
        assert info.value.code is ErrorCode.SOURCE_NOT_FOUND
        assert str(target) in info.value.describe()
    big = tmp_path / "big.vmx"
    big.write_bytes(b'displayName = "x"\n' + b"#" * (5 * 1024 * 1024))
    with pytest.raises(Vm2kvmError) as info:
        load_source_vm(str(big))
    assert info.value.code is ErrorCode.INVALID_SOURCE and str(big) in info.value.describe()
