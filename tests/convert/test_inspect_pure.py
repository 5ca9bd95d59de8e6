"""The parts of guest inspection that need no appliance: root choice, mounting rules, config parsing."""

from __future__ import annotations

import pytest

from vm2kvmd.convert.inspect import (
    _grub2_entries,
    _grub_legacy_default,
    choose_root,
    mount_guest,
    version_key,
)
from vm2kvmd.errors import ErrorCode, Vm2kvmError


def test_no_root_is_no_guest_os() -> None:
    with pytest.raises(Vm2kvmError) as err:
        choose_root([], None)
    assert err.value.code == ErrorCode.NO_GUEST_OS
    assert "--no-guest-conversion" in str(err.value)


def test_one_root() -> None:
    assert choose_root(["/dev/sda1"], None) == ("/dev/sda1", [])


def test_several_roots_take_the_first_with_a_note() -> None:
    root, notes = choose_root(["/dev/sda1", "/dev/sda2"], None)
    assert root == "/dev/sda1"
    assert [str(n) for n in notes] == [
        "root: several operating systems found; converting /dev/sda1, not /dev/sda2 (choose with --root)"
    ]


@pytest.mark.parametrize("wanted", ["/dev/sda2", "sda2"])
def test_root_option(wanted: str) -> None:
    assert choose_root(["/dev/sda1", "/dev/sda2"], wanted) == ("/dev/sda2", [])


def test_unknown_root_option_lists_the_roots() -> None:
    with pytest.raises(Vm2kvmError) as err:
        choose_root(["/dev/sda1", "/dev/rhel/root"], "/dev/sdb1")
    assert err.value.code == ErrorCode.INVALID_OPTION
    assert (err.value.key, err.value.value) == ("root", "/dev/sdb1")
    assert "/dev/sda1, /dev/rhel/root" in err.value.message


class FakeMounts:
    def __init__(self, mountpoints: dict[str, str], broken: set[str]) -> None:
        self.mountpoints, self.broken = mountpoints, broken
        self.mounted: list[str] = []

    def inspect_get_mountpoints(self, root: str) -> dict[str, str]:
        return self.mountpoints

    def mount(self, device: str, mountpoint: str) -> None:
        if device in self.broken:
            raise RuntimeError(f"mount: {device}: No such device")
        self.mounted.append(mountpoint)


def test_mount_shortest_first_and_skip_a_broken_data_fs() -> None:
    g = FakeMounts(
        {"/data": "/dev/sdb1", "/boot/efi": "/dev/sda1", "/": "/dev/sda2", "/boot": "/dev/sda3"},
        {"/dev/sdb1"},
    )
    notes = mount_guest(g, "/dev/sda2")  # type: ignore[arg-type]
    assert g.mounted == ["/", "/boot", "/boot/efi"]
    assert len(notes) == 1 and notes[0].message.startswith("/data (/dev/sdb1) could not be mounted")


def test_a_broken_boot_fs_is_fatal() -> None:
    g = FakeMounts({"/": "/dev/sda2", "/boot": "/dev/sda1"}, {"/dev/sda1"})
    with pytest.raises(Vm2kvmError) as err:
        mount_guest(g, "/dev/sda2")  # type: ignore[arg-type]
    assert err.value.code == ErrorCode.CONVERSION_FAILED and "/boot (/dev/sda1)" in err.value.message


GRUB_CFG = (
    "menuentry 'Debian GNU/Linux' --class debian $menuentry_id_option 'gnulinux-simple-abc' {\n"
    "\tif [ x$feature_all_video_module = xy ]; then\n"
    "\t  insmod all_video\n"
    "\tfi\n"
    "\tlinux\t/boot/vmlinuz-6.1.0-26-amd64 root=/dev/sda1 ro quiet\n"
    "\tinitrd\t/boot/initrd.img-6.1.0-26-amd64\n"
    "}\n"
    "submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option 'gnulinux-advanced-abc' {\n"
    "\tmenuentry 'Debian GNU/Linux, with Linux 6.1.0-25-amd64' "
    "$menuentry_id_option 'gnulinux-6.1.0-25-amd64-advanced-abc' {\n"
    "\t\tlinux\t/boot/vmlinuz-6.1.0-25-amd64 root=/dev/sda1 ro quiet\n"
    "\t}\n"
    "}\n"
)


def test_grub2_entries() -> None:
    assert _grub2_entries(GRUB_CFG) == [
        (0, "Debian GNU/Linux", "/boot/vmlinuz-6.1.0-26-amd64", "gnulinux-simple-abc"),
        (0, "Advanced options for Debian GNU/Linux", "/boot/vmlinuz-6.1.0-25-amd64", "gnulinux-advanced-abc"),
        (1, "Debian GNU/Linux, with Linux 6.1.0-25-amd64", "/boot/vmlinuz-6.1.0-25-amd64",
         "gnulinux-6.1.0-25-amd64-advanced-abc"),
    ]  # fmt: skip


def test_grub_legacy_default() -> None:
    menu = "default=1\ntimeout=5\ntitle new\n\tkernel /vmlinuz-2.6.32-754 ro\n"
    menu += "title old\n\tkernel /vmlinuz-2.6.32-696 ro\n"
    assert _grub_legacy_default(menu, {"2.6.32-754", "2.6.32-696"}) == "2.6.32-696"
    assert _grub_legacy_default(menu.replace("default=1", "default 0"), {"2.6.32-754"}) == "2.6.32-754"


def test_version_order() -> None:
    versions = ["5.10.0-9-amd64", "5.10.0-28-amd64", "4.19.0-26-amd64"]
    assert sorted(versions, key=version_key, reverse=True) == [
        "5.10.0-28-amd64",
        "5.10.0-9-amd64",
        "4.19.0-26-amd64",
    ]
