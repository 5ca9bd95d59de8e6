"""What vm2kvmctl prints: job tables and details, results, inspection summaries.

Functions here turn data (job properties, the Inspect JSON) into text or
JSON-ready dicts; they do no D-Bus and no I/O beyond the console given.
"""

from __future__ import annotations

import datetime as dt
import pwd
from collections.abc import Iterable, Mapping
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from vm2kvmctl.client import job_number
from vm2kvmd.core.units import size_text

FINISHED = ("completed", "failed", "cancelled")


def human_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _time(us: int) -> str:
    if not us:
        return "-"
    return dt.datetime.fromtimestamp(us / 1_000_000).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def user_name(uid: int | None) -> str:
    """The user name of ``uid``, or the number when this host does not know it."""
    if uid is None:
        return "-"
    try:
        return pwd.getpwuid(int(uid)).pw_name
    except (KeyError, OverflowError, ValueError):
        return str(uid)


# --- jobs ---------------------------------------------------------------------


def job_error(props: Mapping[str, Any]) -> tuple[str, str]:
    """``(D-Bus error name, message)`` of a job; empty strings when none."""
    error = [str(part) for part in props.get("Error") or ()]
    return (error[0], error[1]) if len(error) == 2 else ("", "")


def job_json(path: str, props: Mapping[str, Any]) -> dict[str, Any]:
    """A job as ``--json`` prints it: stable snake_case keys."""
    error_name, error_message = job_error(props)
    return {
        "job": path,
        "number": job_number(path),
        "state": props.get("State", ""),
        "phase": props.get("Phase", ""),
        "progress": props.get("Progress", 0.0) if props.get("ProgressValid") else None,
        "bytes": props.get("Bytes", 0),
        "bytes_done": props.get("BytesDone", 0),
        "rate": props.get("Rate", 0),
        "start_time": props.get("StartTime", 0),
        "expected_end_time": props.get("ExpectedEndTime", 0),
        "source": props.get("Source", ""),
        "domain": props.get("Domain", ""),
        "outputs": list(props.get("Outputs", [])),
        "notes": list(props.get("Notes", [])),
        "disks": [
            {"key": key, "target": target, "bytes": total, "bytes_done": done}
            for key, target, total, done in props.get("Disks", [])
        ],
        "cancelable": props.get("Cancelable", False),
        "error": {"name": error_name, "message": error_message} if error_name else None,
        "options": dict(props.get("Options", {})),
        "user": props.get("User"),
        "user_name": user_name(props["User"]) if "User" in props else None,
        "queue_position": props.get("QueuePosition", 0),
        "create_time": props.get("CreateTime", 0),
        "end_time": props.get("EndTime", 0),
        "dismissed": props.get("Dismissed", False),
        "retry_of": props.get("RetryOf", 0),
    }


def _progress_cell(props: Mapping[str, Any]) -> str:
    if not props.get("ProgressValid"):
        return "-"
    return f"{props.get('Progress', 0.0) * 100:.0f}%"


def _state_cell(props: Mapping[str, Any]) -> str:
    state = str(props.get("State", ""))
    if state == "queued" and props.get("QueuePosition"):
        return f"{state} #{props['QueuePosition']}"
    return state


def jobs_table(console: Console, jobs: Mapping[str, Mapping[str, Any]], *, hidden: int = 0) -> None:
    """The jobs, one a row; ``hidden``: how many dismissed jobs were left out (said only when
    that leaves nothing to show: hiding them is what dismissing is for)."""
    more = f" ({hidden} dismissed; vm2kvmctl jobs --all shows them)" if hidden else ""
    if not jobs:
        console.print(f"No jobs.{more}", highlight=False, markup=False)
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("JOB", "STATE", "PHASE", "PROGRESS", "USER", "SOURCE", "DOMAIN"):
        table.add_column(column, justify="right" if column in ("JOB", "PROGRESS") else "left")
    for path, props in jobs.items():
        cells = (
            str(job_number(path)),
            _state_cell(props),
            props.get("Phase", "") or "-",
            _progress_cell(props),
            user_name(props.get("User")),
            props.get("Source", ""),
            props.get("Domain", "") or "-",
        )
        table.add_row(*(Text(cell) for cell in cells))  # Text: a "[x]" in a path is no markup
    console.print(table)


