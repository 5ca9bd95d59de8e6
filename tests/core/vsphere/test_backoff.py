"""``Retry-After`` of a busy ESXi, bounded, else exponential backoff (``core.vsphere.backoff``)."""

from __future__ import annotations

import pytest

from vm2kvmd.core.vsphere.backoff import MAX_DELAY, retry_delay

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


@pytest.mark.parametrize(
    ("header", "attempt", "delay"),
    [
        (None, 0, 2.0),
        (None, 3, 16.0),
        (None, 9, MAX_DELAY),
        ("", 1, 4.0),
        ("7", 0, 7.0),
        (" 3 ", 4, 3.0),
        ("0", 0, 1.0),  # never a busy loop
        ("86400", 0, MAX_DELAY),  # never a stalled job
        ("Fri, 15 Jan 2027 08:00:10 GMT", 0, 10.0),
        ("Fri, 15 Jan 2027 07:59:00 GMT", 0, 1.0),  # already past
        ("soon", 2, 8.0),
        ("-5", 1, 4.0),
        ("Fri, 15 Jan 2027 08:00:10", 0, 2.0),  # no zone: not an HTTP-date
    ],
)
def test_retry_delay(header: str | None, attempt: int, delay: float) -> None:
    assert retry_delay(header, attempt, NOW) == delay
