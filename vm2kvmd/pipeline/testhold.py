"""A test hook: hold a migration inside a phase, so a test can cancel or kill it there reliably.

``VM2KVMD_TEST_HOLD="phase[,phase...]:seconds"`` (e.g. ``copy:30`` or
``prepare,define:5``): on entering a listed phase the migration sleeps that
long; a cancelled job stops sleeping at once.  Only tests set it
(docs/development.md).  Each value is parsed once (a test may change the
variable between migrations); one that does not parse is ignored with a
warning, never a failed job.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from functools import cache

ENV = "VM2KVMD_TEST_HOLD"

_log = logging.getLogger(__name__)


@cache
def _parse(value: str) -> tuple[frozenset[str], float]:
    """(phases, seconds) of a value of the variable; no phases when empty or unusable."""
    value = value.strip()
    if not value:
        return frozenset(), 0.0
    phases, sep, seconds = value.rpartition(":")
    names = frozenset(p.strip() for p in phases.split(",") if p.strip())
    try:
        delay = float(seconds)
    except ValueError:
        delay = math.nan
    if not sep or not names or not math.isfinite(delay) or delay < 0:
        _log.warning("ignoring %s=%r: expected phase[,phase...]:seconds, e.g. copy:30", ENV, value)
        return frozenset(), 0.0
    _log.warning("%s: every migration waits %g s on entering phase %s", ENV, delay, ", ".join(sorted(names)))
    return names, delay


async def hold(phase: str) -> None:
    """Sleep as ``VM2KVMD_TEST_HOLD`` says when ``phase`` is listed (cancellable); else return at once."""
    names, delay = _parse(os.environ.get(ENV, ""))
    if phase in names and delay > 0:
        _log.info("%s: holding phase %s for %g s", ENV, phase, delay)
        await asyncio.sleep(delay)
