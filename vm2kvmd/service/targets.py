"""``Manager1.ListPoolsAndNetworks``: the pools, networks and bridges a caller can choose for
Migrate."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from vm2kvmd.adapters.libvirt_host import LibvirtHost
from vm2kvmd.adapters.libvirt_targets import host_bridges, pools_and_networks
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.errors import ErrorCode, Vm2kvmError

# Only where to look; every other Migrate option means nothing for a listing.
KNOWN_OPTIONS = ("connect",)


def listing_options(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The options of a listing, refused by name when unknown (as Migrate refuses them)."""
    for key in raw:
        if key not in KNOWN_OPTIONS:
            raise Vm2kvmError(
                ErrorCode.INVALID_OPTION,
                f"unknown option {key!r} for ListPoolsAndNetworks",
                key=key,
                hint="its only option is connect (a libvirt URI)",
            )
    return dict(raw)


def pools_and_networks_json(options: MigrateOptions) -> str:
    """The listing as JSON, with the daemon's defaults a Migrate without pool/network gets."""
    with LibvirtHost(options.connect) as host:
        pools, networks = pools_and_networks(host)
    return json.dumps(
        {
            "connect": options.connect,
            "default_pool": options.default_pool,
            "default_network": options.default_network,
            "pools": [asdict(p) for p in pools],
            "networks": [asdict(n) for n in networks],
            "bridges": host_bridges(),
        }
    )
