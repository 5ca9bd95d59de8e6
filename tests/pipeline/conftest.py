"""Fixtures shared by the disk pipeline tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pipeline.support import small_vm


@pytest.fixture
def three_disk_vm(tmp_path: Path) -> Path:
    """Three 128 MiB disks holding 96 MiB each: copies long enough to overlap."""
    return small_vm(tmp_path, 3, 128, 96)
