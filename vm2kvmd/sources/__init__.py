"""Source VMs of every kind, read into the same ``SourceVM``: ``.vmx``, ``.ovf`` and ``.ova``.

``load_source`` (blocking) dispatches on the file name's extension, case
insensitive: ``.ova`` is an OVF package in a tar, ``.ovf`` a descriptor next to
its files, anything else a VMX (whose reader says so when it is none).
``verify_source`` (async) checks an OVF package's manifest; a migration job
calls it once, before converting.  Neither writes anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable, Mapping

from vm2kvmd.aio import settle
from vm2kvmd.core.hardware.model import SourceVM
from vm2kvmd.errors import Vm2kvmError
from vm2kvmd.sources.ovf.ova import GzipOvaPackage, OvaPackage, is_gzip
from vm2kvmd.sources.ovf.ovf_files import OvfFilesPackage
from vm2kvmd.sources.ovf.package import Package, load_vm, verify
from vm2kvmd.sources.vmware.vm import load_source_vm

__all__ = ["extracted_at_migration", "load_source", "open_package", "source_kind", "verify_source"]


def source_kind(path: str) -> str:
    """``ova``, ``ovf`` or ``vmx``, from the extension."""
    ext = os.path.splitext(path)[1].lower()
    return {".ova": "ova", ".ovf": "ovf"}.get(ext, "vmx")


def open_package(
    path: str, *, datastores: Mapping[str, str] | None = None, allow_external: bool = False
) -> Package | None:
    """The OVF package at ``path``; None for a VMX."""
    kind = source_kind(path)
    if kind == "ova":
        path = os.path.abspath(path)
        return GzipOvaPackage(path) if is_gzip(path) else OvaPackage(path)
    if kind == "ovf":
        return OvfFilesPackage(path, datastores=datastores, allow_external=allow_external)
    return None


def load_source(
    path: str, *, datastores: Mapping[str, str] | None = None, allow_external: bool = False
) -> SourceVM:
    """Read the VM at ``path`` and every disk it names (blocking)."""
    package = open_package(path, datastores=datastores, allow_external=allow_external)
    if package is None:
        return load_source_vm(path, datastores=datastores, allow_external=allow_external)
    return load_vm(package)


def extracted_at_migration(path: str, vm: SourceVM) -> bool:
    """Whether the job must extract the package first (blocking): a compressed ``.ova``."""
    if source_kind(path) != "ova":
        return False
    return is_gzip(os.path.abspath(path)) or any(d.extracted_at_migration for d in vm.disks)


async def verify_source(
    path: str,
    log: Callable[[str], None],
    *,
    datastores: Mapping[str, str] | None = None,
    allow_external: bool = False,
) -> None:
    """Check an OVF package's manifest in a worker thread; nothing to do for a VMX.

    Raises MANIFEST_MISMATCH (a digest differs, a listed file is missing) and
    what reading the package raises.  ``log`` is called in the event loop.
    Cancelling stops the hashing at its next 1 MiB chunk, waits for the
    thread, and re-raises ``CancelledError``.
    """
    if source_kind(path) == "vmx":
        return
    loop = asyncio.get_running_loop()
    stop = threading.Event()

    def work() -> None:
        package = open_package(path, datastores=datastores, allow_external=allow_external)
        assert package is not None

        def log_in_loop(line: str) -> None:
            loop.call_soon_threadsafe(log, line)

        verify(package, stop, log_in_loop)

    task = asyncio.ensure_future(asyncio.to_thread(work))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        stop.set()
        # The thread ends with CANCELLED (or whatever it found first); the job was cancelled.
        with contextlib.suppress(Vm2kvmError):
            await settle(task)
        raise
