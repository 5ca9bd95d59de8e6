"""The one byte-count formatter: the daemon's messages, the report and the CLI all print these."""

from __future__ import annotations

import pytest

from vm2kvmd.core.units import size_text


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0 B"),
        (512, "512 B"),
        (1023, "1023 B"),
        (512.4, "512 B"),  # a rate in bytes/s
        (1024, "1.0 KiB"),
        (1 << 20, "1.0 MiB"),
        (1536 << 20, "1.5 GiB"),
        (40 << 30, "40.0 GiB"),
        (3 << 40, "3.0 TiB"),
        (2048 << 40, "2048.0 TiB"),
    ],
)
def test_size_text(count: float, text: str) -> None:
    assert size_text(count) == text


def test_an_unknown_size_says_so() -> None:
    assert size_text(None) == "?"
    assert size_text(None, unknown="size unknown") == "size unknown"
