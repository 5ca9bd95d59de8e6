"""caps_for_linux / without_virtio_disk: which devices a guest's booting kernel can drive."""

from __future__ import annotations

from collections.abc import Set
from dataclasses import replace

from vm2kvmd.core.guest.info import GuestInfo, Kernel
from vm2kvmd.core.guest.linux.caps import caps_for_linux, without_virtio_disk
from vm2kvmd.core.hardware.model import Note
from vm2kvmd.core.planning.guestcaps import GuestCaps

VIRTIO = frozenset({"virtio", "virtio_ring", "virtio_pci", "virtio_blk", "virtio_net", "virtio_scsi"})


def guest(*kernels: Kernel, default: str | None = None) -> GuestInfo:
    return GuestInfo(
        root="/dev/sda1",
        os_type="linux",
        distro="debian",
        product_name="Debian GNU/Linux 11 (bullseye)",
        major=11,
        minor=9,
        arch="x86_64",
        kernels=kernels,
        default_kernel=default,
    )


def kernel(version: str, modules: Set[str] = frozenset(), builtins: Set[str] = frozenset()) -> Kernel:
    return Kernel(version, f"/boot/vmlinuz-{version}", None, frozenset(modules), frozenset(builtins))


def texts(notes: list[Note]) -> list[str]:
    return [n.message for n in notes]


def test_all_virtio_modules() -> None:
    k = kernel("5.10.0-28-amd64", VIRTIO | {"virtio_rng", "virtio_balloon", "virtio_gpu", "ahci"})
    caps, notes = caps_for_linux(guest(k))
    assert (caps.machine, caps.disk_bus, caps.cdrom_bus, caps.nic_model, caps.video) == (
        "q35",
        "virtio",
        "sata",
        "virtio",
        "virtio",
    )
    assert caps.virtio_rng and caps.balloon and caps.guest_agent
    assert caps.reason == "converted: drivers of kernel 5.10.0-28-amd64"
    assert notes == []


def test_builtins_count_like_modules() -> None:
    # Ubuntu's generic kernels build virtio_blk/net/pci in: there is no .ko to find.
    k = kernel("5.4.0-150-generic", {"virtio_balloon", "virtio_rng", "ahci"}, VIRTIO)
    caps, notes = caps_for_linux(guest(k))
    assert (caps.disk_bus, caps.nic_model) == ("virtio", "virtio")
    assert caps.balloon and caps.virtio_rng
    assert caps.video == "vga"  # no virtio_gpu
    assert notes == []


def test_only_virtio_scsi() -> None:
    k = kernel("3.10.0-1160.el7.x86_64", {"virtio", "virtio_ring", "virtio_pci", "virtio_scsi", "ahci"})
    caps, notes = caps_for_linux(guest(k))
    assert caps.disk_bus == "scsi" and caps.machine == "q35"
    assert caps.nic_model == "e1000"
    assert texts(notes) == [
        "kernel 3.10.0-1160.el7.x86_64 has virtio_scsi but no virtio_blk; disks on virtio-scsi",
        "kernel 3.10.0-1160.el7.x86_64 has no virtio_net driver; the NICs stay e1000",
    ]


def test_no_virtio_but_ahci() -> None:
    caps, notes = caps_for_linux(guest(kernel("2.6.18-8.el5", {"ahci", "e1000"})))
    assert (caps.machine, caps.disk_bus, caps.cdrom_bus, caps.nic_model) == ("q35", "sata", "sata", "e1000")
    assert not caps.balloon and not caps.virtio_rng
    assert "has no virtio disk driver; disks stay on SATA (AHCI)" in texts(notes)[0]


def test_neither_virtio_nor_ahci_uses_ide_on_pc() -> None:
    caps, notes = caps_for_linux(guest(kernel("2.4.21-4.EL", {"ata_piix"})))
    assert (caps.machine, caps.disk_bus, caps.cdrom_bus) == ("pc", "ide", "ide")
    assert "neither virtio nor AHCI" in texts(notes)[0]


def test_virtio_without_virtio_pci_is_no_virtio() -> None:
    k = kernel("4.4.0-phony", {"virtio", "virtio_ring", "virtio_blk", "virtio_net", "ahci"})
    caps, notes = caps_for_linux(guest(k))
    assert (caps.disk_bus, caps.nic_model) == ("sata", "e1000")
    assert texts(notes)[0] == "kernel 4.4.0-phony has virtio drivers but no virtio_pci; no virtio devices"
    assert not any("no virtio_net driver" in t for t in texts(notes))


def test_no_kernel() -> None:
    caps, notes = caps_for_linux(guest())
    assert caps == replace(GuestCaps.unconverted(), os_id="http://debian.org/debian/11")
    assert texts(notes) == ["no kernel found in the guest; keeping devices every OS drives (SATA, e1000)"]


def test_the_default_kernel_decides_not_the_newest() -> None:
    new = kernel("5.10.0-28-amd64", VIRTIO | {"ahci"})
    old = kernel("4.9.0-3-amd64", {"ahci"})
    caps, _ = caps_for_linux(guest(new, old, default="4.9.0-3-amd64"))
    assert caps.disk_bus == "sata"
    caps, _ = caps_for_linux(guest(new, old, default=None))  # no default known: the first (newest)
    assert caps.disk_bus == "virtio"


def test_module_names_with_dashes() -> None:
    k = kernel("5.10.0-28-amd64", VIRTIO | {"virtio_rng", "ahci"})
    assert k.has("virtio-rng") and k.has("virtio_rng")


def test_without_virtio_disk() -> None:
    k = kernel("5.10.0-28-amd64", VIRTIO | {"ahci"})
    caps, _ = caps_for_linux(guest(k))
    new, note = without_virtio_disk(caps, k, "update-initramfs failed")
    assert (new.disk_bus, new.machine, new.cdrom_bus, new.nic_model) == ("sata", "q35", "sata", "virtio")
    assert note.message == "disks stay on SATA: update-initramfs failed"
    no_ahci = kernel("2.6.9", VIRTIO)
    new, note = without_virtio_disk(caps, no_ahci, "no initramfs tool")
    assert (new.disk_bus, new.machine, new.cdrom_bus) == ("ide", "pc", "ide")


def test_the_inspected_os_becomes_the_libosinfo_id_with_or_without_a_kernel() -> None:
    k = kernel("5.10.0-28-amd64", VIRTIO)
    assert caps_for_linux(guest(k))[0].os_id == "http://debian.org/debian/11"
    assert caps_for_linux(guest())[0].os_id == "http://debian.org/debian/11"
