"""How long to wait before asking a busy ESXi again: its ``Retry-After``, else exponential backoff.

Pure.  ESXi answers ``503 Service Unavailable`` when too many transfers run against it, with a
``Retry-After`` header when it knows when it will have room.  The disk readers (nbdkit's curl
plugin with the retry filter) cannot read that header and back off 2, 4, 8, 16, 32 s; the
requests our own code makes (descriptor reads) follow the header when there is one, bounded the
same way, so a wrong or hostile value neither spins nor stalls a job.
"""

from __future__ import annotations

import email.utils

__all__ = ["BUSY_RETRIES", "MAX_DELAY", "retry_delay"]

BUSY_RETRIES = 5  # attempts after the first, as the disk readers' retry filter
MAX_DELAY = 32.0  # seconds: the readers' longest backoff step
_MIN_DELAY = 1.0


def retry_delay(retry_after: str | None, attempt: int, now: float) -> float:
    """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 0) after a 503.

    ``retry_after``: the header as sent (delay-seconds or an HTTP-date; None: absent); ``now``:
    the current time (seconds since the epoch) for an HTTP-date.  Without a usable header:
    2, 4, 8, 16, 32 s.  Always between 1 and ``MAX_DELAY`` seconds.
    """
    fallback = min(MAX_DELAY, 2.0 * float(2 ** min(attempt, 16)))
    if retry_after is None or not retry_after.strip():
        return fallback
    text = retry_after.strip()
    if text.isdigit():
        wanted = float(text)
    else:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return fallback
        if when.tzinfo is None:
            return fallback  # RFC 9110 dates are GMT; a date without a zone is not one
        wanted = when.timestamp() - now
    return max(_MIN_DELAY, min(MAX_DELAY, wanted))
