"""Partition types from a disk's first sectors, on the tables the phony Windows builder writes
(those are checked against sfdisk in tests/testbed/test_windows_images.py)."""

from __future__ import annotations

from dataclasses import replace

from testbed.guests.windows.build import gpt, mbr
from testbed.guests.windows.layout import SECTOR, win11_uefi, win2019, win2019_dynamic
from vm2kvmd.core.guest.windows.partitions import ESP_TYPE, LDM_GPT_TYPES, is_ldm, partition_types


def test_mbr_types() -> None:
    layout = win2019()
    assert partition_types(mbr(layout.disk_signature, layout.partitions)) == {1: "0x07", 2: "0x07"}
    dynamic = win2019_dynamic()
    types = partition_types(mbr(dynamic.disk_signature, dynamic.partitions))
    assert [n for n, kind in types.items() if is_ldm(kind)] == [2]


def test_gpt_types() -> None:
    layout = win11_uefi()
    first, _ = gpt((layout.disk_mib << 20) // SECTOR, layout.disk_guid, layout.partitions)
    types = partition_types(first)
    assert types[1] == ESP_TYPE and len(types) == 3
    ldm = [replace(p, gpt_type=LDM_GPT_TYPES[1]) if p.role == "c" else p for p in layout.partitions]
    first, _ = gpt((layout.disk_mib << 20) // SECTOR, layout.disk_guid, ldm)
    assert [n for n, kind in partition_types(first).items() if is_ldm(kind)] == [3]


def test_no_table() -> None:
    assert partition_types(bytes(34 * SECTOR)) == {}
    assert partition_types(b"") == {}
