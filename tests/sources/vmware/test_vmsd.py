"""Reading a .vmsd from the host: errors, the file next to the VMX, saved memory (parsing: tests/core)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vm2kvmd.core.vmware.vmsd import MEMORY_VMSN_BYTES, vmsd_path_for
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.sources.vmware.vmsd import load_snapshot_tree, read_vmsd


def test_read_errors(tmp_path: Path) -> None:
    with pytest.raises(Vm2kvmError) as info:
        read_vmsd(str(tmp_path / "missing.vmsd"))
    assert info.value.code is ErrorCode.SOURCE_NOT_FOUND
    with pytest.raises(Vm2kvmError) as info:
        read_vmsd(str(tmp_path))
    assert info.value.code is ErrorCode.INVALID_SOURCE
    assert "regular file" in info.value.message


def test_load_finds_the_vmsd_and_sees_saved_memory(tmp_path: Path) -> None:
    vmx = tmp_path / "web01.vmx"
    assert vmsd_path_for(str(vmx)) == str(tmp_path / "web01.vmsd")
    assert load_snapshot_tree(str(vmx)) is None
    (tmp_path / "web01.vmsd").write_text(
        'snapshot.numSnapshots = "3"\nsnapshot.current = "3"\n'
        'snapshot0.uid = "1"\nsnapshot0.filename = "web01-Snapshot1.vmsn"\n'
        'snapshot1.uid = "2"\nsnapshot1.parent = "1"\nsnapshot1.filename = "web01-Snapshot2.vmsn"\n'
        'snapshot2.uid = "3"\nsnapshot2.parent = "2"\n'
        'snapshot2.filename = "C:\\\\VMs\\\\web01-Snapshot3.vmsn"\n'
    )
    (tmp_path / "web01-Snapshot1.vmsn").write_bytes(b"\0" * 4096)  # powered off: config only
    (tmp_path / "web01-Snapshot2.vmsn").write_bytes(b"\0" * 4096)
    (tmp_path / "web01-Snapshot2.vmem").write_bytes(b"")  # ESXi, Workstation: memory beside it
    with (tmp_path / "web01-Snapshot3.vmsn").open("wb") as f:  # older products: memory inside
        f.truncate(MEMORY_VMSN_BYTES)
    tree = load_snapshot_tree(str(vmx))
    assert tree is not None
    assert [s.has_memory for s in tree.snapshots] == [False, True, True]
