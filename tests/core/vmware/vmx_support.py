"""Helpers shared by the tests of the VMX reader and the SourceVM builder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vm2kvmd.core.hardware.model import DiskChain, DiskLayer, Extent, Note, SourceVM
from vm2kvmd.core.vmware.vmx import parse_vmx
from vm2kvmd.core.vmware.vmx_hardware import build_source_vm
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.sources.vmware.paths import local_resolver

DATA = Path(__file__).resolve().parents[2] / "data" / "vmx"
BASE = 'displayName = "t"\nguestOS = "other"\nmemsize = "256"\nnumvcpus = "1"\n'
Loader = Callable[[str, str], DiskChain]


def missing_disk(path: str, key: str) -> DiskChain:
    raise Vm2kvmError(ErrorCode.DISK_MISSING, f"disk {path} does not exist", file=path, key=key)


def good_disk(adapter: str | None = "lsilogic", notes: tuple[Note, ...] = ()) -> Loader:
    def load(path: str, key: str) -> DiskChain:
        extent = Extent("RW", 2048, "SPARSE", Path(path).name, path)
        layer = DiskLayer(
            path, "monolithicSparse", 1, 0xFFFFFFFF, None, (extent,), True, adapter, 1 << 20, notes
        )
        return DiskChain((layer,))

    return load


def build(tmp_path: Path, text: str, load_disk: Loader = missing_disk) -> SourceVM:
    vmx = parse_vmx(text.encode(), str(tmp_path / "vm.vmx"))
    return build_source_vm(vmx, local_resolver(str(tmp_path)), load_disk)


def note_text(vm: SourceVM) -> str:
    return "\n".join(str(n) for n in vm.notes)


def from_data(name: str) -> SourceVM:
    vmx = parse_vmx((DATA / name).read_bytes(), str(DATA / name))
    return build_source_vm(vmx, local_resolver(str(DATA)), missing_disk)
