"""What the service hands the pipeline: host-wide copy slots, and the tests' phase hold."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from tests.pipeline.support import RecordingEvents
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.pipeline import run_migration
from vm2kvmd.pipeline.testhold import ENV, _parse, hold


def _options(tmp_path: Path, out: str) -> MigrateOptions:
    return MigrateOptions(
        name="slots",
        output_dir=str(tmp_path / out),
        work_dir=str(tmp_path / "work"),
        guest_conversion=False,
        disk_parallelism=3,
    )


async def test_copies_hold_a_host_slot_besides_the_jobs_own_limit(
    three_disk_vm: Path, tmp_path: Path
) -> None:
    # Without host slots, the job's own limit (3) lets every disk copy at once ...
    free = RecordingEvents()
    await run_migration(str(three_disk_vm), _options(tmp_path, "free"), free)
    assert free.most_concurrent() == 3
    # ... with one host slot, one disk at a time, and the slot is given back.
    slots = asyncio.Semaphore(1)
    held = RecordingEvents()
    result = await run_migration(str(three_disk_vm), _options(tmp_path, "held"), held, copy_slots=slots)
    assert held.most_concurrent() == 1
    assert len(held.progress) == 3 and all(
        reports[-1][0] == reports[-1][1] for reports in held.progress.values()
    )
    assert not slots.locked()
    assert len(result.outputs) == 4


async def test_two_jobs_share_the_host_slots(three_disk_vm: Path, tmp_path: Path) -> None:
    slots = asyncio.Semaphore(2)
    one, two = RecordingEvents(), RecordingEvents()
    await asyncio.gather(
        run_migration(str(three_disk_vm), _options(tmp_path, "one"), one, copy_slots=slots),
        run_migration(
            str(three_disk_vm),
            MigrateOptions(
                name="two",
                output_dir=str(tmp_path / "two"),
                work_dir=str(tmp_path / "work"),
                guest_conversion=False,
                disk_parallelism=3,
            ),
            two,
            copy_slots=slots,
        ),
    )
    # Both jobs' reports on one time line: never more than two disks copying across them.
    merged = RecordingEvents()
    merged.timeline = sorted(
        [(t, i, d, n) for t, i, d, n in one.timeline] + [(t, i + 10, d, n) for t, i, d, n in two.timeline]
    )
    assert merged.most_concurrent() <= 2
    assert not slots.locked()


# --- VM2KVMD_TEST_HOLD ------------------------------------------------------------------------------


def test_the_hold_value_is_parsed_and_a_bad_one_ignored_with_a_warning(caplog: Any) -> None:
    assert _parse("copy:30") == (frozenset({"copy"}), 30.0)
    assert _parse(" prepare, define :1.5") == (frozenset({"prepare", "define"}), 1.5)
    assert _parse("") == (frozenset(), 0.0)
    with caplog.at_level(logging.WARNING, logger="vm2kvmd.pipeline.testhold"):
        for bad in ("copy", "copy:", "copy:soon", ":5", "copy:-1", "copy:inf"):
            assert _parse(bad) == (frozenset(), 0.0), bad
    warned = [r.getMessage() for r in caplog.records if "ignoring" in r.getMessage()]
    assert len(warned) == 6 and all(ENV in w for w in warned)


async def test_hold_sleeps_in_listed_phases_only_and_is_cancellable(monkeypatch: Any) -> None:
    loop = asyncio.get_running_loop()
    monkeypatch.setenv(ENV, "copy,define:0.3")
    start = loop.time()
    await hold("prepare")
    assert loop.time() - start < 0.1
    start = loop.time()
    await hold("define")
    assert loop.time() - start >= 0.3
    monkeypatch.setenv(ENV, "copy:600")
    task = asyncio.create_task(hold("copy"))
    await asyncio.sleep(0.05)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    monkeypatch.setenv(ENV, "copy:bad")
    start = loop.time()
    await hold("copy")
    assert loop.time() - start < 0.1


async def test_a_migration_waits_in_a_held_phase(
    three_disk_vm: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv(ENV, "define:1")
    events = RecordingEvents()
    task = asyncio.create_task(run_migration(str(three_disk_vm), _options(tmp_path, "out"), events))
    for _ in range(3000):
        if "define" in events.phases or task.done():
            break
        await asyncio.sleep(0.01)
    assert "define" in events.phases
    await asyncio.sleep(0.5)
    assert not task.done()  # still waiting in define: the XML is not written yet
    assert not any(line.startswith("wrote ") for line in events.logs)
    await task
    assert any(line.startswith("wrote ") for line in events.logs)
