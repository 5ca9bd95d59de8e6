"""The disk-bus option: parsed and checked once (D-Bus a{sv} and CLI), then held against the guest.

The Windows side (vioscsi/viostor from virtio-win) is in tests/core/guest/windows/test_caps.py and
the converted registry in tests/convert/windows/test_convert.py; here the option itself and the
Linux side, whose drivers come from the booting kernel.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.core.guest.linux.test_caps import VIRTIO, guest, kernel
from vm2kvmd.core.guest.linux.caps import caps_for_linux
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.errors import ErrorCode, Vm2kvmError


def test_option_values_and_round_trip() -> None:
    for value in ("virtio", "virtio-scsi", "sata"):
        opts = MigrateOptions.from_mapping({"disk-bus": value})
        assert opts.disk_bus == value and opts.to_mapping() == {"disk-bus": value}
    assert MigrateOptions.from_mapping({}).disk_bus is None  # the default: the best the guest drives


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ({"disk-bus": "scsi"}, "must be one of virtio, virtio-scsi, sata"),
        ({"disk-bus": "ide"}, "must be one of virtio, virtio-scsi, sata"),
        ({"disk-bus": 1}, "must be a string"),
        ({"disk-bus": "virtio", "guest-conversion": False}, "disk-bus needs the guest conversion"),
    ],
)
def test_bad_values_are_named(raw: dict[str, object], why: str) -> None:
    with pytest.raises(Vm2kvmError) as caught:
        MigrateOptions.from_mapping(raw)
    assert (caught.value.code, caught.value.key) == (ErrorCode.INVALID_OPTION, "disk-bus")
    assert why in str(caught.value)


def test_cli_flag(tmp_path: Path) -> None:
    from vm2kvmctl.main import build_parser, mapping_options

    args = build_parser().parse_args(["migrate", "/vm/w.vmx", "--disk-bus", "virtio-scsi"])
    assert mapping_options(args)["disk-bus"].value == "virtio-scsi"
    assert "disk-bus" not in mapping_options(build_parser().parse_args(["migrate", "/vm/w.vmx"]))
    with pytest.raises(SystemExit):
        build_parser().parse_args(["migrate", "/vm/w.vmx", "--disk-bus", "nvme"])


def test_linux_guest_gets_the_bus_asked_for() -> None:
    k = kernel("6.1.0-18-amd64", VIRTIO | {"ahci"})
    assert caps_for_linux(guest(k))[0].disk_bus == "virtio"
    caps, notes = caps_for_linux(guest(k), "virtio-scsi")
    assert (caps.disk_bus, caps.machine, caps.nic_model, notes) == ("scsi", "q35", "virtio", [])
    assert caps_for_linux(guest(k), "sata")[0].disk_bus == "sata"


@pytest.mark.parametrize(
    ("modules", "bus", "why"),
    [
        (VIRTIO - {"virtio_scsi"}, "virtio-scsi", "kernel 4.19.0 has no virtio_scsi driver"),
        (VIRTIO - {"virtio_pci"}, "virtio", "kernel 4.19.0 has no virtio_pci driver"),
        (VIRTIO, "sata", "kernel 4.19.0 has no ahci driver"),
    ],
)
def test_linux_bus_without_its_driver_is_refused(modules: frozenset[str], bus: str, why: str) -> None:
    with pytest.raises(Vm2kvmError) as caught:
        caps_for_linux(guest(kernel("4.19.0", modules)), bus)
    err = caught.value
    assert (err.code, err.key, err.value) == (ErrorCode.DISK_BUS_UNSUPPORTED, "disk-bus", bus)
    assert err.message == f"the disks cannot go on {bus}: {why}"
    with pytest.raises(Vm2kvmError) as caught:
        caps_for_linux(guest(), bus)
    assert caught.value.message == f"the disks cannot go on {bus}: no kernel was found in the guest"


def test_initramfs_that_cannot_get_the_driver_refuses_an_asked_bus(tmp_path: Path) -> None:
    """Without the option the disks fall back to SATA with a note; with it the job stops.

    The refusal comes before the step touches the guest (the driver is missing from the kernel),
    so no appliance is needed: ``g`` is never called.
    """
    from tests.convert.steps_support import context
    from tests.convert.steps_support import guest as linux_guest
    from tests.convert.steps_support import kernel as with_modules
    from vm2kvmd.convert.context import ConversionOptions
    from vm2kvmd.convert.linux.initramfs import ensure_virtio_initramfs
    from vm2kvmd.core.planning.guestcaps import GuestCaps

    k = with_modules("4.19.0", "/boot/vmlinuz-4.19.0", "/boot/initrd.img-4.19.0", frozenset({"ahci"}))
    g = _NoCalls()
    info = linux_guest("/dev/sda1", "debian", kernels=(k,))
    scsi = GuestCaps(disk_bus="scsi", nic_model="e1000")
    ctx = context(g, tmp_path, info, [], scsi, ConversionOptions(disk_bus="virtio-scsi"))
    with pytest.raises(Vm2kvmError) as caught:
        ensure_virtio_initramfs(ctx)
    assert (caught.value.code, caught.value.value) == (ErrorCode.DISK_BUS_UNSUPPORTED, "virtio-scsi")
    assert "kernel 4.19.0 has no" in caught.value.message
    ctx = context(g, tmp_path, info, [], scsi, ConversionOptions())
    ensure_virtio_initramfs(ctx)
    assert ctx.caps.disk_bus == "sata" and ctx.notes


class _NoCalls:
    def umount_all(self) -> None:  # context() unmounts first
        pass

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the appliance was used: {name}")
