"""Progress bookkeeping of a job: the moving-window rate (``state``) and the signal batcher
(``dbus_object``).  They know nothing about jobs, only about samples and property names.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Final

BATCH_INTERVAL: Final = 0.1  # seconds: at most 10 PropertiesChanged per second per job
RATE_WINDOW: Final = 5.0  # seconds of progress samples behind ``Rate``


class RateMeter:
    """Bytes per second over the last ``window`` seconds of samples."""

    def __init__(self, window: float = RATE_WINDOW, clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window
        self._clock = clock
        # Made by the first sample: a daemon keeps a thousand finished jobs, none of which
        # will ever sample again (a deque is 600 bytes).
        self._samples: deque[tuple[float, int]] | None = None
        self._rate = 0

    def add(self, done: int) -> None:
        now = self._clock()
        if self._samples is None:
            self._samples = deque()
        self._samples.append((now, done))
        # Keep one sample at or before the window start as the baseline.
        while len(self._samples) > 2 and self._samples[1][0] <= now - self._window:
            self._samples.popleft()
        first_t, first_done = self._samples[0]
        if now - first_t >= 0.2:
            self._rate = max(0, int((done - first_done) / (now - first_t)))

    @property
    def rate(self) -> int:
        return self._rate


class PropertyBatcher:
    """Collects changed property names; emits at most once per ``interval`` unless told ``now``."""

    def __init__(self, emit: Callable[[list[str]], None], interval: float = BATCH_INTERVAL) -> None:
        self._emit = emit
        self._interval = interval
        self._dirty: dict[str, None] = {}
        self._last = float("-inf")
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def changed(self, *names: str, now: bool = False) -> None:
        if self._closed:
            return
        self._dirty.update(dict.fromkeys(names))
        if now:
            self.flush()
        elif self._timer is None:
            loop = asyncio.get_running_loop()
            delay = max(0.0, self._last + self._interval - loop.time())
            self._timer = loop.call_later(delay, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._dirty:
            return
        names = list(self._dirty)
        self._dirty.clear()
        self._last = asyncio.get_running_loop().time()
        self._emit(names)

    def close(self) -> None:
        self.flush()
        self._closed = True
