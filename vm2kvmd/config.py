"""The daemon's configuration file, ``/etc/vm2kvm/vm2kvmd.conf`` (TOML), parsed into ``DaemonConfig``.

Every key is optional; a key we do not know is an error (a typo would
otherwise be silently ignored).  ``ConfigError`` is the one line the admin
sees: file, key, what is wrong and the value.  Parsing is pure
(``parse_config``); ``load_config`` only adds reading the file.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields, replace
from typing import Any

from vm2kvmd.constants import (
    DEFAULT_CONFIG_PATH,
    DEFAULT_CONNECTIONS_PER_HOST,
    DEFAULT_DISK_PARALLELISM,
    DEFAULT_HOST_DISK_PARALLELISM,
    DEFAULT_JOB_RETENTION,
    DEFAULT_LIBVIRT_RETRY_SECONDS,
    DEFAULT_LIBVIRT_URI,
    DEFAULT_MAX_PARALLEL_JOBS,
    DEFAULT_NETWORK,
    DEFAULT_POOL,
    DEFAULT_STATE_DIR,
    DEFAULT_WORK_DIR,
)


@dataclass(frozen=True)
class DaemonConfig:
    state_dir: str = DEFAULT_STATE_DIR  # the daemon's persistent state (the job store)
    work_dir: str = DEFAULT_WORK_DIR  # per-job overlays
    max_parallel_jobs: int = DEFAULT_MAX_PARALLEL_JOBS  # jobs running at once; the others queue
    disk_parallelism: int = DEFAULT_DISK_PARALLELISM  # disks of one VM copied at once
    host_disk_parallelism: int = DEFAULT_HOST_DISK_PARALLELISM  # disk copies at once, all jobs
    job_retention: int = DEFAULT_JOB_RETENTION  # finished jobs kept in the store
    default_pool: str = DEFAULT_POOL
    default_network: str = DEFAULT_NETWORK
    libvirt_uri: str = DEFAULT_LIBVIRT_URI
    libvirt_retry_seconds: int = DEFAULT_LIBVIRT_RETRY_SECONDS  # a job waits this long for libvirtd
    # HTTP connections to one ESXi/vCenter host from the disk readers of all jobs
    vsphere_connections_per_host: int = DEFAULT_CONNECTIONS_PER_HOST


class ConfigError(Exception):
    """An unusable configuration; ``str()`` is the one line to print."""

    def __init__(self, path: str, why: str, key: str | None = None, value: object = None) -> None:
        self.path = path
        self.key = key
        self.value = value
        self.why = why
        text = f"{path}: key {key}: {why}" if key is not None else f"{path}: {why}"
        if key is not None:
            text += f" (value {_show(value)})"
        super().__init__(text)


_PATH_KEYS = ("state_dir", "work_dir")
_INT_KEYS = (
    "max_parallel_jobs",
    "disk_parallelism",
    "host_disk_parallelism",
    "job_retention",
    "libvirt_retry_seconds",
    "vsphere_connections_per_host",
)
_NAME_KEYS = ("default_pool", "default_network", "libvirt_uri")
KNOWN_KEYS = tuple(f.name for f in fields(DaemonConfig))


def parse_config(text: str, path: str) -> DaemonConfig:
    """``text`` (the contents of ``path``, which only names it in errors) as a ``DaemonConfig``."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, f"not valid TOML: {exc}") from exc
    return config_from_mapping(raw, path)


def config_from_mapping(raw: dict[str, Any], path: str) -> DaemonConfig:
    changes: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _PATH_KEYS:
            if not isinstance(value, str) or not value.startswith("/"):
                raise ConfigError(path, "must be an absolute path", key, value)
        elif key in _INT_KEYS:
            # bool is an int in Python; `true` is not a count.
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(path, "must be an integer ≥ 1", key, value)
        elif key in _NAME_KEYS:
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(path, "must be a non-empty string", key, value)
        else:
            why = "unknown key (known: " + ", ".join(KNOWN_KEYS) + ")"
            raise ConfigError(path, why, key, value)
        changes[key] = value
    return replace(DaemonConfig(), **changes)


def load_config(path: str | None) -> DaemonConfig:
    """The file at ``path``, or the default file; a missing default file means all defaults.

    Blocking: called once at start-up, before the event loop runs.
    """
    explicit = path is not None
    path = path if path is not None else DEFAULT_CONFIG_PATH
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError as exc:
        if not explicit:
            return DaemonConfig()
        raise ConfigError(path, "no such file") from exc
    except OSError as exc:
        raise ConfigError(path, f"cannot read: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(path, f"not valid TOML: not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    return parse_config(text, path)


def _show(value: object) -> str:
    """The value as the admin wrote it, short: strings quoted, tables and arrays abbreviated."""
    text = repr(value) if isinstance(value, str) else _toml_literal(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _toml_literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    return repr(value) if not isinstance(value, list) else "[" + ", ".join(_show(v) for v in value) + "]"