def _options_text(options: Mapping[str, Any]) -> str:
    parts: list[str] = []
    for key, value in options.items():
        if isinstance(value, list):
            parts.extend(f"--{key} {item}" for item in value)
        elif value is True:
            parts.append(f"--{key}")
        else:
            parts.append(f"--{key} {value}")
    return " ".join(parts) or "-"


def progress_text(props: Mapping[str, Any]) -> str:
    if not props.get("ProgressValid"):
        return "-"
    text = (
        f"{props.get('Progress', 0.0) * 100:.0f}% "
        f"({size_text(props.get('BytesDone'))} of {size_text(props.get('Bytes'))}"
    )
    if props.get("State") == "running" and props.get("Rate"):
        text += f", {size_text(props['Rate'])}/s"
        end = props.get("ExpectedEndTime", 0)
        if end:
            left = end / 1_000_000 - dt.datetime.now().timestamp()
            text += f", {human_duration(left)} left"
    return text + ")"


def job_details(console: Console, path: str, props: Mapping[str, Any]) -> None:
    state = props.get("State", "")
    phase = props.get("Phase", "")
    if phase and state == "running":
        state_line = f"{state} (phase {phase})"
    elif state == "queued" and props.get("QueuePosition"):
        state_line = f"{state} (position {props['QueuePosition']})"
    else:
        state_line = state
    if props.get("Dismissed"):
        state_line += ", dismissed"
    rows = [
        ("Job", f"{job_number(path)} ({path})"),
        ("State", state_line),
        ("Progress", progress_text(props)),
        ("Source", props.get("Source", "")),
        ("Domain", props.get("Domain", "") or "-"),
    ]
    if "User" in props:
        rows.append(("User", user_name(props["User"])))
    if props.get("RetryOf"):
        rows.append(("Retry of", f"job {props['RetryOf']}"))
    if "CreateTime" in props:
        rows.append(("Created", _time(props.get("CreateTime", 0))))
    rows.append(("Started", _time(props.get("StartTime", 0))))
    if "EndTime" in props:
        rows.append(("Ended", _time(props.get("EndTime", 0))))
    rows.append(("Options", _options_text(props.get("Options", {}))))
    error_name, error_message = job_error(props)
    if error_name:
        rows.append(("Error", error_message))
    width = max(len(label) for label, _ in rows) + 2
    for label, value in rows:
        console.print(f"{label + ':':<{width}}{value}", highlight=False, markup=False)
    _list(
        console,
        "Disks",
        [f"{k} -> {t}  {size_text(d)} of {size_text(b)}" for k, t, b, d in props.get("Disks", [])],
    )
    _list(console, "Outputs", props.get("Outputs", []))
    _list(console, "Notes", props.get("Notes", []))


def _list(console: Console, title: str, items: Iterable[str]) -> None:
    items = list(items)
    if not items:
        return
    console.print(f"{title}:", highlight=False, markup=False)
    for item in items:
        console.print(f"  {item}", highlight=False, markup=False, soft_wrap=True)


def job_result(console: Console, path: str, props: Mapping[str, Any]) -> None:
    """After a successful migration: what was made."""
    domain = props.get("Domain", "")
    what = f"domain {domain}" if domain else "disk images and domain XML"
    console.print(
        f"Job {job_number(path)} completed: {props.get('Source', '')} -> {what}",
        highlight=False,
        markup=False,
    )
    _list(console, "Outputs", props.get("Outputs", []))
    _list(console, "Notes", props.get("Notes", []))


# --- inspection -------------------------------------------------------------------


def _count(value: Any, word: str) -> str:
    return f"{value} {word}" if value == 1 else f"{value if value is not None else '?'} {word}s"


def _target(kind: str, target: Mapping[str, Any] | None) -> str:
    if not target:
        return "not mapped"
    return f"{kind} {target.get('dev', '?')} on {target.get('bus', '?')}"


