"""The .vmsd parser: real-world layouts, the snapshot tree, times, damaged files (reading: tests/sources)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vm2kvmd.core.vmware.vmsd import (
    MEMORY_VMSN_BYTES,
    Snapshot,
    SnapshotTree,
    parse_vmsd,
    with_memory,
)
from vm2kvmd.errors import ErrorCode, Vm2kvmError

DATA = Path(__file__).resolve().parents[2] / "data" / "vmsd"
PATH = "/vms/web01/web01.vmsd"


def read(name: str) -> SnapshotTree:
    path = DATA / name
    return parse_vmsd(path.read_bytes(), str(path))


def parse(text: str) -> SnapshotTree:
    return parse_vmsd(text.encode(), PATH)


def parse_error(text: str) -> Vm2kvmError:
    with pytest.raises(Vm2kvmError) as info:
        parse(text)
    return info.value


def one(extra: str = "", *, head: str = 'snapshot.numSnapshots = "1"\n') -> str:
    return (
        head + 'snapshot0.uid = "1"\n'
        'snapshot0.displayName = "one"\n'
        'snapshot0.numDisks = "1"\n'
        'snapshot0.disk0.fileName = "web01.vmdk"\n'
        'snapshot0.disk0.node = "scsi0:0"\n' + extra
    )


# --- real-world files ----------------------------------------------------------------


def test_workstation_tree_with_a_branch() -> None:
    tree = read("ws17-win10-branch.vmsd")
    assert [s.uid for s in tree.snapshots] == [1, 2, 4]
    assert tree.current_uid == 4
    assert tree.current is not None and tree.current.name == "Test branch"
    fresh, office, branch = tree.snapshots
    assert fresh == Snapshot(
        uid=1,
        name="Fresh install",
        description="Windows 10 22H2\nbefore any updates",
        created_us=1711684617758198,
        parent_uid=None,
        disks=(("nvme0:0", "Windows 10 x64.vmdk"), ("nvme0:1", "Windows 10 x64-0.vmdk")),
        key="snapshot0",
        state_file="Windows 10 x64-Snapshot1.vmsn",
    )
    assert office.name == 'Office "365" installed'
    assert office.parent_uid == 1 and branch.parent_uid == 1
    assert office.created_us == 1711687406127060
    assert branch.disk_file("nvme0:1") == "Windows 10 x64-0-000003.vmdk"
    assert branch.disk_file("nvme0:2") is None
    assert [s.uid for s in tree.children(None)] == [1]
    assert [s.uid for s in tree.children(1)] == [2, 4]
    assert [s.uid for s in tree.ancestors(4)] == [4, 1]
    # snapshot.mru*, snapshotN.type and lastUID are not part of the model; nothing to note.
    assert tree.notes == ()


def test_esxi_file_ignores_entries_past_num_snapshots() -> None:
    tree = read("esxi7-db01.vmsd")
    assert [(s.uid, s.name) for s in tree.snapshots] == [(1, "pre-patch"), (3, "after patch, running")]
    assert tree.current_uid == 3
    assert tree.get(1).description == "CHG0012345: before the May patches"
    assert tree.get(3).description == ""
    assert tree.get(3).disks == (("scsi0:0", "db01-000001.vmdk"), ("scsi0:1", "db01_1-000001.vmdk"))
    assert tree.get(1).created_us == 1669649052664346
    assert tree.get(3).created_us == 1669891059848772
    assert [n.key for n in tree.notes] == ["snapshot.numSnapshots"]
    assert "leftovers" in tree.notes[0].message


def test_empty_file_is_an_empty_tree() -> None:
    tree = read("esxi-empty.vmsd")
    assert tree.snapshots == () and tree.current_uid is None and len(tree) == 0
    # ESXi keeps the last uid and a stale current after every snapshot was deleted.
    tree = parse(
        '.encoding = "UTF-8"\nsnapshot.lastUID = "7"\nsnapshot.current = "7"\nsnapshot.numSnapshots = "0"\n'
    )
    assert tree.snapshots == () and tree.current_uid is None


# --- values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("high", "low", "expected"),
    [
        ("0", "0", 0),
        ("1", "-1", 2**33 - 1),  # the low half is signed
        ("1", "4294967295", 2**33 - 1),  # ... or not
        ("388745", "1991180826", 1669649052664346),
    ],
)
def test_create_time(high: str, low: str, expected: int) -> None:
    tree = parse(one(f'snapshot0.createTimeHigh = "{high}"\nsnapshot0.createTimeLow = "{low}"\n'))
    assert tree.snapshots[0].created_us == expected


def test_missing_time_half_is_no_time() -> None:
    assert parse(one('snapshot0.createTimeHigh = "5"\n')).snapshots[0].created_us is None


def test_names_are_decoded_and_default_to_empty() -> None:
    tree = parse(one('snapshot0.description = "a|7Cb|0Ac %2f"\n').replace('"one"', '"  |22x|22  "'))
    snap = tree.snapshots[0]
    assert snap.name == '"x"'
    assert snap.description == "a|b\nc %2f"  # only VMware's |XX escapes, as in every VMX value
    assert parse(one().replace('snapshot0.displayName = "one"\n', "")).snapshots[0].name == ""


def test_node_keys_are_normalised() -> None:
    tree = parse(one().replace('"scsi0:0"', '"SCSI0:0 "'))
    assert tree.snapshots[0].disks == (("scsi0:0", "web01.vmdk"),)


def test_without_num_snapshots_every_entry_is_read() -> None:
    text = one(head="") + 'snapshot1.uid = "2"\nsnapshot1.parent = "1"\nsnapshot.current = "2"\n'
    tree = parse(text)
    assert [s.uid for s in tree.snapshots] == [1, 2]
    assert [n.key for n in tree.notes] == ["snapshot.numSnapshots"]
    assert tree.get(2).disks == ()


def test_disk_entries_past_num_disks_are_ignored() -> None:
    text = one(
        'snapshot0.disk1.fileName = "old.vmdk"\nsnapshot0.disk1.node = "scsi0:1"\nsnapshot.current = "1"\n'
    )
    tree = parse(text)
    assert tree.snapshots[0].disks == (("scsi0:0", "web01.vmdk"),)
    assert [n.key for n in tree.notes] == ["snapshot0.numDisks"]


def test_children_listed_before_their_parents_are_ordered_parents_first() -> None:
    text = (
        'snapshot.numSnapshots = "3"\nsnapshot.current = "5"\n'
        'snapshot0.uid = "5"\nsnapshot0.parent = "9"\n'
        'snapshot1.uid = "9"\nsnapshot1.parent = "2"\n'
        'snapshot2.uid = "2"\n'
    )
    tree = parse(text)
    assert [s.uid for s in tree.snapshots] == [2, 9, 5]
    assert [s.uid for s in tree.ancestors(5)] == [5, 9, 2]


def test_no_current_is_noted() -> None:
    tree = parse(one())
    assert tree.current_uid is None and tree.current is None
    assert [n.key for n in tree.notes] == ["snapshot.current"]


# --- damage ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code", "key", "words"),
    [
        (one().replace('snapshot0.uid = "1"\n', ""), ErrorCode.INVALID_SOURCE, "snapshot0.uid", "missing"),
        (
            one().replace('"1"\nsnapshot0.d', '"x"\nsnapshot0.d'),
            ErrorCode.INVALID_VALUE,
            "snapshot0.uid",
            "number",
        ),
        (one('snapshot0.parent = "4"\n'), ErrorCode.INVALID_SOURCE, "snapshot0.parent", "no snapshot"),
        (one('snapshot.current = "3"\n'), ErrorCode.INVALID_SOURCE, "snapshot.current", "no snapshot"),
        (one().replace('"scsi0:0"', '"ethernet0"'), ErrorCode.INVALID_VALUE, "snapshot0.disk0.node", "slot"),
        (
            one().replace('snapshot0.disk0.node = "scsi0:0"\n', ""),
            ErrorCode.INVALID_SOURCE,
            "snapshot0.disk0.node",
            "missing",
        ),
        (
            one().replace('"web01.vmdk"', '""'),
            ErrorCode.INVALID_SOURCE,
            "snapshot0.disk0.fileName",
            "missing",
        ),
        (one().replace('"1"\n', '"2"\n', 1), ErrorCode.INVALID_SOURCE, "snapshot1.uid", "numSnapshots is 2"),
        (
            one('snapshot0.disk1.fileName = "b.vmdk"\nsnapshot0.disk1.node = "scsi0:0"\n').replace(
                'snapshot0.numDisks = "1"', 'snapshot0.numDisks = "2"'
            ),
            ErrorCode.INVALID_VALUE,
            "snapshot0.disk1.node",
            "twice",
        ),
        (
            'snapshot.numSnapshots = "2"\nsnapshot0.uid = "3"\nsnapshot1.uid = "3"\n',
            ErrorCode.INVALID_VALUE,
            "snapshot1.uid",
            "another snapshot",
        ),
        (
            'snapshot.numSnapshots = "2"\nsnapshot0.uid = "1"\nsnapshot0.parent = "2"\n'
            'snapshot1.uid = "2"\nsnapshot1.parent = "1"\n',
            ErrorCode.INVALID_SOURCE,
            "snapshot0.parent",
            "loop",
        ),
        ("this is no vmsd\nat all\n", ErrorCode.INVALID_SOURCE, None, "snapshot database"),
        (
            'snapshot0.uid = "1"\nsnapshot0.displayName = "cut',
            ErrorCode.INVALID_SOURCE,
            "snapshot0.displayName",
            "truncated",
        ),
    ],
)
def test_damaged_files_are_errors_naming_the_key(
    text: str, code: ErrorCode, key: str | None, words: str
) -> None:
    err = parse_error(text)
    assert err.code is code
    assert err.key == key
    assert err.file == PATH
    assert words in err.message
    assert err.hint


def test_with_memory_asks_only_for_names_next_to_the_vmsd() -> None:
    tree = parse(
        'snapshot.numSnapshots = "3"\nsnapshot.current = "3"\n'
        'snapshot0.uid = "1"\nsnapshot0.filename = "web01-Snapshot1.vmsn"\n'
        'snapshot1.uid = "2"\nsnapshot1.parent = "1"\nsnapshot1.filename = "web01-Snapshot2.vmsn"\n'
        'snapshot2.uid = "3"\nsnapshot2.parent = "2"\n'
        'snapshot2.filename = "C:\\\\VMs\\\\web01-Snapshot3.vmsn"\n'
    )
    sizes = {
        "/vms/web01/web01-Snapshot1.vmsn": 4096,  # powered off: config only
        "/vms/web01/web01-Snapshot2.vmsn": 4096,
        "/vms/web01/web01-Snapshot2.vmem": 0,  # memory beside it
        "/vms/web01/web01-Snapshot3.vmsn": MEMORY_VMSN_BYTES,  # older products: memory inside
    }
    asked: list[str] = []

    def size_of(path: str) -> int | None:
        asked.append(path)
        return sizes.get(path)

    assert [s.has_memory for s in with_memory(tree, size_of).snapshots] == [False, True, True]
    assert all(p.startswith("/vms/web01/") for p in asked)
