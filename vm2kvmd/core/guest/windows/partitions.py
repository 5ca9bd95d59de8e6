"""Partition types read from a disk's first sectors (MBR or GPT): pure, so one ``pread_device``
replaces a parted/sfdisk run per partition (each costs about a second in a TCG appliance)."""

from __future__ import annotations

import struct
import uuid

SECTOR = 512
HEAD_BYTES = 34 * SECTOR  # protective MBR, GPT header and 128 entries of 128 bytes
GPT_PROTECTIVE = 0xEE
LDM_MBR_TYPE = 0x42
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LDM_GPT_TYPES = (
    "5808C8AA-7E8F-42E0-85D2-E1E90434CFB3",  # LDM metadata
    "AF9B60A0-1431-4F62-BC68-3311714A69AD",  # LDM data
)


def partition_types(head: bytes) -> dict[int, str]:
    """Partition number -> type: "0x42" for MBR entries, the type GUID (upper case) for GPT.

    Only primary MBR partitions (1-4): Windows never puts its system volume
    in an extended partition.  A disk without a boot signature has none.
    """
    if len(head) < SECTOR or head[510:512] != b"\x55\xaa":
        return {}
    entries = [struct.unpack_from("<B3sB3sII", head, 446 + 16 * n) for n in range(4)]
    if entries[0][2] == GPT_PROTECTIVE and head[SECTOR : SECTOR + 8] == b"EFI PART":
        return _gpt(head)
    return {n + 1: f"0x{e[2]:02x}" for n, e in enumerate(entries) if e[2] != 0}


def _gpt(head: bytes) -> dict[int, str]:
    entries_lba, count, size = struct.unpack_from("<QII", head, SECTOR + 72)
    found = {}
    for n in range(min(count, 128)):
        offset = entries_lba * SECTOR + n * size
        if offset + 16 > len(head):
            break
        kind = uuid.UUID(bytes_le=head[offset : offset + 16])
        if kind.int:
            found[n + 1] = str(kind).upper()
    return found


def is_ldm(kind: str) -> bool:
    return kind == f"0x{LDM_MBR_TYPE:02x}" or kind in LDM_GPT_TYPES
