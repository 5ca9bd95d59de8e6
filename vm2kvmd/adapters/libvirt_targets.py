"""What a migration can write to on a libvirt host: its storage pools, networks and bridges.

For frontends choosing ``pool`` and ``network`` options (the Cockpit page through
``Manager1.ListPoolsAndNetworks``).  Blocking, like ``LibvirtHost``; run in a thread.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt

from vm2kvmd.adapters.libvirt_host import BLOCK_POOL_TYPES, FILE_POOL_TYPES, LibvirtHost
from vm2kvmd.errors import ErrorCode, Vm2kvmError


@dataclass(frozen=True)
class PoolRow:
    name: str
    type: str  # dir, fs, netfs, logical, ...
    active: bool
    path: str  # <target><path>
    capacity: int  # bytes; 0 while inactive
    available: int
    usable: bool  # a pool type vm2kvm writes volumes into (files or LVM)


@dataclass(frozen=True)
class NetworkRow:
    name: str
    active: bool
    bridge: str  # the host bridge; "" when libvirt has none for it


def _pool_row(pool: Any) -> PoolRow:
    root = ET.fromstring(pool.XMLDesc(0))
    kind = root.get("type", "")
    active = bool(pool.isActive())
    _state, capacity, _allocation, available = pool.info() if active else (0, 0, 0, 0)
    return PoolRow(
        name=str(pool.name()),
        type=kind,
        active=active,
        path=root.findtext("target/path", default=""),
        capacity=int(capacity),
        available=int(available),
        usable=kind in FILE_POOL_TYPES or kind in BLOCK_POOL_TYPES,
    )


def _network_row(network: Any) -> NetworkRow:
    active = bool(network.isActive())
    try:
        bridge = str(network.bridgeName())
    except libvirt.libvirtError:
        bridge = ""  # a network without a bridge of its own (macvtap, hostdev)
    return NetworkRow(name=str(network.name()), active=active, bridge=bridge)


def pools_and_networks(host: LibvirtHost) -> tuple[list[PoolRow], list[NetworkRow]]:
    """Every pool and network of ``host``, each sorted by name."""
    conn = host.connection()
    try:
        pools = [_pool_row(p) for p in conn.listAllStoragePools(0)]
        networks = [_network_row(n) for n in conn.listAllNetworks(0)]
    except libvirt.libvirtError as err:
        raise Vm2kvmError(
            ErrorCode.LIBVIRT_ERROR,
            f"cannot list pools and networks on {host.uri}: {err.get_error_message()}",
        ) from err
    return sorted(pools, key=lambda p: p.name), sorted(networks, key=lambda n: n.name)


def host_bridges(sys_class_net: Path = Path("/sys/class/net")) -> list[str]:
    """The host's bridge interfaces (for ``bridge`` mappings), sorted: the kernel gives every
    bridge a ``bridge/`` directory in sysfs.  Bridges of libvirt networks (``virbr0``) are
    listed too; mapping to the network instead keeps libvirt in charge of them."""
    try:
        entries = list(sys_class_net.iterdir())
    except OSError:
        return []  # no sysfs (a container without it): nothing to offer, not an error
    return sorted(entry.name for entry in entries if (entry / "bridge").is_dir())
