"""An OVF package: a descriptor, the files it references, maybe a manifest and a certificate.

Two kinds share everything but where the files are: an ``.ova`` (members of
one uncompressed tar, ``sources.ovf.ova``) and an ``.ovf`` next to its files
(``sources.ovf.ovf_files``).  ``load_vm`` reads the descriptor and every disk
into a ``SourceVM``; ``verify`` checks the manifest.  Both block.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable

from vm2kvmd.core.hardware.model import DiskChain, Note, SourceVM
from vm2kvmd.core.ovf.envelope import MAX_OVF_BYTES, OvfEnvelope, OvfFile, parse_ovf
from vm2kvmd.core.ovf.hardware import build_source_vm
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.sources.ovf.files import Located, read_range
from vm2kvmd.sources.ovf.manifest import MAX_MANIFEST_BYTES, parse_manifest, verify_manifest


class Package(ABC):
    """Where the files of one OVF package are."""

    def __init__(self, path: str, descriptor: Located, descriptor_name: str) -> None:
        self.path = path  # the .ova or .ovf the caller named
        self.descriptor = descriptor
        # The descriptor's name without ``.ovf``: the manifest is ``<stem>.mf``.
        self.stem = os.path.splitext(os.path.basename(descriptor_name))[0]
        self.notes: list[Note] = []  # about the package itself (member order...)

    @abstractmethod
    def locate(self, name: str) -> Located | None:
        """The bytes of the package's file ``name`` (an ``ovf:href``); None when it has none."""

    @abstractmethod
    def load_disk(self, file: OvfFile, key: str) -> DiskChain:
        """The disk stored in ``file``; ``key`` is the Item naming it.  Raises ``Vm2kvmError``."""

    @property
    def source_path(self) -> str:
        """The package the user named (an extracted package says where it came from)."""
        return self.path

    def descriptor_bytes(self) -> bytes:
        """The descriptor (blocking)."""
        return read_range(self.descriptor, MAX_OVF_BYTES, "OVF descriptor")

    def manifest_notes(self, env: OvfEnvelope) -> list[Note]:
        """What ``inspect`` says about the manifest and certificate."""
        return _manifest_notes(self, env)

    @property
    def manifest(self) -> Located | None:
        return self.locate(f"{self.stem}.mf")

    @property
    def certificate(self) -> Located | None:
        return self.locate(f"{self.stem}.cert")

    def check_size(self, file: OvfFile, loc: Located, key: str) -> None:
        """A file shorter or longer than ``ovf:size`` says is damaged: refuse it before qemu reads it."""
        if file.size is not None and file.size != loc.size:
            raise Vm2kvmError(
                ErrorCode.INVALID_DISK,
                f"{file.href} has {loc.size} bytes, but {file.locator} says {file.size}",
                file=loc.label,
                key=key,
                hint="the file is truncated or was replaced after export; copy the package again",
            )


def _manifest_notes(pkg: Package, env: OvfEnvelope) -> list[Note]:
    notes: list[Note] = []
    manifest = pkg.manifest
    if manifest is None:
        notes.append(Note(f"no manifest ({pkg.stem}.mf): the package's files cannot be checked"))
    else:
        try:
            entries = parse_manifest(read_range(manifest, MAX_MANIFEST_BYTES, "manifest"), manifest.label)
        except Vm2kvmError as err:
            notes.append(Note(f"the manifest cannot be used, so migrating will fail: {err}"))
        else:
            listed = {entry.name for entry in entries}
            unlisted = sorted(f.href for f in env.files.values() if f.href not in listed)
            if unlisted:
                notes.append(Note("not listed in the manifest, so not checked: " + ", ".join(unlisted)))
    if pkg.certificate is not None:
        notes.append(
            Note(f"the package is signed ({pkg.stem}.cert); vm2kvm checks its manifest, not the signature")
        )
    return notes


def load_vm(pkg: Package) -> SourceVM:
    """The VM the package describes, with every disk loaded (or its problem recorded)."""
    env = parse_ovf(pkg.descriptor_bytes(), pkg.descriptor.label)
    vm = build_source_vm(env, pkg.load_disk, source_path=pkg.source_path)
    return dataclasses.replace(vm, notes=(*pkg.notes, *pkg.manifest_notes(env), *vm.notes))


def verify(pkg: Package, stop: threading.Event, log: Callable[[str], None]) -> None:
    """Check every file the manifest lists (MANIFEST_MISMATCH); without a manifest only say so."""
    manifest = pkg.manifest
    if manifest is None:
        log(f"no manifest ({pkg.stem}.mf) in {pkg.path}; files not checked")
        return
    entries = parse_manifest(read_range(manifest, MAX_MANIFEST_BYTES, "manifest"), manifest.label)
    total = sum(loc.size for loc in (pkg.locate(e.name) for e in entries) if loc is not None)
    log(f"checking {len(entries)} files ({total} bytes) against {manifest.label}")
    verify_manifest(entries, pkg.locate, manifest.label, stop, log)
