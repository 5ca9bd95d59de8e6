"""Free space is what an unprivileged writer may use: the blocks ext4 keeps for root do not count.

Measured on a real loop-mounted ext4 with half its blocks reserved, through
each of the three readers that share ``adapters.free_space``: the work-area
preflight of a guest conversion, the OVA extraction (in
``tests/test_ova_compressed.py``) and an output directory.  Each test would
fail if the measure counted root's reserve (``f_bfree``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.small_fs import MiB, Mounted, ext4_with_reserve
from vm2kvmd.adapters.free_space import free_space
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.core.units import size_text
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.pipeline.overlay import CONVERSION_SPACE, check_conversion_space
from vm2kvmd.pipeline.targets import DirTarget


@pytest.fixture
def reserved(tmp_path: Path) -> Iterator[Mounted]:
    with ext4_with_reserve(tmp_path) as mounted:
        # The reserve is real, or these tests could not tell the two measures apart.
        assert mounted.bfree() - mounted.bavail() > 10 * MiB
        yield mounted


def test_free_space_leaves_out_roots_reserve(reserved: Mounted) -> None:
    assert free_space(str(reserved.path)) == reserved.bavail()
    # A directory made later (a job's work area, an output directory): its file system's figure.
    assert free_space(str(reserved.path / "not" / "yet")) == reserved.bavail()


def test_the_conversion_preflight_names_the_work_dir_and_what_is_free(reserved: Mounted) -> None:
    work_dir = str(reserved.path / "work")
    with pytest.raises(Vm2kvmError) as caught:
        check_conversion_space(work_dir)
    err = caught.value
    free = reserved.bavail()
    assert err.code is ErrorCode.NO_SPACE and free < CONVERSION_SPACE
    assert err.file == work_dir and err.key == "work-dir"
    assert err.message == (
        f"the work directory {work_dir} is too full: "
        f"a guest conversion needs 1.0 GiB free there, {size_text(free)} ({free} bytes) free"
    )
    assert "--work-dir" in (err.hint or "")


def test_an_output_directory_counts_what_is_free_for_us(reserved: Mounted) -> None:
    target = DirTarget(MigrateOptions(name="vm", output_dir=str(reserved.path / "out")))
    assert target.available() == reserved.bavail()
