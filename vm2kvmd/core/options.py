"""Caller options of Inspect/Migrate, validated once.

The D-Bus ``a{sv}`` and the CLI flags both end up here; unknown or malformed
options are an ``InvalidOption`` error naming the option.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from vm2kvmd.constants import (
    DEFAULT_DISK_PARALLELISM,
    DEFAULT_LIBVIRT_RETRY_SECONDS,
    DEFAULT_LIBVIRT_URI,
    DEFAULT_NETWORK,
    DEFAULT_POOL,
    DEFAULT_WORK_DIR,
)
from vm2kvmd.core.planning.diskbus import DISK_BUSES
from vm2kvmd.errors import ErrorCode, Vm2kvmError

FORMATS = ("qcow2", "raw")
DOMAIN_TYPES = ("kvm", "qemu")
SNAPSHOT_MODES = ("flatten", "keep")
_STRING_OPTIONS = frozenset(
    {
        "name",
        "pool",
        "output-dir",
        "format",
        "connect",
        "domain-type",
        "allocation",
        "snapshots",
        "root",
        "virtio-win",
        "disk-bus",
    }
)
_BOOL_OPTIONS = frozenset(
    {"allow-external-paths", "verify", "guest-conversion", "install-guest-agent", "shutdown-source", "force"}
)
ALLOCATIONS = ("sparse", "preallocated")


@dataclass(frozen=True)
class MigrateOptions:
    name: str | None = None  # domain name override
    pool: str | None = None  # libvirt storage pool (default: default_pool unless output_dir)
    output_dir: str | None = None  # write disks + XML here instead of a pool; define nothing
    format: str = "qcow2"
    networks: tuple[tuple[str, str], ...] = ()  # VMware network -> libvirt network
    bridges: tuple[tuple[str, str], ...] = ()  # VMware network -> host bridge
    # Every VMware network no pair names: ("network", NET) or ("bridge", BR), from a bare
    # entry of `network`/`bridge` (virt-v2v's `--bridge BR`); None: default_network with a note.
    other_networks: tuple[str, str] | None = None
    connect: str = DEFAULT_LIBVIRT_URI
    domain_type: str = "kvm"
    datastores: tuple[tuple[str, str], ...] = ()  # "[name] path" -> directory
    allow_external_paths: bool = False  # follow disk paths outside the VM directory
    verify: bool = False  # after copying, compare every target with its source (qemu-img compare)
    snapshots: str = "flatten"  # or "keep": one qcow2 volume per VMDK layer, libvirt snapshot metadata
    allocation: str = "sparse"  # or "preallocated": the target disks get all their space up front
    guest_conversion: bool = True  # convert the guest OS (libguestfs); False: copy and define as-is
    root: str | None = None  # multi-boot: the inspection root to convert (/dev/sda2); None: the first
    install_guest_agent: bool = False  # install qemu-guest-agent at first boot
    # A powered-on vSphere VM: shut its guest down first (VMware Tools); ``force``: power it off
    # when that is not possible.
    shutdown_source: bool = False
    force: bool = False
    virtio_win: str | None = None  # Windows drivers: virtio-win.iso or a directory; None: $VIRTIO_WIN
    disk_bus: str | None = None  # virtio, virtio-scsi or sata (core.planning.diskbus); None: the best
    # Not caller options (from_mapping refuses them): the daemon's configuration.
    work_dir: str = DEFAULT_WORK_DIR  # directory for per-job overlays
    default_pool: str = DEFAULT_POOL  # the pool when the caller names neither pool nor output-dir
    default_network: str = DEFAULT_NETWORK  # for VMware networks the caller does not map
    disk_parallelism: int = DEFAULT_DISK_PARALLELISM  # disks of one VM copied at once
    libvirt_retry_seconds: float = DEFAULT_LIBVIRT_RETRY_SECONDS  # how long a job waits for libvirtd

    @property
    def effective_pool(self) -> str | None:
        if self.output_dir:
            return None
        return self.pool or self.default_pool

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], defaults: MigrateOptions | None = None) -> MigrateOptions:
        """Build from D-Bus ``a{sv}`` (values already unwrapped from Variants)."""
        opts = defaults or cls()
        changes: dict[str, Any] = {}
        for key, value in raw.items():
            if key in _STRING_OPTIONS:
                text = _expect_str(key, value)
                attr = key.replace("-", "_")
                changes[attr] = text
            elif key == "datastore":
                changes["datastores"] = tuple(_parse_pair(key, item) for item in _expect_str_list(key, value))
            elif key in ("network", "bridge"):
                _network_entries(key, _expect_str_list(key, value), changes)
            elif key in _BOOL_OPTIONS:
                if not isinstance(value, bool):
                    raise _bad(key, value, "must be a boolean")
                changes[key.replace("-", "_")] = value
            else:
                raise Vm2kvmError(
                    ErrorCode.INVALID_OPTION,
                    f"unknown option {key!r}",
                    key=key,
                    hint="known options: name, pool, output-dir, format, allocation, network, bridge, "
                    "connect, domain-type, datastore, allow-external-paths, snapshots, verify, "
                    "guest-conversion, root, install-guest-agent, shutdown-source, force, virtio-win, "
                    "disk-bus",
                )
        result = replace(opts, **changes)
        result.validate()
        return result

    def to_mapping(self) -> dict[str, Any]:
        """The inverse of ``from_mapping`` for options that differ from the defaults."""
        out: dict[str, Any] = {}
        base = MigrateOptions()
        for attr, key in (
            ("name", "name"),
            ("pool", "pool"),
            ("output_dir", "output-dir"),
            ("format", "format"),
            ("connect", "connect"),
            ("domain_type", "domain-type"),
            ("allocation", "allocation"),
            ("snapshots", "snapshots"),
            ("root", "root"),
            ("virtio_win", "virtio-win"),
            ("disk_bus", "disk-bus"),
        ):
            if getattr(self, attr) != getattr(base, attr):
                out[key] = getattr(self, attr)
        if not self.guest_conversion:
            out["guest-conversion"] = False
        if self.install_guest_agent:
            out["install-guest-agent"] = True
        for attr, key in (("networks", "network"), ("bridges", "bridge"), ("datastores", "datastore")):
            entries = [f"{a}={b}" for a, b in getattr(self, attr)]
            if self.other_networks and self.other_networks[0] == key:
                entries.append(self.other_networks[1])
            if entries:
                out[key] = entries
        if self.allow_external_paths:
            out["allow-external-paths"] = True
        if self.verify:
            out["verify"] = True
        if self.shutdown_source:
            out["shutdown-source"] = True
        if self.force:
            out["force"] = True
        return out

    def _validate_snapshots(self) -> None:
        if self.snapshots not in SNAPSHOT_MODES:
            raise _bad("snapshots", self.snapshots, "must be one of " + ", ".join(SNAPSHOT_MODES))
        if self.snapshots != "keep":
            return
        # The layers are chained by qcow2 backing files, and the snapshots live in libvirt.
        if self.format != "qcow2":
            raise _snapshots_conflict(f"needs --format qcow2 (backing files), not {self.format}")
        if self.output_dir:
            raise _snapshots_conflict("needs a libvirt storage pool: snapshots are libvirt metadata")
        if self.guest_conversion:
            # Each snapshot's state would still have VMware drivers and device names, and its
            # libvirt metadata the buses of the unconverted guest: not done yet (docs/snapshots.md).
            raise Vm2kvmError(
                ErrorCode.INVALID_OPTION,
                "snapshots keep does not convert the guest yet",
                key="snapshots",
                value="keep",
                hint="add --no-guest-conversion (the VM keeps SATA disks and e1000 NICs), "
                "or use --snapshots flatten to convert the current state",
            )

    def _validate_disk_bus(self) -> None:
        if self.disk_bus is None:
            return
        if self.disk_bus not in DISK_BUSES:
            raise _bad("disk-bus", self.disk_bus, "must be one of " + ", ".join(DISK_BUSES))
        if not self.guest_conversion:
            # Only the conversion knows whether the guest has the driver, and puts it in its initramfs.
            raise Vm2kvmError(
                ErrorCode.INVALID_OPTION,
                "disk-bus needs the guest conversion: it checks the guest has the driver for the bus",
                key="disk-bus",
                value=self.disk_bus,
                hint="leave out --no-guest-conversion, or --disk-bus (the VM then keeps SATA disks)",
            )

    def validate(self) -> None:
        if self.format not in FORMATS:
            raise _bad("format", self.format, "must be one of " + ", ".join(FORMATS))
        if self.domain_type not in DOMAIN_TYPES:
            raise _bad("domain-type", self.domain_type, "must be one of " + ", ".join(DOMAIN_TYPES))
        if self.allocation not in ALLOCATIONS:
            raise _bad("allocation", self.allocation, "must be one of " + ", ".join(ALLOCATIONS))
        if not self.work_dir.startswith("/"):
            raise _bad("work-dir", self.work_dir, "must be an absolute path")
        if self.disk_parallelism < 1:
            raise _bad("disk-parallelism", self.disk_parallelism, "must be at least 1")
        self._validate_snapshots()
        if self.force and not self.shutdown_source:
            raise _bad("force", True, "only goes with shutdown-source (a hard power-off of the source VM)")
        if self.pool and self.output_dir:
            raise Vm2kvmError(
                ErrorCode.INVALID_OPTION,
                "pool and output-dir exclude each other",
                key="output-dir",
                hint="give one of them",
            )
        if self.output_dir is not None and not self.output_dir.startswith("/"):
            raise _bad("output-dir", self.output_dir, "must be an absolute path")
        if self.root is not None and not self.root.startswith("/dev/"):
            raise _bad("root", self.root, "must be a device as the conversion names it, like /dev/sda2")
        if self.virtio_win is not None and not self.virtio_win.startswith("/"):
            raise _bad(
                "virtio-win",
                self.virtio_win,
                "must be an absolute path of virtio-win.iso or of a directory holding its contents",
            )
        self._validate_disk_bus()
        if self.name is not None and not self.name.strip():
            raise _bad("name", self.name, "must not be empty")
        seen: set[str] = set()
        for vmnet, _ in self.networks + self.bridges:
            if vmnet in seen:
                raise _bad("network", vmnet, "is mapped twice (by --network/--bridge)")
            seen.add(vmnet)


def _snapshots_conflict(why: str) -> Vm2kvmError:
    return Vm2kvmError(
        ErrorCode.INVALID_OPTION,
        f"snapshots keep {why}",
        key="snapshots",
        value="keep",
        hint="use --snapshots flatten (the default) to migrate the current state only",
    )


def _bad(key: str, value: object, why: str) -> Vm2kvmError:
    return Vm2kvmError(ErrorCode.INVALID_OPTION, f"option {key} {why}", key=key, value=str(value))


def _expect_str(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise _bad(key, value, "must be a string")
    return value


def _expect_str_list(key: str, value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise _bad(key, value, "must be a list of strings")
    return list(value)


def _network_entries(key: str, items: list[str], changes: dict[str, Any]) -> None:
    """``VMWARE=TARGET`` pairs, and at most one bare ``TARGET`` for every other network."""
    pairs = []
    for item in items:
        if "=" not in item and item.strip():
            if changes.get("other_networks"):
                raise _bad(
                    key, item, f"maps every other network again (already to {changes['other_networks'][1]!r})"
                )
            changes["other_networks"] = (key, item)
        else:
            pairs.append(_parse_pair(key, item, "VMWARE=TARGET, or TARGET for every other network"))
    changes[f"{key}s"] = tuple(pairs)


def _parse_pair(key: str, item: str, form: str = "VMWARE=TARGET") -> tuple[str, str]:
    left, sep, right = item.partition("=")
    if not sep or not left or not right:
        raise _bad(key, item, f"must look like {form}")
    return left, right
