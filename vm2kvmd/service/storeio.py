"""The job store as the event loop uses it: every call in one worker thread, in order.

``JobStore`` is blocking (SQLite); the event loop must never wait on a disk.
Writes (state changes, log lines) are fire-and-forget; reads and creates are
awaited.  One thread runs them all in submission order, so a read sees every
write submitted before it (``GetLog`` has the line just logged) and a job's
updates are applied in the order they happened.  A failing write is logged,
never raised into the job that made it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from vm2kvmd.service.store import JobStore

log = logging.getLogger(__name__)

T = TypeVar("T")


class StoreIO:
    """Runs calls on a ``JobStore`` in one worker thread.

    ``store`` None: an in-memory store, opened (in the worker) on first use.
    """

    def __init__(self, store: JobStore | None) -> None:
        self._store = store
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vm2kvm-store")
        self._closed = False

    def _get(self) -> JobStore:
        if self._store is None:
            self._store = JobStore.open(None)
        return self._store

    def submit(
        self,
        fn: Callable[..., T],
        *args: Any,
        on_done: Callable[[T], None] | None = None,
        **kwargs: Any,
    ) -> None:
        """``fn(store, *args, **kwargs)`` later; ``on_done(result)`` then runs on the event loop."""
        loop = asyncio.get_running_loop() if on_done is not None else None
        try:
            future = self._executor.submit(self._run, fn, args, kwargs)
        except RuntimeError:  # shut down: the daemon is exiting
            log.warning("job store closed; %s not written", fn.__name__)
            return

        def done(f: Future[T]) -> None:
            exc = f.exception()
            if exc is not None:
                log.error("job store: %s failed: %s", fn.__name__, exc)
            elif on_done is not None and loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(on_done, f.result())

        future.add_done_callback(done)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(store, *args, **kwargs)`` after everything submitted before; its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, fn, args, kwargs)

    def _run(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        return fn(self._get(), *args, **kwargs)

    async def store(self) -> JobStore:
        """The store (opened now if it is the in-memory default)."""
        return await self.call(_itself)

    async def close(self, *, close_store: bool) -> None:
        """Wait for every pending call; close the store too when it is ours.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close, close_store)
        self._executor.shutdown(wait=False)

    def _close(self, close_store: bool) -> None:
        if close_store and self._store is not None:
            self._store.close()


def _itself(store: JobStore) -> JobStore:
    return store
