"""Byte counts as people read them: the one formatter for the daemon's messages, the report and the CLI."""

from __future__ import annotations


def size_text(count: float | None, unknown: str = "?") -> str:
    """``1.5 GiB``: binary units, one decimal, as VMware and libvirt tools show sizes.

    Whole bytes below 1 KiB (``512 B``, a rate of ``512.4`` too); ``unknown`` when there is no count.
    """
    if count is None:
        return unknown
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
