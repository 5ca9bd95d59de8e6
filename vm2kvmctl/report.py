"""``vm2kvmctl report``: the migration report (``Job1.GetReport``) as a readable sheet.

The daemon's report already holds the final words (``vm2kvmd/core/report.py``);
this module only lays them out: a side-by-side hardware table, the guest's
facts and file systems, the changes by area, the device choice and the notes.
It reads keys with ``.get`` so a newer daemon's additions never break it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

INDENT = 2


def _table(*columns: str) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for index, column in enumerate(columns):
        # The first column names the row: never broken; the others fold (long paths, UUIDs).
        table.add_column(column, no_wrap=index == 0, overflow="fold")
    return table


def _row(table: Table, *cells: Any) -> None:
    # Text: a "[x]" in a path or a summary is no markup.
    table.add_row(*(Text("-" if cell is None or cell == "" else str(cell)) for cell in cells))


def _heading(console: Console, title: str) -> None:
    console.print()
    console.print(Text(title, style="bold"))


def _indented(console: Console, table: Table, level: int = 1) -> None:
    console.print(Padding(table, (0, 0, 0, INDENT * level), expand=False))


def _line(console: Console, text: str, level: int = 1) -> None:
    console.print(Text(" " * (INDENT * level) + text), soft_wrap=True)


def print_report(console: Console, report: Mapping[str, Any]) -> None:
    """The whole report; sections in the order a migration engineer reads them."""
    if console.is_terminal:
        _print_report(console, report)
        return
    # In a file or a pipe: no trailing blanks from the table cells (diff- and grep-friendly).
    with console.capture() as capture:
        _print_report(console, report)
    for line in capture.get().splitlines():
        console.out(line.rstrip(), highlight=False)


def _print_report(console: Console, report: Mapping[str, Any]) -> None:
    console.print(
        Text(f"Migration report: {report.get('name', '?')} (from {report.get('source', '?')})", style="bold"),
        soft_wrap=True,
    )
    _hardware(console, report.get("hardware") or [])
    _guest(console, report.get("guest") or {})
    _changes(
        console, report.get("changes") or [], converted=bool((report.get("guest") or {}).get("converted"))
    )
    _devices(console, report.get("devices") or {})
    _notes(console, report.get("notes") or [])
    _timings(console, report.get("timings") or [])


def _hardware(console: Console, rows: Sequence[Mapping[str, Any]]) -> None:
    _heading(console, "Hardware")
    table = _table("ITEM", "SOURCE (VMware)", "TARGET (KVM)")
    for row in rows:
        _row(table, row.get("item"), row.get("source"), row.get("target"))
    _indented(console, table)


def _guest(console: Console, guest: Mapping[str, Any]) -> None:
    _heading(console, "Guest OS")
    if not guest.get("converted"):
        _line(console, str(guest.get("status") or "guest not converted"))
        return
    facts = _table("ITEM", "VALUE")
    for fact in guest.get("facts") or []:
        _row(facts, fact.get("item"), fact.get("value"))
    _indented(console, facts)
    filesystems = guest.get("filesystems") or []
    if filesystems:
        console.print()
        _line(console, "File systems:")
        table = _table("MOUNT POINT", "DEVICE", "ON KVM", "TYPE", "UUID", "LABEL")
        for fs in filesystems:
            _row(
                table,
                fs.get("mountpoint") or ("(swap)" if fs.get("type") == "swap" else "(not mounted)"),
                fs.get("device"),
                fs.get("target_device"),
                fs.get("type"),
                fs.get("uuid"),
                fs.get("label"),
            )
        _indented(console, table, level=2)


def _changes(console: Console, groups: Sequence[Mapping[str, Any]], *, converted: bool) -> None:
    _heading(console, "Changes made in the guest")
    if not groups:
        _line(console, "none" if converted else "none (guest not converted)")
        return
    for group in groups:
        _line(console, f"{group.get('area', '?')}:")
        for change in group.get("changes") or []:
            summary = str(change.get("summary", ""))
            path = change.get("path")
            if path and path not in summary:
                summary += f" ({path})"
            _line(console, f"- {summary}", level=2)


def _devices(console: Console, devices: Mapping[str, Any]) -> None:
    _heading(console, "Device choice")
    _line(console, str(devices.get("reason") or "-"))


def _notes(console: Console, notes: Sequence[str]) -> None:
    _heading(console, "Notes")
    if not notes:
        _line(console, "none")
    for note in notes:
        _line(console, f"- {note}")


def _timings(console: Console, timings: Sequence[Mapping[str, Any]]) -> None:
    if not timings:
        return
    _heading(console, "Conversion timings")
    parts = [f"{t.get('step', '?')} {float(t.get('seconds', 0)):.1f} s" for t in timings]
    total = sum(float(t.get("seconds", 0)) for t in timings)
    _line(console, ", ".join(parts) + f"; total {total:.1f} s")
