"""asyncio helpers for work that must finish even when its job is cancelled.

A thread cannot be interrupted and a killed child must still be reaped: when
a job is cancelled while ``create_volume`` runs in a worker thread, or while
qemu-img is being killed, we wait for that work to end (so the rollback sees
what it created, and no zombie is left) and re-deliver the cancellation after.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

_T = TypeVar("_T")
_P = ParamSpec("_P")


async def settle(aw: Awaitable[_T]) -> _T:
    """Await ``aw`` to its end even if we are cancelled meanwhile, then re-deliver the cancel."""
    task = asyncio.ensure_future(aw)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return result


async def in_thread(fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """``asyncio.to_thread`` that, when cancelled, first lets the thread finish."""
    return await settle(asyncio.to_thread(fn, *args, **kwargs))
