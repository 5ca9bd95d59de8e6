"""A VM named by its ``.vmx`` on the host, read into a ``SourceVM`` with every disk chain."""

from __future__ import annotations

import os
from collections.abc import Mapping

from vm2kvmd.core.hardware.model import SourceVM
from vm2kvmd.core.vmware.vmx_hardware import build_source_vm
from vm2kvmd.sources.vmware.paths import local_resolver
from vm2kvmd.sources.vmware.vmdk import load_chain
from vm2kvmd.sources.vmware.vmx import read_vmx

__all__ = ["load_source_vm"]


def load_source_vm(
    vmx_path: str,
    *,
    datastores: Mapping[str, str] | None = None,
    allow_external: bool = False,
) -> SourceVM:
    """Read the VMX at ``vmx_path`` and every disk chain it names (blocking)."""
    vmx = read_vmx(vmx_path)
    resolver = local_resolver(os.path.dirname(vmx.path), datastores=datastores, allow_external=allow_external)
    return build_source_vm(vmx, resolver, lambda path, key: load_chain(path, resolver, key=key))