def _disk_line(disk: Mapping[str, Any]) -> str:
    size = size_text(disk.get("virtual_size"), unknown="size unknown")
    line = f"{disk.get('key', '?')}: {disk.get('file', '?')} ({size})"
    if disk.get("missing"):
        return f"{line} MISSING: {disk.get('problem') or 'file not found'}"
    target = disk.get("target")
    if target:
        line += f" -> {target.get('bus', '?')} {target.get('dev', '?')}, {target.get('format', '?')}"
        line += f" {target.get('path', '')}"
    return line


def _cdrom_line(drive: Mapping[str, Any]) -> str:
    medium = drive.get("path") or drive.get("file") or drive.get("kind", "")
    if drive.get("kind") == "empty":
        medium = "empty"
    line = f"{drive.get('key', '?')}: {medium}"
    if drive.get("missing"):
        line += " (image missing)"
    return f"{line} -> {_target('drive', drive.get('target'))}"


def _nic_line(nic: Mapping[str, Any]) -> str:
    line = f"{nic.get('key', '?')}: {nic.get('mac') or 'no MAC'}, {nic.get('model', '?')}"
    line += f" on {nic.get('network', '?')!r}"
    target = nic.get("target")
    if not target:
        return f"{line} -> not mapped"
    link = "" if target.get("link_up", True) else ", link down"
    return (
        f"{line} -> {target.get('model', '?')} on {target.get('kind', '?')} {target.get('name', '?')!r}{link}"
    )


def inspection_summary(data: Mapping[str, Any]) -> list[str]:
    """The hardware found and what it becomes, one item per line."""
    lines = [f"Source:    {data.get('source', '')}"]
    name = data.get("name", "")
    if data.get("display_name") and data.get("display_name") != name:
        name = f"{name} (VMware: {data['display_name']})"
    lines.append(f"Name:      {name}")
    uuid = data.get("uuid", "")
    if data.get("source_uuid") and data["source_uuid"] != uuid:
        uuid = f"{uuid} (source {data['source_uuid']})"
    lines.append(f"UUID:      {uuid}")
    guest = data.get("guest_os", "")
    if data.get("hw_version"):
        guest = f"{guest}, virtual hardware {data['hw_version']}"
    lines.append(f"Guest OS:  {guest}")
    firmware = str(data.get("firmware", "")).upper()
    if data.get("secure_boot"):
        firmware += " with Secure Boot"
    lines.append(
        f"Firmware:  {firmware}; machine {data.get('machine', '?')}, type {data.get('domain_type', '?')}"
    )
    cpu = data.get("cpu") or {}
    topology = " x ".join(
        _count(cpu.get(key), word)
        for key, word in (("sockets", "socket"), ("cores", "core"), ("threads", "thread"))
    )
    lines.append(f"CPUs:      {cpu.get('vcpus', '?')} ({topology})")
    memory = data.get("memory") or {}
    lines.append(f"Memory:    {memory.get('size_mib', '?')} MiB")
    sections: list[tuple[str, list[str]]] = [
        ("Disks", [_disk_line(d) for d in data.get("disks", [])]),
        ("CD-ROMs", [_cdrom_line(d) for d in data.get("cdroms", [])]),
        ("Floppies", [_cdrom_line(d) for d in data.get("floppies", [])]),
        ("NICs", [_nic_line(n) for n in data.get("nics", [])]),
    ]
    for title, items in sections:
        if items or title in ("Disks", "NICs"):
            lines.append(f"{title}:" if items else f"{title}: none")
            lines.extend(f"  {item}" for item in items)
    video = data.get("video")
    if video:
        vram = size_text((video.get("vram_kib") or 0) * 1024)
        lines.append(f"Video:     {vram} VRAM -> {video.get('target_model') or 'none'}")
    else:
        lines.append("Video:     none")
    sound = data.get("sound")
    lines.append(
        f"Sound:     {sound['model']} -> {sound.get('target_model') or 'dropped'}"
        if sound
        else "Sound:     none"
    )
    usb = data.get("usb") or {}
    kinds = [
        label for key, label in (("uhci", "USB 1.1"), ("ehci", "USB 2.0"), ("xhci", "USB 3")) if usb.get(key)
    ]
    lines.append(f"USB:       {', '.join(kinds) or 'none'} -> {usb.get('target_model') or 'none'}")
    return lines
